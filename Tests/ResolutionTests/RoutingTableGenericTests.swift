import AgentTesting
import Identity
import Multiformats
import NIOCore
import Testing

import Resolution

/// The keys of the handles below, by number (immutable once made).
private final class HandleKeys: Sendable {
    let keys: [KademliaKey]

    init(_ keys: [KademliaKey]) {
        self.keys = keys
    }
}

/// A peer handle as the simulator uses one: a 4-byte number into a shared key array, no addresses,
/// times stored as 4-byte milliseconds since `KadFixtures.start`.
private struct Handle: RoutingTablePeer {
    let number: UInt32

    init(_ number: Int) {
        self.number = UInt32(number)
    }

    func key(in keySpace: HandleKeys) -> KademliaKey { keySpace.keys[Int(number)] }
    var addresses: [Multiaddr] { [] }
    func withAddresses(_ addresses: [Multiaddr]) -> Handle { self }

    static func timestamp(_ deadline: NIODeadline) -> UInt32 {
        UInt32((deadline.uptimeNanoseconds - KadFixtures.start.uptimeNanoseconds) / 1_000_000)
    }

    static func deadline(_ timestamp: UInt32) -> NIODeadline {
        KadFixtures.start + .milliseconds(Int64(timestamp))
    }
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

    static func outcome<Peer: RoutingTablePeer>(_ update: KBucketsTable<Peer>.Update, in table: KBucketsTable<Peer>)
        -> Outcome
    {
        switch update {
        case .inserted: return .inserted
        case .updated: return .updated
        case .cached: return .cached
        case .pendingLivenessCheck(let peer): return .pending(table.key(of: peer))
        case .rejected(let why): return .rejected(why)
        }
    }

    /// Everything observable about a table's membership, by key.
    static func state<Peer: RoutingTablePeer>(_ table: KBucketsTable<Peer>, targets: [KademliaKey]) -> [[KademliaKey]] {
        func keys(_ entries: [KBucketEntry<Peer>]) -> [KademliaKey] { entries.map { table.key(of: $0.peer) } }
        var result = [keys(table.entries)]
        for summary in table.bucketSummaries {
            result.append(keys(table.entries(inBucket: summary.index)))
            result.append(keys(table.replacements(inBucket: summary.index)))
        }
        for target in targets { result.append(keys(table.closestPeers(to: target, count: 20))) }
        return result
    }

    /// Every entry's and candidate's times, by bucket (whole seconds in the history below, so the
    /// handles' milliseconds hold them exactly).
    static func times<Peer: RoutingTablePeer>(_ table: KBucketsTable<Peer>) -> [[NIODeadline]] {
        table.bucketSummaries.flatMap { summary in
            [table.entries(inBucket: summary.index).flatMap { [$0.lastSeen, $0.firstSeen] },
             table.replacements(inBucket: summary.index).flatMap { [$0.lastSeen, $0.firstSeen] }]
        }
    }

    /// Whether two evictions took out and promoted the same peers.
    private static func same(_ a: RoutingTable.Eviction?, _ b: KBucketsTable<Handle>.Eviction?, in table: KBucketsTable<Handle>)
        -> Bool
    {
        a?.evicted.key == b.map { table.key(of: $0.evicted.peer) }
            && a?.promoted?.key == b?.promoted.map { table.key(of: $0.peer) }
            && a?.evicted.lastSeen == b?.evicted.lastSeen
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
        // Peers concentrated in the far buckets, as in a network: fills buckets and replacement caches.
        var pool: [KademliaPeer] = []
        for number in 0..<120 {
            pool.append(KadFixtures.peer(inBucket: 255 - number % 6, of: real.localKey, using: &generator))
        }
        // Handle 0 is the local peer, handle n + 1 is pool[n].
        let keys = HandleKeys([real.localKey] + pool.map(\.key))
        var handles = KBucketsTable(local: Handle(0), keySpace: keys, configuration: configuration)
        let handleOf = Dictionary(uniqueKeysWithValues: pool.enumerated().map { ($1.key, Handle($0 + 1)) })
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
                let a = Self.outcome(real.add(peer, evidence: evidence, now: now), in: real)
                let b = Self.outcome(handles.add(handleOf[peer.key]!, evidence: evidence, now: now), in: handles)
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
                    #expect(Self.same(a, b, in: handles), "step \(step)")
                }
            case 7:
                let a = real.remove(peer.id)
                let b = handles.remove(key: peer.key)
                #expect(Self.same(a, b, in: handles), "step \(step)")
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
                #expect(Self.times(real) == Self.times(handles), "step \(step)")
                #expect(real.count == handles.count, "step \(step)")
            }
        }
        #expect(real.count == handles.count)
        // The history exercised what it is meant to: full buckets, checks, several buckets.
        #expect(real.count >= 16)
        #expect(pendingSeen > 10)
        #expect(real.bucketSummaries.count >= 5)
    }

    @Test("only buckets up to the deepest one written are stored, a full bucket has no spare slots, an entry is 16 bytes")
    func storage() {
        var generator = SeededGenerator(seed: Self.seed + 1)
        let localKey = KademliaKey.random(using: &generator)
        let k = RoutingTable.Configuration().bucketSize
        let cache = RoutingTable.Configuration().replacementCacheSize
        // Handle 0 is us; then k + 3 · cache peers of bucket 255 and 3 of bucket 252 (prefix length 3).
        let far = (0..<(k + 3 * cache)).map { _ in KademliaKey.random(inBucket: 255, from: localKey, using: &generator) }
        let near = (0..<3).map { _ in KademliaKey.random(inBucket: 252, from: localKey, using: &generator) }
        let keys = HandleKeys([localKey] + far + near)
        var table = KBucketsTable(local: Handle(0), keySpace: keys, configuration: RoutingTable.Configuration())
        #expect(table.footprint.storedBuckets == 0)
        #expect(table.footprint.bytes == 0)
        for second in far.indices {
            _ = table.add(Handle(1 + second), evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(second)))
        }
        for offset in near.indices {
            _ = table.add(Handle(1 + far.count + offset), evidence: .answeredRequest, now: KadFixtures.start)
        }
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
        // A handle entry: 4-byte number, two 4-byte times, the connected flag and the evidence.
        #expect(MemoryLayout<KBucketEntry<Handle>>.stride == 16)
        #expect(MemoryLayout<RoutingTableEntry>.stride > 16)
        // 23 entries and 8 candidates of 16 bytes in one slot array (at most 4 spare slots), 16
        // bucket records of 24 bytes, two array headers: about 1 KB (two arrays per bucket and
        // 56-byte records took about 2 KB).
        #expect(footprint.bytes <= 31 * 16 + 4 * 16 + 16 * 24 + 2 * 32 + 64, "\(footprint)")
    }
}
