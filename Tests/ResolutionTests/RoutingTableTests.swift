import AgentTesting
import Identity
import NIOCore
import Testing

import Resolution

@Suite("routing table: admission, liveness checks, replacement cache, bounds")
struct RoutingTableTests {
    /// The seed of every test's generator; the first peer id drawn is the local peer.
    static let seed: UInt64 = 0x7461_626c

    let local: PeerID
    /// Continues after `local` was drawn.
    let startGenerator: SeededGenerator

    init() {
        var generator = SeededGenerator(seed: Self.seed)
        local = KadFixtures.peerID(using: &generator)
        startGenerator = generator
    }

    /// k fresh peers in bucket 255, inserted one second apart from `KadFixtures.start`.
    func fullBucket(_ table: inout RoutingTable, using generator: inout SeededGenerator) -> [KademliaPeer] {
        let peers = (0..<table.configuration.bucketSize).map { _ in
            KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        }
        for (offset, peer) in peers.enumerated() {
            #expect(
                table.add(peer, evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(offset)))
                    == .inserted)
        }
        return peers
    }

    @Test("a peer that answered is inserted; seen again it becomes the most recently seen")
    func insertAndUpdate() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let a = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        let b = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        var aMoved = a
        aMoved.addresses = [KadFixtures.address(2)]
        #expect(
            table.add(
                KademliaPeer(id: a.id, addresses: [KadFixtures.address(1)]), evidence: .answeredRequest,
                now: KadFixtures.start) == .inserted)
        #expect(table.add(b, evidence: .inboundStream(.server), now: KadFixtures.start + .seconds(1)) == .inserted)
        #expect(table.count == 2)
        #expect(table.entries(inBucket: 255).map(\.peer.id) == [a.id, b.id])

        #expect(table.add(aMoved, evidence: .answeredRequest, now: KadFixtures.start + .seconds(2)) == .updated)
        #expect(table.count == 2)
        #expect(table.entries(inBucket: 255).map(\.peer.id) == [b.id, a.id])
        let entry = table.entry(for: a.id)
        #expect(entry?.peer.addresses == [KadFixtures.address(2)])
        #expect(entry?.lastSeen == KadFixtures.start + .seconds(2))
        #expect(entry?.firstSeen == KadFixtures.start)

        // Seen without addresses: the known ones stay.
        #expect(
            table.add(KademliaPeer(id: a.id), evidence: .answeredRequest, now: KadFixtures.start + .seconds(3))
                == .updated)
        #expect(table.entry(for: a.id)?.peer.addresses == [KadFixtures.address(2)])
        #expect(table.bucketSummaries.map(\.index) == [255])
        #expect(table.bucketSummaries.first?.commonPrefixLength == 0)
    }

    @Test("the local peer is never inserted")
    func selfIsRejected() {
        var table = RoutingTable(localPeer: local)
        #expect(
            table.add(KademliaPeer(id: local), evidence: .answeredRequest, now: KadFixtures.start)
                == .rejected(.localPeer))
        #expect(
            table.add(KademliaPeer(id: local), evidence: .inboundStream(.server), now: KadFixtures.start)
                == .rejected(.localPeer))
        #expect(table.count == 0)
        #expect(table.closestPeers(to: table.localKey, count: 20).isEmpty)
    }

    @Test("client-mode peers never enter, and a peer that turns client leaves")
    func clientModeExcluded() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let client = KadFixtures.peer(using: &generator)
        #expect(table.add(client, evidence: .inboundStream(.client), now: KadFixtures.start) == .rejected(.clientMode))
        #expect(!table.contains(client.id))
        #expect(table.count == 0)

        let server = KadFixtures.peer(using: &generator)
        #expect(table.add(server, evidence: .inboundStream(.server), now: KadFixtures.start) == .inserted)
        #expect(table.entry(for: server.id)?.evidence == .inboundStream(.server))
        #expect(
            table.add(server, evidence: .inboundStream(.client), now: KadFixtures.start + .seconds(1))
                == .rejected(.clientMode))
        #expect(!table.contains(server.id))
        #expect(table.count == 0)
    }

    @Test(
        "a full bucket checks its least recently seen entry; a passed check keeps it, a failed one promotes a replacement"
    )
    func evictionWithLivenessCheck() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let peers = fullBucket(&table, using: &generator)
        let candidates = (0..<8).map { _ in KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator) }

        // Everyone was seen within the last minute: the newcomer waits, no ping needed.
        #expect(table.add(candidates[0], evidence: .answeredRequest, now: KadFixtures.start + .seconds(30)) == .cached)

        // Minutes later the least recently seen entry (peers[0]) must prove it is alive.
        var now = KadFixtures.start + .minutes(5)
        #expect(table.add(candidates[1], evidence: .answeredRequest, now: now) == .pendingLivenessCheck(peers[0]))
        // One check per bucket at a time.
        #expect(table.add(candidates[2], evidence: .answeredRequest, now: now) == .cached)
        #expect(table.replacements(inBucket: 255).map(\.peer.id) == candidates[0..<3].map(\.id))
        #expect(table.count == 20)
        #expect(!table.contains(candidates[1].id))

        // It answers: it stays and becomes the most recently seen; the newcomers keep waiting.
        table.livenessCheckSucceeded(peers[0].id, now: now)
        #expect(table.entries(inBucket: 255).last?.peer.id == peers[0].id)
        #expect(table.entries(inBucket: 255).first?.peer.id == peers[1].id)
        #expect(table.replacements(inBucket: 255).count == 3)

        // The next newcomer checks the new least recently seen, which does not answer: evicted, and
        // the most recently seen replacement takes the slot.
        now = now + .seconds(1)
        #expect(table.add(candidates[3], evidence: .answeredRequest, now: now) == .pendingLivenessCheck(peers[1]))
        let eviction = table.livenessCheckFailed(peers[1].id, now: now)
        #expect(eviction?.evicted.peer.id == peers[1].id)
        #expect(eviction?.promoted?.peer.id == candidates[3].id)
        #expect(!table.contains(peers[1].id))
        #expect(table.contains(candidates[3].id))
        #expect(table.count == 20)
        #expect(table.replacements(inBucket: 255).map(\.peer.id) == candidates[0..<3].map(\.id))
        // Promoted with its own last-seen time, the bucket stays ordered by last contact.
        let lastSeen = table.entries(inBucket: 255).map(\.lastSeen)
        #expect(lastSeen == lastSeen.sorted())

        // A failed check for a peer that is gone already changes nothing.
        #expect(table.livenessCheckFailed(peers[1].id, now: now) == nil)
        #expect(table.count == 20)
    }

    @Test("a check that is never reported counts as lost after the timeout and is asked again")
    func lostLivenessCheck() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let peers = fullBucket(&table, using: &generator)
        let now = KadFixtures.start + .minutes(10)
        let a = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        let b = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        let c = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        #expect(table.add(a, evidence: .answeredRequest, now: now) == .pendingLivenessCheck(peers[0]))
        #expect(table.add(b, evidence: .answeredRequest, now: now + .seconds(29)) == .cached)
        #expect(table.add(c, evidence: .answeredRequest, now: now + .seconds(30)) == .pendingLivenessCheck(peers[0]))
        // Any contact with the checked peer answers the check.
        #expect(table.add(peers[0], evidence: .answeredRequest, now: now + .seconds(31)) == .updated)
        #expect(table.add(a, evidence: .answeredRequest, now: now + .seconds(31)) == .pendingLivenessCheck(peers[1]))
    }

    @Test("the replacement cache keeps the most recently seen candidates, bounded")
    func replacementCacheBounded() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        _ = fullBucket(&table, using: &generator)
        let candidates = (0..<30).map { _ in KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator) }
        for (offset, candidate) in candidates.enumerated() {
            _ = table.add(candidate, evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(20 + offset)))
        }
        #expect(table.replacements(inBucket: 255).map(\.peer.id) == candidates.suffix(8).map(\.id))
        // Seen again, a waiting candidate becomes the most recent one of the cache.
        _ = table.add(candidates[22], evidence: .answeredRequest, now: KadFixtures.start + .seconds(60))
        #expect(table.replacements(inBucket: 255).last?.peer.id == candidates[22].id)
        #expect(table.replacements(inBucket: 255).count == 8)
        // Removing a candidate takes it out of the cache; no entry left.
        #expect(table.remove(candidates[22].id) == nil)
        #expect(table.replacements(inBucket: 255).count == 7)
        #expect(table.count == 20)
    }

    @Test("removing an entry promotes a replacement; removing from a bucket without one shrinks the table")
    func removal() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let peers = fullBucket(&table, using: &generator)
        let other = KadFixtures.peer(inBucket: 254, of: table.localKey, using: &generator)
        #expect(table.add(other, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        #expect(table.remove(other.id)?.promoted == nil)
        #expect(table.count == 20)
        let candidate = KadFixtures.peer(inBucket: 255, of: table.localKey, using: &generator)
        _ = table.add(candidate, evidence: .answeredRequest, now: KadFixtures.start + .seconds(21))
        #expect(table.remove(peers[5].id)?.promoted?.peer.id == candidate.id)
        #expect(table.count == 20)
        #expect(table.replacements(inBucket: 255).isEmpty)
    }

    @Test("bounds: total entries and addresses per peer")
    func bounds() {
        var generator = startGenerator
        var configuration = RoutingTable.Configuration()
        configuration.maximumEntries = 5
        configuration.maximumAddressesPerPeer = 3
        var table = RoutingTable(localPeer: local, configuration: configuration)
        for index in 0..<5 {
            let peer = KadFixtures.peer(using: &generator, addresses: (0..<1000).map(KadFixtures.address))
            #expect(
                table.add(peer, evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(index)))
                    == .inserted)
            #expect(table.entry(for: peer.id)?.peer.addresses.count == 3)
        }
        #expect(
            table.add(KadFixtures.peer(using: &generator), evidence: .answeredRequest, now: KadFixtures.start)
                == .rejected(.tableFull))
        #expect(table.count == 5)
    }

    @Test("connection state is recorded")
    func connection() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let peer = KadFixtures.peer(using: &generator)
        _ = table.add(peer, evidence: .answeredRequest, now: KadFixtures.start)
        #expect(table.entry(for: peer.id)?.isConnected == true)
        table.setConnected(peer.id, false)
        #expect(table.entry(for: peer.id)?.isConnected == false)
        _ = table.add(peer, evidence: .answeredRequest, now: KadFixtures.start + .seconds(1))
        #expect(table.entry(for: peer.id)?.isConnected == true)
    }

    @Test("closestPeers is exact: the same as sorting every entry by distance", arguments: [1, 2, 3])
    func closestIsExact(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var table = RoutingTable(localPeer: KadFixtures.peerID(using: &generator))
        for _ in 0..<3000 {
            _ = table.add(KadFixtures.peer(using: &generator), evidence: .answeredRequest, now: KadFixtures.start)
        }
        // Also peers deep in our own prefix, so buckets near the local key are populated.
        for bucket in 240..<250 {
            _ = table.add(
                KadFixtures.peer(inBucket: bucket, of: table.localKey, using: &generator), evidence: .answeredRequest,
                now: KadFixtures.start)
        }
        let all = table.entries
        #expect(all.count == table.count)
        var targets = (0..<40).map { _ in KademliaKey.random(using: &generator) }
        targets.append(table.localKey)
        targets.append(all[7].key)
        targets.append(KademliaKey.random(inBucket: 250, from: table.localKey, using: &generator))
        for target in targets {
            let sorted = all.sorted { target.isCloser($0.key, than: $1.key) }
            for count in [0, 1, 5, 20, 21, 100, 10_000] {
                let closest = table.closestPeers(to: target, count: count)
                #expect(
                    closest.map(\.peer.id) == sorted.prefix(count).map(\.peer.id), "target \(target) count \(count)")
            }
        }
    }
}
