import AgentTesting
import Identity
import Multiformats
import NIOCore
import Testing

import Resolution

/// Subnet diversity in the routing table (spec/dht.md §4, issue #10 finding 5): at most 2 entries of
/// one /24 (IPv4) or /48 (IPv6) per bucket and 10 per table, kept through replacement and eviction,
/// against sybil ids that all sit in one network.
@Suite("routing table: per-subnet limits against sybils")
struct RoutingTableSubnetTests {
    static let seed: UInt64 = 0x7375_626e

    let local: PeerID
    let startGenerator: SeededGenerator

    init() {
        var generator = SeededGenerator(seed: Self.seed)
        local = KadFixtures.peerID(using: &generator)
        startGenerator = generator
    }

    static func at(_ text: String) -> [Multiaddr] { [try! Multiaddr(text)] }

    /// `/ip4/203.0.113.<host>/tcp/4001`: the sybils' /24.
    static func sybilAddress(_ host: Int) -> [Multiaddr] { at("/ip4/203.0.113.\(host)/tcp/4001") }

    func peer(inBucket bucket: Int, _ table: RoutingTable, at addresses: [Multiaddr], _ generator: inout SeededGenerator)
        -> KademliaPeer
    {
        var peer = KadFixtures.peer(inBucket: bucket, of: table.localKey, using: &generator)
        peer.addresses = addresses
        return peer
    }

    func sybils(in table: RoutingTable) -> [RoutingTableEntry] {
        table.entries.filter { $0.peer.addresses.first?.description.hasPrefix("/ip4/203.0.113.") == true }
    }

    @Test("24 sybil ids from one /24 get 2 entries into a bucket; a peer from another /24 still gets in")
    func bucketLimit() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        var updates: [RoutingTable.Update] = []
        for host in 1...24 {
            let sybil = peer(inBucket: 255, table, at: Self.sybilAddress(host), &generator)
            updates.append(table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start))
        }
        #expect(updates.filter { $0 == .inserted }.count == 2)
        #expect(updates.filter { $0 == .rejected(.subnetFull) }.count == 22)
        #expect(table.entries(inBucket: 255).count == 2)
        #expect(table.replacements(inBucket: 255).isEmpty)

        let honest = peer(inBucket: 255, table, at: Self.at("/ip4/198.51.100.7/tcp/4001"), &generator)
        #expect(table.add(honest, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        // A neighbouring /24 is another subnet.
        let neighbour = peer(inBucket: 255, table, at: Self.at("/ip4/203.0.114.1/tcp/4001"), &generator)
        #expect(table.add(neighbour, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        #expect(table.count == 4)
    }

    @Test("24 sybil ids from one /24 spread over 12 buckets get 10 entries into the table")
    func tableLimit() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        var host = 0
        for bucket in 244..<256 {
            for _ in 0..<2 {
                host += 1
                let sybil = peer(inBucket: bucket, table, at: Self.sybilAddress(host), &generator)
                _ = table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start)
            }
        }
        #expect(sybils(in: table).count == 10)
        #expect(table.count == 10)
        for bucket in 244..<256 { #expect(table.entries(inBucket: bucket).count <= 2) }
        // The subnet is full in the table, also in a bucket where it has no entry yet.
        let late = peer(inBucket: 243, table, at: Self.sybilAddress(200), &generator)
        #expect(table.add(late, evidence: .answeredRequest, now: KadFixtures.start) == .rejected(.subnetFull))
        let honest = peer(inBucket: 243, table, at: Self.at("/ip4/198.51.100.7/tcp/4001"), &generator)
        #expect(table.add(honest, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
    }

    @Test("IPv6 counts by /48; IPv4-mapped IPv6 counts as IPv4; DNS names share one group")
    func families() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        var updates: [RoutingTable.Update] = []
        for host in 1...6 {
            // 2001:db8:1::/48, different /64s.
            let sybil = peer(inBucket: 255, table, at: Self.at("/ip6/2001:db8:1:\(host)::1/tcp/4001"), &generator)
            updates.append(table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start))
        }
        #expect(updates.filter { $0 == .inserted }.count == 2)
        let other48 = peer(inBucket: 255, table, at: Self.at("/ip6/2001:db8:2::1/tcp/4001"), &generator)
        #expect(table.add(other48, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)

        for host in 1...2 {
            let sybil = peer(inBucket: 254, table, at: Self.sybilAddress(host), &generator)
            #expect(table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        }
        let mapped = peer(inBucket: 254, table, at: Self.at("/ip6/::ffff:cb00:714d/tcp/4001"), &generator)
        #expect(table.add(mapped, evidence: .answeredRequest, now: KadFixtures.start) == .rejected(.subnetFull))

        var named: [RoutingTable.Update] = []
        for host in 1...4 {
            let sybil = peer(inBucket: 253, table, at: Self.at("/dns4/s\(host).example.com/tcp/4001"), &generator)
            named.append(table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start))
        }
        #expect(named == [.inserted, .inserted, .rejected(.subnetFull), .rejected(.subnetFull)])
    }

    @Test("replacement caches and evictions keep the limits")
    func replacementAndEviction() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        let size = table.configuration.bucketSize
        // A full bucket of honest peers, each in its own /24, seen at 0…19 s.
        var honest: [KademliaPeer] = []
        for index in 0..<size {
            let entry = peer(inBucket: 255, table, at: [KadFixtures.address(index)], &generator)
            #expect(table.add(entry, evidence: .answeredRequest, now: KadFixtures.start + .seconds(Int64(index))) == .inserted)
            honest.append(entry)
        }
        // Three honest candidates, then 24 sybils of one /24: the cache keeps the honest ones and
        // at most 2 sybils.
        var later = KadFixtures.start + .seconds(100)
        for index in 0..<3 {
            let candidate = peer(inBucket: 255, table, at: [KadFixtures.address(100 + index)], &generator)
            _ = table.add(candidate, evidence: .answeredRequest, now: later)
        }
        for host in 1...24 {
            later = later + .seconds(1)
            let sybil = peer(inBucket: 255, table, at: Self.sybilAddress(host), &generator)
            _ = table.add(sybil, evidence: .answeredRequest, now: later)
        }
        let cached = table.replacements(inBucket: 255)
        #expect(cached.count == 5)
        #expect(cached.filter { $0.peer.addresses == Self.sybilAddress(23) || $0.peer.addresses == Self.sybilAddress(24) }.count == 2)

        // Every honest entry fails its liveness check in turn: the 2 sybils and the 3 honest
        // candidates move up, never a third sybil.
        for entry in honest {
            _ = table.livenessCheckFailed(entry.id, now: later)
            #expect(sybils(in: table).count <= 2)
        }
        #expect(sybils(in: table).count == 2)
        #expect(table.entries(inBucket: 255).count == 5)
        // Sybils seen again cannot take the free slots either.
        for host in 30...40 {
            let sybil = peer(inBucket: 255, table, at: Self.sybilAddress(host), &generator)
            #expect(table.add(sybil, evidence: .answeredRequest, now: later) == .rejected(.subnetFull))
        }
    }

    @Test("a cached candidate whose subnet filled the table meanwhile is not promoted")
    func promotionChecksTheTable() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        var honest: [KademliaPeer] = []
        for index in 0..<table.configuration.bucketSize {
            let entry = peer(inBucket: 255, table, at: [KadFixtures.address(index)], &generator)
            _ = table.add(entry, evidence: .answeredRequest, now: KadFixtures.start)
            honest.append(entry)
        }
        let waiting = peer(inBucket: 255, table, at: Self.sybilAddress(1), &generator)
        _ = table.add(waiting, evidence: .answeredRequest, now: KadFixtures.start + .seconds(120))
        #expect(table.replacements(inBucket: 255).map(\.peer.id) == [waiting.id])
        // Meanwhile its /24 takes 10 entries in other buckets.
        var host = 1
        for bucket in 245..<250 {
            for _ in 0..<2 {
                host += 1
                let sybil = peer(inBucket: bucket, table, at: Self.sybilAddress(host), &generator)
                #expect(table.add(sybil, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
            }
        }
        let eviction = table.livenessCheckFailed(honest[0].id, now: KadFixtures.start + .seconds(200))
        #expect(eviction?.promoted == nil)
        #expect(table.replacements(inBucket: 255).map(\.peer.id) == [waiting.id])
        #expect(sybils(in: table).count == 10)
    }

    @Test("an entry seen at an address in a full subnet keeps its old address")
    func addressMove() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        for host in 1...2 {
            _ = table.add(peer(inBucket: 255, table, at: Self.sybilAddress(host), &generator), evidence: .answeredRequest, now: KadFixtures.start)
        }
        let mover = peer(inBucket: 255, table, at: Self.at("/ip4/198.51.100.7/tcp/4001"), &generator)
        #expect(table.add(mover, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        var moved = mover
        moved.addresses = Self.sybilAddress(3)
        #expect(table.add(moved, evidence: .answeredRequest, now: KadFixtures.start + .seconds(1)) == .updated)
        #expect(table.entry(for: mover.id)?.peer.addresses == Self.at("/ip4/198.51.100.7/tcp/4001"))
        #expect(sybils(in: table).count == 2)
        // To a subnet with room it moves, and its old subnet's share is freed.
        moved.addresses = Self.at("/ip4/192.0.2.1/tcp/4001")
        #expect(table.add(moved, evidence: .answeredRequest, now: KadFixtures.start + .seconds(2)) == .updated)
        #expect(table.entry(for: mover.id)?.peer.addresses == moved.addresses)
        for host in 10...11 {
            let next = peer(inBucket: 255, table, at: Self.at("/ip4/198.51.100.\(host)/tcp/4001"), &generator)
            #expect(table.add(next, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        }
    }

    @Test("loopback entries count like others unless exempted; exempt, a bucket fills from 127.0.0.0/8")
    func loopback() {
        var generator = startGenerator
        var table = RoutingTable(localPeer: local)
        #expect(!table.exemptsLoopback)
        var updates: [RoutingTable.Update] = []
        for host in 1...4 {
            let node = peer(inBucket: 255, table, at: Self.at("/ip4/127.0.0.\(host)/tcp/4001"), &generator)
            updates.append(table.add(node, evidence: .answeredRequest, now: KadFixtures.start))
        }
        #expect(updates.filter { $0 == .inserted }.count == 2)
        table.exemptLoopback(true)
        for host in 5...30 {
            let node = peer(inBucket: 255, table, at: Self.at("/ip4/127.0.0.\(host)/tcp/4001"), &generator)
            _ = table.add(node, evidence: .answeredRequest, now: KadFixtures.start)
        }
        #expect(table.entries(inBucket: 255).count == table.configuration.bucketSize)
        // Counted again, the bucket's loopback entries stay; the next one is refused.
        table.exemptLoopback(false)
        #expect(table.entries(inBucket: 255).count == table.configuration.bucketSize)
        let next = peer(inBucket: 254, table, at: Self.at("/ip6/::1/tcp/4001"), &generator)
        #expect(table.add(next, evidence: .answeredRequest, now: KadFixtures.start) == .inserted)
        let another = peer(inBucket: 254, table, at: Self.at("/ip4/127.0.0.99/tcp/4001"), &generator)
        #expect(table.add(another, evidence: .answeredRequest, now: KadFixtures.start) == .rejected(.subnetFull))
    }
}
