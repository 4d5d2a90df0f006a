import AgentTesting
import Identity
import Multiformats
import NIOCore
import Testing

import Resolution

/// A peer handle as the simulator uses one: a shared object with a key and a number, no addresses.
private final class Handle: RoutingTablePeer {
    let key: KademliaKey
    let number: Int

    init(key: KademliaKey, number: Int) {
        self.key = key
        self.number = number
    }

    var addresses: [Multiaddr] { [] }
    func withAddresses(_ addresses: [Multiaddr]) -> Handle { self }
    static func == (lhs: Handle, rhs: Handle) -> Bool { lhs.key == rhs.key }
    func hash(into hasher: inout Hasher) { hasher.combine(key) }
}

@Suite("routing table generic over the peer handle: same decisions, small storage")
struct RoutingTableGenericTests {
    static let seed: UInt64 = 0x6765_6e65

    /// What an update did, with the peer reduced to its key, so both tables' answers compare.
    enum Outcome: Hashable {
        case inserted, updated, cached
        case pending(KademliaKey)
        case rejected(RoutingTableRejection)
    }

    static func outcome<Peer: RoutingTablePeer>(_ update: KBucketsTable<Peer>.Update) -> Outcome {
        switch update {
        case .inserted: return .inserted
        case .updated: return .updated
        case .cached: return .cached
        case .pendingLivenessCheck(let peer): return .pending(peer.key)
        case .rejected(let why): return .rejected(why)
        }
    }

    /// Everything observable about a table's membership, by key.
    static func state<Peer: RoutingTablePeer>(_ table: KBucketsTable<Peer>, targets: [KademliaKey]) -> [[KademliaKey]] {
        var result = [table.entries.map(\.key)]
        for summary in table.bucketSummaries {
            result.append(table.entries(inBucket: summary.index).map(\.key))
            result.append(table.replacements(inBucket: summary.index).map(\.key))
        }
        for target in targets { result.append(table.closestPeers(to: target, count: 20).map(\.key)) }
        return result
    }

    @Test("a table of handles makes every decision agentd's table makes, on a seeded random history")
    func sameDecisions() {
        var generator = SeededGenerator(seed: Self.seed)
        let local = KadFixtures.peerID(using: &generator)
        var configuration = RoutingTable.Configuration()
        configuration.bucketSize = 4
        configuration.replacementCacheSize = 2
        configuration.maximumEntries = 40
        var real = RoutingTable(localPeer: local, configuration: configuration)
        var handles = KBucketsTable(local: Handle(key: KademliaKey(peer: local), number: -1), configuration: configuration)
        // Peers concentrated in the far buckets, as in a network: fills buckets and replacement caches.
        var pool: [KademliaPeer] = []
        for number in 0..<120 {
            pool.append(KadFixtures.peer(inBucket: 255 - number % 6, of: real.localKey, using: &generator))
        }
        let handleOf = Dictionary(uniqueKeysWithValues: pool.enumerated().map { ($1.key, Handle(key: $1.key, number: $0)) })
        var now = KadFixtures.start
        var pending: [KademliaKey] = []
        var pendingSeen = 0
        for step in 0..<3000 {
            now = now + .seconds(Int64(generator.next() % 40))
            let peer = pool[Int(generator.next() % UInt64(pool.count))]
            switch generator.next() % 10 {
            case 0..<6:
                let evidence: RoutingTable.Evidence =
                    switch generator.next() % 8 {
                    case 0: .inboundStream(.client)
                    case 1, 2: .inboundStream(.server)
                    default: .answeredRequest
                    }
                let a = Self.outcome(real.add(peer, evidence: evidence, now: now))
                let b = Self.outcome(handles.add(handleOf[peer.key]!, evidence: evidence, now: now))
                #expect(a == b, "step \(step): add")
                if case .pending(let key) = a {
                    pending.append(key)
                    pendingSeen += 1
                }
            case 6 where !pending.isEmpty:
                let key = pending.removeFirst()
                if generator.next() % 2 == 0 {
                    real.livenessCheckSucceeded(pool.first { $0.key == key }!.id, now: now)
                    handles.livenessCheckSucceeded(key: key, now: now)
                } else {
                    let a = real.livenessCheckFailed(pool.first { $0.key == key }!.id, now: now)
                    let b = handles.livenessCheckFailed(key: key, now: now)
                    #expect(a?.evicted.key == b?.evicted.key && a?.promoted?.key == b?.promoted?.key, "step \(step)")
                }
            case 7:
                let a = real.remove(peer.id)
                let b = handles.remove(key: peer.key)
                #expect(a?.evicted.key == b?.evicted.key && a?.promoted?.key == b?.promoted?.key, "step \(step)")
            case 8:
                let target = KademliaKey.random(using: &generator)
                real.recordLookup(of: target, now: now)
                handles.recordLookup(of: target, now: now)
            default:
                var copy = generator
                let a = real.refreshTargets(now: now, using: &generator)
                let b = handles.refreshTargets(now: now, using: &copy)
                #expect(a == b, "step \(step): refresh")
            }
            if step % 50 == 0 {
                let targets = (0..<3).map { _ in KademliaKey.random(using: &generator) } + [peer.key]
                #expect(Self.state(real, targets: targets) == Self.state(handles, targets: targets), "step \(step)")
                #expect(real.bucketSummaries == handles.bucketSummaries, "step \(step)")
                #expect(real.count == handles.count, "step \(step)")
            }
        }
        #expect(real.count == handles.count)
        // The history exercised what it is meant to: full buckets, checks, several buckets.
        #expect(real.count >= 16)
        #expect(pendingSeen > 10)
        #expect(real.bucketSummaries.count >= 5)
    }

    @Test("only buckets up to the deepest one written are stored, and a full bucket has no spare slots")
    func storage() {
        var generator = SeededGenerator(seed: Self.seed + 1)
        let localKey = KademliaKey.random(using: &generator)
        var table = KBucketsTable(local: Handle(key: localKey, number: -1), configuration: RoutingTable.Configuration())
        #expect(table.footprint.storedBuckets == 0)
        #expect(table.footprint.bytes == 0)
        let k = table.configuration.bucketSize
        let cache = table.configuration.replacementCacheSize
        var number = 0
        func handle(inBucket bucket: Int) -> Handle {
            number += 1
            return Handle(key: KademliaKey.random(inBucket: bucket, from: localKey, using: &generator), number: number)
        }
        // Bucket 255 full with a full replacement cache; three entries in bucket 252 (prefix length 3).
        for second in 0..<(k + 3 * cache) {
            _ = table.add(handle(inBucket: 255), evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(second)))
        }
        for _ in 0..<3 { _ = table.add(handle(inBucket: 252), evidence: .answeredRequest, now: KadFixtures.start) }
        #expect(table.count == k + 3)
        #expect(table.replacements(inBucket: 255).count == cache)
        var footprint = table.footprint
        #expect(footprint.storedBuckets == 4)
        // A doubling array would hold 32 slots for 20 entries and 16 for a cache of 8.
        #expect(footprint.entrySlots <= k + 1 + 4)
        #expect(footprint.replacementSlots <= cache + 2)
        // A lookup of a key near us stores the buckets down to it, and no further.
        table.recordLookup(of: KademliaKey.random(inBucket: 240, from: localKey, using: &generator), now: KadFixtures.start)
        footprint = table.footprint
        #expect(footprint.storedBuckets == 16)
        #expect(table.closestPeers(to: localKey, count: 5).count == 5)
        #expect(table.bucketSummaries.map(\.index) == [252, 255])
        // 23 entries and 8 candidates of 32 bytes, 16 bucket records and a few array headers.
        #expect(footprint.bytes < 4096, "\(footprint)")
    }
}
