import AgentTesting
import Identity
import NIOCore
import Testing

import Resolution

/// A target and 100 peers sorted by distance to it: `peers[0]` is the closest. Scripted tests refer
/// to peers by rank, which makes every expectation readable without computing hashes.
struct LookupScenario {
    let local: KademliaPeer
    let target: KademliaKey
    let peers: [KademliaPeer]

    init(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        local = KadFixtures.peer(using: &generator)
        let target = KademliaKey.random(using: &generator)
        self.target = target
        peers = (0..<100).map { _ in KadFixtures.peer(using: &generator) }.sorted {
            target.isCloser($0.key, than: $1.key)
        }
    }

    func lookup(
        seeds: [Int], k: Int = 3, alpha: Int = 3, configure: (inout LookupConfiguration) -> Void = { _ in }
    )
        -> ClosestPeersLookup<KademliaPeer>
    {
        var configuration = LookupConfiguration()
        configuration.resultCount = k
        configuration.parallelism = alpha
        configure(&configuration)
        return ClosestPeersLookup(
            target: target, seeds: seeds.map { peers[$0] }, localKey: local.key, configuration: configuration)
    }

    /// The ranks of the peers `next` asks for until it stops asking, and the action it stopped with.
    func drain(_ lookup: inout ClosestPeersLookup<KademliaPeer>, now: NIODeadline) -> (queried: [Int], then: LookupAction<KademliaPeer>) {
        var queried: [Int] = []
        while true {
            let action = lookup.next(now: now)
            guard case .query(let peer) = action else { return (queried, action) }
            queried.append(rank(of: peer))
        }
    }

    func rank(of peer: KademliaPeer) -> Int {
        peers.firstIndex { $0.id == peer.id } ?? -1
    }

    func ranks(_ result: LookupResult<KademliaPeer>) -> [Int] {
        result.closest.map(rank)
    }

    func answer(_ lookup: inout ClosestPeersLookup<KademliaPeer>, from rank: Int, naming: [Int] = [], at now: NIODeadline) -> Bool {
        lookup.received(from: peers[rank].id, closerPeers: naming.map { peers[$0] }, now: now)
    }
}

extension LookupAction where Peer == KademliaPeer {
    var result: LookupResult<KademliaPeer>? {
        if case .finished(let result) = self { return result }
        return nil
    }
}

@Suite("iterative lookup: the state machine step by step")
struct LookupTests {
    let scenario = LookupScenario(seed: 0x6c6f_6f6b)
    let t0 = KadFixtures.start

    @Test("asks the closest seeds first, at most α at a time")
    func closestFirstAlphaAtATime() {
        var lookup = scenario.lookup(seeds: [14, 10, 12, 11, 13], k: 5, alpha: 3)
        let (queried, then) = scenario.drain(&lookup, now: t0)
        #expect(queried == [10, 11, 12])
        #expect(then == .waiting)
        #expect(lookup.inFlight == 3)
        #expect(lookup.nextTimeout == t0 + .seconds(10))
        #expect(scenario.answer(&lookup, from: 11, at: t0 + .milliseconds(5)))
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(5)).queried == [13])
    }

    @Test("ends once the k closest peers seen have answered; farther seeds are never asked")
    func terminatesWhenKClosestAnswered() {
        var lookup = scenario.lookup(seeds: [5, 6, 7, 8, 9], k: 3)
        #expect(scenario.drain(&lookup, now: t0).queried == [5, 6, 7])
        for rank in [7, 5] { #expect(scenario.answer(&lookup, from: rank, at: t0 + .milliseconds(10))) }
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(10)).then == .waiting)
        #expect(scenario.answer(&lookup, from: 6, at: t0 + .milliseconds(20)))
        let result = lookup.next(now: t0 + .milliseconds(20)).result
        #expect(result.map(scenario.ranks) == [5, 6, 7])
        #expect(result?.termination == .converged)
        #expect(result?.statistics.requests == 3)
        #expect(result?.statistics.responses == 3)
        #expect(result?.statistics.hops == 1)
        #expect(result?.statistics.duration == .milliseconds(20))
        #expect(lookup.isFinished)
        // Finished is final.
        #expect(lookup.next(now: t0 + .seconds(1)).result == result)
    }

    @Test("closer peers named in an answer are asked next, and the result follows them")
    func closerPeersAreFollowed() {
        var lookup = scenario.lookup(seeds: [50, 51, 52], k: 3)
        #expect(scenario.drain(&lookup, now: t0).queried == [50, 51, 52])
        #expect(scenario.answer(&lookup, from: 50, naming: [20, 2, 30], at: t0 + .milliseconds(1)))
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(1)).queried == [2])
        #expect(scenario.answer(&lookup, from: 2, naming: [0, 1], at: t0 + .milliseconds(2)))
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(2)).queried == [0])
        #expect(scenario.answer(&lookup, from: 51, at: t0 + .milliseconds(3)))
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(3)).queried == [1])
        #expect(scenario.answer(&lookup, from: 0, at: t0 + .milliseconds(4)))
        #expect(scenario.answer(&lookup, from: 1, at: t0 + .milliseconds(5)))
        // 0, 1, 2 answered: done, although 52 never did and 20 and 30 were never asked.
        let result = lookup.next(now: t0 + .milliseconds(5)).result
        #expect(result.map(scenario.ranks) == [0, 1, 2])
        // 2 was named by a seed (hop 2), 0 and 1 by 2 (hop 3).
        #expect(result?.statistics.hops == 3)
        #expect(result?.statistics.discoveredPeers == 5)
    }

    @Test("never asks a peer twice, never asks itself, ignores duplicates")
    func noRepeatsNoSelf() {
        var lookup = scenario.lookup(seeds: [40, 41, 42], k: 5)
        var asked = scenario.drain(&lookup, now: t0).queried
        // 40 names itself, the seeds, us, and 3 twice.
        let junk = [
            scenario.peers[40], scenario.peers[41], scenario.local, scenario.peers[3], scenario.peers[3],
            scenario.local,
        ]
        let junkAnswerTaken = lookup.received(from: scenario.peers[40].id, closerPeers: junk, now: t0)
        #expect(junkAnswerTaken)
        asked += scenario.drain(&lookup, now: t0).queried
        #expect(asked == [40, 41, 42, 3])
        #expect(lookup.statistics.discardedPeers == 2)
        #expect(lookup.statistics.discoveredPeers == 1)
        // A second answer from 40 is not accepted.
        let secondAnswerTaken = lookup.received(from: scenario.peers[40].id, closerPeers: [scenario.peers[0]], now: t0)
        #expect(!secondAnswerTaken)
        #expect(lookup.trackedPeerCount == 4)
    }

    @Test("answers and failures from peers never asked are refused")
    func unsolicited() {
        var lookup = scenario.lookup(seeds: [40, 41], k: 5)
        _ = scenario.drain(&lookup, now: t0)
        #expect(!scenario.answer(&lookup, from: 7, naming: [0], at: t0))
        let unaskedFailureTaken = lookup.failed(scenario.peers[7].id, now: t0)
        #expect(!unaskedFailureTaken)
        let answerFromUsTaken = lookup.received(from: scenario.local.id, closerPeers: [scenario.peers[0]], now: t0)
        #expect(!answerFromUsTaken)
        #expect(lookup.trackedPeerCount == 2)
    }

    @Test("a timed-out request frees its slot; its late answer is still used")
    func timeoutFreesSlotAndLateAnswerCounts() {
        var lookup = scenario.lookup(seeds: [10, 11, 12], k: 3, alpha: 1)
        #expect(scenario.drain(&lookup, now: t0).queried == [10])
        #expect(lookup.nextTimeout == t0 + .seconds(10))
        #expect(scenario.drain(&lookup, now: t0 + .seconds(9)).then == .waiting)
        // The timeout: 10 is unresponsive, 11 takes the slot.
        #expect(scenario.drain(&lookup, now: t0 + .seconds(10)).queried == [11])
        #expect(lookup.statistics.timeouts == 1)
        #expect(lookup.inFlight == 1)
        // 10 answers late, naming 0: it is used, and 0 waits for the slot 11 holds (α = 1).
        #expect(scenario.answer(&lookup, from: 10, naming: [0], at: t0 + .seconds(12)))
        #expect(lookup.statistics.lateResponses == 1)
        #expect(scenario.drain(&lookup, now: t0 + .seconds(12)).then == .waiting)
        #expect(scenario.answer(&lookup, from: 11, at: t0 + .seconds(13)))
        #expect(scenario.drain(&lookup, now: t0 + .seconds(13)).queried == [0])
        #expect(scenario.answer(&lookup, from: 0, at: t0 + .seconds(14)))
        let result = lookup.next(now: t0 + .seconds(14)).result
        #expect(result.map(scenario.ranks) == [0, 10, 11])
        #expect(result?.statistics.lateResponses == 1)
        #expect(result?.statistics.timeouts == 1)
    }

    @Test("failed and silent peers leave the result; the next closest take their place")
    func failuresAreSkipped() {
        var lookup = scenario.lookup(seeds: Array(10..<16), k: 3)
        #expect(scenario.drain(&lookup, now: t0).queried == [10, 11, 12])
        let failureTaken = lookup.failed(scenario.peers[10].id, now: t0 + .milliseconds(1))
        #expect(failureTaken)
        let repeatedFailureTaken = lookup.failed(scenario.peers[10].id, now: t0 + .milliseconds(1))
        #expect(!repeatedFailureTaken)
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(1)).queried == [13])
        for rank in [11, 13] { #expect(scenario.answer(&lookup, from: rank, at: t0 + .milliseconds(2))) }
        // 12 never answers: after the timeout 14 is asked in its place.
        #expect(scenario.drain(&lookup, now: t0 + .milliseconds(2)).then == .waiting)
        #expect(scenario.drain(&lookup, now: t0 + .seconds(10)).queried == [14])
        // A late failure report for the silent peer is still taken.
        let lateFailureTaken = lookup.failed(scenario.peers[12].id, now: t0 + .seconds(11))
        #expect(lateFailureTaken)
        #expect(scenario.answer(&lookup, from: 14, at: t0 + .seconds(11)))
        let result = lookup.next(now: t0 + .seconds(11)).result
        #expect(result.map(scenario.ranks) == [11, 13, 14])
        #expect(result?.statistics.failures == 2)
        #expect(result?.statistics.timeouts == 1)
    }

    @Test("once k peers answered, farther peers are ignored but closer ones are still asked")
    func boundByKthAnswer() {
        var lookup = scenario.lookup(seeds: [10, 11, 12, 13], k: 3)
        _ = scenario.drain(&lookup, now: t0)
        #expect(scenario.answer(&lookup, from: 10, at: t0))
        #expect(scenario.answer(&lookup, from: 11, at: t0))
        // 12 completes k = 3 answers; of the peers it names, 60 is farther than 12 and is ignored,
        // 4 is closer and is asked.
        #expect(scenario.answer(&lookup, from: 12, naming: [60, 4], at: t0))
        #expect(lookup.statistics.discardedPeers == 1)
        // The unasked seed 13 lay beyond the third answer and was dropped.
        #expect(lookup.trackedPeerCount == 4)
        #expect(scenario.drain(&lookup, now: t0).queried == [4])
        #expect(scenario.answer(&lookup, from: 4, naming: [13, 50], at: t0))
        #expect(lookup.statistics.discardedPeers == 3)
        #expect(lookup.next(now: t0).result.map(scenario.ranks) == [4, 10, 11])
    }

    @Test("answers after the end are refused")
    func lateAfterFinish() {
        var lookup = scenario.lookup(seeds: [1, 2, 3, 4], k: 2, alpha: 3)
        _ = scenario.drain(&lookup, now: t0)
        #expect(scenario.answer(&lookup, from: 1, at: t0))
        #expect(scenario.answer(&lookup, from: 2, at: t0))
        #expect(lookup.next(now: t0).result != nil)
        #expect(!scenario.answer(&lookup, from: 3, naming: [0], at: t0))
        let failureAfterEndTaken = lookup.failed(scenario.peers[3].id, now: t0)
        #expect(!failureAfterEndTaken)
        #expect(lookup.nextTimeout == nil)
    }

    @Test("without seeds a lookup ends at once, exhausted")
    func noSeeds() {
        var lookup = ClosestPeersLookup(target: scenario.target, seeds: [], localKey: scenario.local.key)
        let result = lookup.next(now: t0).result
        #expect(result?.closest.isEmpty == true)
        #expect(result?.termination == .exhausted)
        // Only ourselves as a seed is no seed at all.
        var onlySelf = ClosestPeersLookup(
            target: scenario.target, seeds: [scenario.local], localKey: scenario.local.key)
        #expect(onlySelf.next(now: t0).result?.closest.isEmpty == true)
    }

    @Test("when everything fails the lookup ends with what answered")
    func exhausted() {
        var lookup = scenario.lookup(seeds: [1, 2, 3, 4], k: 3)
        _ = scenario.drain(&lookup, now: t0)
        #expect(scenario.answer(&lookup, from: 1, at: t0))
        let failure2Taken = lookup.failed(scenario.peers[2].id, now: t0)
        #expect(failure2Taken)
        #expect(scenario.drain(&lookup, now: t0).queried == [4])
        let failure3Taken = lookup.failed(scenario.peers[3].id, now: t0)
        #expect(failure3Taken)
        let failure4Taken = lookup.failed(scenario.peers[4].id, now: t0)
        #expect(failure4Taken)
        let result = lookup.next(now: t0).result
        #expect(result.map(scenario.ranks) == [1])
        #expect(result?.termination == .exhausted)
    }

    @Test("a response is read only up to k peers: a flood of 10,000 costs nothing")
    func floodIsTruncated() {
        var generator = SeededGenerator(seed: 0x666c_6f6f)
        let flood = (0..<10_000).map { _ in KadFixtures.peer(using: &generator) }
        var lookup = ClosestPeersLookup(
            target: scenario.target, seeds: scenario.peers[50..<53], localKey: scenario.local.key)
        _ = scenario.drain(&lookup, now: t0)
        let floodTaken = lookup.received(from: scenario.peers[50].id, closerPeers: flood, now: t0)
        #expect(floodTaken)
        #expect(lookup.statistics.truncatedResponses == 1)
        #expect(lookup.statistics.discoveredPeers + lookup.statistics.discardedPeers <= 20)
        #expect(lookup.trackedPeerCount <= 23)
    }

    @Test("tracked peers stay bounded, keeping the closest, when responses may be long")
    func trackingBound() {
        var generator = SeededGenerator(seed: 0x626f_756e)
        let flood = (0..<10_000).map { _ in KadFixtures.peer(using: &generator) }
        var lookup = scenario.lookup(seeds: [50, 51, 52], k: 20) {
            $0.maximumCloserPeersPerResponse = 100_000
            $0.maximumTrackedPeers = 64
        }
        _ = scenario.drain(&lookup, now: t0)
        let floodTaken = lookup.received(from: scenario.peers[50].id, closerPeers: flood, now: t0)
        #expect(floodTaken)
        #expect(lookup.trackedPeerCount == 64)
        // The 61 kept newcomers are the closest 61 of the flood: ask them all (3 in flight).
        let closestOfFlood = flood.sorted { scenario.target.isCloser($0.key, than: $1.key) }.prefix(61)
        var asked: [KademliaPeer] = []
        for step in 0..<70 {
            let now = t0 + .milliseconds(Int64(step))
            while case .query(let peer) = lookup.next(now: now) {
                asked.append(peer)
                lookup.failed(peer.id, now: now)
            }
        }
        #expect(asked.filter { flood.contains($0) } == Array(closestOfFlood))
        // A second flood from 51, repeating the first: the failed peers make room for newcomers
        // but are remembered, so none of them is asked again.
        let second = (0..<1000).map { _ in KadFixtures.peer(using: &generator) }
        let secondFloodTaken = lookup.received(
            from: scenario.peers[51].id, closerPeers: flood + second, now: t0 + .seconds(1))
        #expect(secondFloodTaken)
        #expect(lookup.trackedPeerCount <= 64)
        var askedAgain: [KademliaPeer] = []
        for step in 0..<70 {
            let now = t0 + .seconds(1) + .milliseconds(Int64(step))
            while case .query(let peer) = lookup.next(now: now) {
                askedAgain.append(peer)
                lookup.failed(peer.id, now: now)
            }
            #expect(lookup.trackedPeerCount <= 64)
        }
        #expect(!askedAgain.isEmpty)
        #expect(Set(askedAgain.map(\.id)).isDisjoint(with: asked.map(\.id)))
        #expect(lookup.trackedPeerCount <= 64)
    }

    @Test("disjoint paths: seeds are dealt out, answers feed only the path that asked, no peer is asked twice")
    func disjointPaths() {
        var lookup = scenario.lookup(seeds: [13, 12, 11, 10], k: 2, alpha: 1) { $0.disjointPaths = 2 }
        // Path 0 holds 10 and 12, path 1 holds 11 and 13; they take turns.
        #expect(scenario.drain(&lookup, now: t0) == ([10, 11], .waiting))
        #expect(lookup.inFlight == 2)
        // 10 (path 0) names 5 and 3, 11 (path 1) names 5.
        #expect(scenario.answer(&lookup, from: 10, naming: [5, 3], at: t0))
        #expect(scenario.answer(&lookup, from: 11, naming: [5], at: t0))
        // Path 0 asks 3, path 1 asks 5 and so owns it.
        #expect(scenario.drain(&lookup, now: t0) == ([3, 5], .waiting))
        #expect(scenario.answer(&lookup, from: 3, at: t0))
        #expect(scenario.answer(&lookup, from: 5, at: t0))
        // Path 0 skips 5 (path 1 asked it) and ends with 3 and 10; path 1 ends with 5 and 11; it
        // never heard of 3. The result merges the paths.
        let (asked, then) = scenario.drain(&lookup, now: t0)
        #expect(asked.isEmpty)
        #expect(then.result.map(scenario.ranks) == [3, 5])
        #expect(then.result?.statistics.requests == 4)
    }

    @Test("closestAnswered: the closest live peers once all answered; failed and silent ones left out")
    func closestAnswered() {
        var lookup = scenario.lookup(seeds: Array(10..<16), k: 5)
        #expect(scenario.drain(&lookup, now: t0).queried == [10, 11, 12])
        #expect(lookup.closestAnswered(count: 2) == nil)
        // 12 answers first and names closer peers: nothing is settled until the closest answer.
        #expect(scenario.answer(&lookup, from: 12, naming: [2, 4], at: t0))
        #expect(lookup.closestAnswered(count: 1) == nil)
        #expect(scenario.drain(&lookup, now: t0).queried == [2])
        let failureTaken = lookup.failed(scenario.peers[10].id, now: t0)
        #expect(failureTaken)
        #expect(scenario.drain(&lookup, now: t0).queried == [4])
        #expect(scenario.answer(&lookup, from: 2, at: t0))
        #expect(lookup.closestAnswered(count: 1) == [scenario.peers[2].key])
        // 4 and 11 are still out: the two closest are not settled.
        #expect(lookup.closestAnswered(count: 2) == nil)
        #expect(scenario.answer(&lookup, from: 4, at: t0))
        // 10 failed, so it is no longer among the closest.
        #expect(lookup.closestAnswered(count: 2) == [2, 4].map { scenario.peers[$0].key })
        #expect(lookup.closestAnswered(count: 3) == nil)
        // 11 times out: it leaves the closest, and 12, which answered, takes its place.
        #expect(scenario.drain(&lookup, now: t0 + .seconds(10)).queried == [13, 14])
        #expect(lookup.closestAnswered(count: 3) == [2, 4, 12].map { scenario.peers[$0].key })
        #expect(lookup.closestAnswered(count: 9) == nil)
    }

    @Test("closestAnswered over disjoint paths: a peer counts once, by the path that asked it")
    func closestAnsweredDisjoint() {
        var lookup = scenario.lookup(seeds: [13, 12, 11, 10], k: 2, alpha: 1) { $0.disjointPaths = 2 }
        #expect(scenario.drain(&lookup, now: t0) == ([10, 11], .waiting))
        // Both paths hear of 5; path 0 also of 3.
        #expect(scenario.answer(&lookup, from: 10, naming: [5, 3], at: t0))
        #expect(scenario.answer(&lookup, from: 11, naming: [5], at: t0))
        #expect(lookup.closestAnswered(count: 1) == nil)
        #expect(scenario.drain(&lookup, now: t0) == ([3, 5], .waiting))
        #expect(scenario.answer(&lookup, from: 5, at: t0))
        // 3 (path 0) has not answered; 5 answered on path 1 and is still "not contacted" on path 0.
        #expect(lookup.closestAnswered(count: 1) == nil)
        let failureTaken = lookup.failed(scenario.peers[3].id, now: t0)
        #expect(failureTaken)
        #expect(lookup.closestAnswered(count: 2) == [5, 10].map { scenario.peers[$0].key })
    }

    @Test("addresses are kept, bounded")
    func addresses() {
        var configuration = LookupConfiguration()
        configuration.maximumAddressesPerPeer = 2
        var seed = scenario.peers[9]
        seed.addresses = (0..<50).map(KadFixtures.address)
        var lookup = ClosestPeersLookup(
            target: scenario.target, seeds: [seed], localKey: scenario.local.key, configuration: configuration)
        guard case .query(let peer) = lookup.next(now: t0) else {
            Issue.record("expected a query")
            return
        }
        #expect(peer.addresses == [KadFixtures.address(0), KadFixtures.address(1)])
    }
}
