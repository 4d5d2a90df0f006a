import Identity
import NIOCore
import Testing

@testable import Resolution

/// `ValueLookup`, the value side of `DHT.resolve` and of the simulator's resolve (spec/dht.md §8),
/// without a network.
@Suite("value lookup: what counts, the early stop, the decision")
struct ValueLookupTests {
    static let now = Fixtures.now

    /// Replicas with fixed keys, closest to the record key first.
    static let replicas: [KademliaPeer] = {
        let target = KademliaKey(hashing: Fixtures.name.recordKey)
        let peers = (10..<40).map { seed in
            KademliaPeer(
                id: PeerID(
                    publicKey: try! Ed25519.PrivateKey(seed: [UInt8](repeating: UInt8(seed), count: 32)).publicKey))
        }
        return peers.sorted { target.distance(to: $0.key) < target.distance(to: $1.key) }
    }()

    static func verify(_ record: SignedAgentRecord) throws(ResolutionError) { try record.validate(now: now) }

    static func lookup(quorum: Int = 3, replicationFactor: Int = 5) -> ValueLookup<KademliaPeer> {
        ValueLookup(name: Fixtures.name, quorum: quorum, replicationFactor: replicationFactor)
    }

    @Test("valid records count; another name, an expired or forged record is invalid with its kind")
    func verdicts() {
        var value = Self.lookup()
        let peer = Self.replicas[0]
        #expect(value.receive(Fixtures.record(), from: peer, key: peer.key, verify: Self.verify) == .valid)
        let other = Fixtures.record(name: try! AgentName("bob.agent"))
        #expect(
            value.receive(other, from: Self.replicas[1], key: Self.replicas[1].key, verify: Self.verify)
                == .invalid(.malformed))
        let expired = Fixtures.record(timestamp: Self.now - 7200, ttl: 3600)
        #expect(
            value.receive(expired, from: Self.replicas[2], key: Self.replicas[2].key, verify: Self.verify)
                == .invalid(.expired))
        #expect(value.receiveInvalid(from: Self.replicas[3], .malformed) == .invalid(.malformed))
        #expect(value.validAnswers == 1)
        #expect(value.invalidAnswers.map(\.kind) == [.malformed, .expired, .malformed])
    }

    /// A GET_VALUE lookup of the fixture name seeded with `replicas[seeds]`, k = 5, α = 3.
    static func closestPeers(seeds: [Int]) -> ClosestPeersLookup<KademliaPeer> {
        var configuration = LookupConfiguration()
        configuration.resultCount = 5
        configuration.parallelism = 3
        let local = KademliaPeer(
            id: PeerID(publicKey: try! Ed25519.PrivateKey(seed: [UInt8](repeating: 99, count: 32)).publicKey))
        return ClosestPeersLookup(
            target: KademliaKey(hashing: Fixtures.name.recordKey), seeds: seeds.map { replicas[$0] },
            localKey: local.key, configuration: configuration)
    }

    /// Asks until the lookup waits; the ranks asked.
    static func drain(_ lookup: inout ClosestPeersLookup<KademliaPeer>) -> [Int] {
        var asked: [Int] = []
        while case .query(let peer) = lookup.next(now: KadFixtures.start) {
            asked.append(replicas.firstIndex { $0.id == peer.id }!)
        }
        return asked
    }

    /// Replica `rank` answers with `record` (or none), naming `naming`; returns `mayStop` after it.
    static func answer(
        _ value: inout ValueLookup<KademliaPeer>, _ lookup: inout ClosestPeersLookup<KademliaPeer>, from rank: Int,
        _ record: SignedAgentRecord?, naming: [Int] = []
    ) -> Bool {
        let peer = replicas[rank]
        var found = false
        if let record { found = value.receive(record, from: peer, key: peer.key, verify: verify) == .valid }
        lookup.received(from: peer, closerPeers: naming.map { replicas[$0] }, foundValue: found, now: KadFixtures.start)
        return value.mayStop(lookup)
    }

    @Test("the lookup stops when the quorum closest peers it knows answered under one key")
    func earlyStop() {
        var value = Self.lookup(quorum: 3)
        var lookup = Self.closestPeers(seeds: [0, 1, 2, 3, 4])
        #expect(Self.drain(&lookup) == [0, 1, 2])
        #expect(!Self.answer(&value, &lookup, from: 2, Fixtures.record(seq: 1)))
        #expect(!Self.answer(&value, &lookup, from: 0, Fixtures.record(seq: 2)))
        // The three closest known (0, 1, 2) agree: another seq of one key is the same claim.
        #expect(Self.answer(&value, &lookup, from: 1, Fixtures.record(seq: 1)))
    }

    @Test("with r = 7 the early stop needs a majority of the voters, 4, even at quorum 3")
    func earlyStopNeedsMajority() {
        var value = Self.lookup(quorum: 3, replicationFactor: 7)
        var lookup = Self.closestPeers(seeds: [0, 1, 2, 3, 4])
        #expect(Self.drain(&lookup) == [0, 1, 2])
        for rank in [0, 1, 2] {
            #expect(!Self.answer(&value, &lookup, from: rank, Fixtures.record(Fixtures.bob, seq: 9)))
        }
        #expect(Self.drain(&lookup) == [3, 4])
        #expect(Self.answer(&value, &lookup, from: 3, Fixtures.record(Fixtures.bob, seq: 9)))
    }

    @Test("colluders answering first with one rival key do not end the lookup; the closest do not agree")
    func colludersDoNotStopIt() {
        var value = Self.lookup(quorum: 3)
        var lookup = Self.closestPeers(seeds: [10, 11, 12, 13, 14])
        #expect(Self.drain(&lookup) == [10, 11, 12])
        // Three far peers answer first, one rival key, each naming the others and closer peers.
        let rival = Fixtures.record(Fixtures.bob, seq: 9)
        for rank in [10, 11, 12] {
            #expect(!Self.answer(&value, &lookup, from: rank, rival, naming: [5, 6, 7]))
        }
        #expect(value.validAnswers == 3)
        #expect(Self.drain(&lookup) == [5, 6, 7])
        // The closer peers hold the holder's record: two keys, so no early stop at all.
        for rank in [5, 6, 7] {
            #expect(!Self.answer(&value, &lookup, from: rank, Fixtures.record(seq: 1)))
        }
    }

    @Test("a close peer without the record holds the early stop off; a rival answer anywhere ends it")
    func closestWithoutRecord() {
        var value = Self.lookup(quorum: 3)
        var lookup = Self.closestPeers(seeds: [0, 1, 2, 3, 4])
        #expect(Self.drain(&lookup) == [0, 1, 2])
        #expect(!Self.answer(&value, &lookup, from: 0, nil))
        #expect(!Self.answer(&value, &lookup, from: 1, Fixtures.record(seq: 1)))
        #expect(!Self.answer(&value, &lookup, from: 2, Fixtures.record(seq: 1)))
        #expect(Self.drain(&lookup) == [3, 4])
        #expect(!Self.answer(&value, &lookup, from: 3, Fixtures.record(seq: 1)))
        // 0 has no record: the three closest (0, 1, 2) are not three agreeing answers.
        #expect(value.validAnswers == 3)
        var fresh = Self.lookup(quorum: 3)
        var again = Self.closestPeers(seeds: [0, 1, 2, 3, 4])
        _ = Self.drain(&again)
        #expect(!Self.answer(&fresh, &again, from: 0, Fixtures.record(Fixtures.bob, seq: 9)))
        #expect(!Self.answer(&fresh, &again, from: 1, Fixtures.record(seq: 1)))
        #expect(!Self.answer(&fresh, &again, from: 2, Fixtures.record(seq: 1)))
    }

    @Test("the decision: the closest replicas vote, the stale ones are named, the local copy follows")
    func decision() throws {
        var value = Self.lookup(quorum: 3, replicationFactor: 3)
        let old = Fixtures.record(seq: 1)
        let new = Fixtures.record(seq: 2)
        let rival = Fixtures.record(Fixtures.bob, seq: 50)
        // Far replicas (rank ≥ 3) claim a rival key in numbers: they do not vote.
        let answers: [(Int, SignedAgentRecord)] = [(0, new), (1, old), (3, rival), (4, rival), (5, rival), (6, rival)]
        for (index, record) in answers {
            value.receive(record, from: Self.replicas[index], key: Self.replicas[index].key, verify: Self.verify)
        }
        // Replica 2 answered without a record.
        let closest = Array(Self.replicas.prefix(8))
        let decision = try #require(value.decide(closest: closest, local: old))
        #expect(decision.choice.record == new)
        #expect(decision.staleReplicas.map(\.id) == [Self.replicas[1].id, Self.replicas[2].id])
        #expect(decision.updatesLocalCopy)
        #expect(value.decide(closest: closest, local: new)?.updatesLocalCopy == false)
        #expect(value.decide(closest: closest, local: nil)?.updatesLocalCopy == false)
        #expect(Self.lookup().decide(closest: closest, local: nil) == nil)
        #expect(Self.lookup().decide(closest: closest, local: old)?.choice.record == old)
    }
}
