import Foundation
import Identity
import Multiformats
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// The subnet limits on the DHT's own admission path, over real connections (spec/dht.md §4, issue
/// #10 finding 5): 24 sybil nodes in one /24 answer a victim's lookups.
@Suite("DHT subnet limits over loopback", .serialized)
struct DHTSubnetLimitTests {
    /// 24 sybil DHT nodes on 127.0.0.2–25 (one /24) and an honest one on 127.0.1.1; the victim
    /// (on 127.0.0.1, `exemption`) runs a lookup through each sybil, then one through the honest node.
    static func run(exemption: LoopbackExemption) async throws -> (
        table: [RoutingTableEntry], local: KademliaKey, sybils: Set<PeerID>, honest: PeerID, exempt: Bool
    ) {
        let network = DHTLoopbackNetwork()
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.loopbackExemption = exemption
        let victim = try await network.addNode(configuration: configuration)
        var sybils: [DHTLoopbackNetwork.Node] = []
        for host in 2...25 {
            sybils.append(try await network.addNode(listen: "/ip4/127.0.0.\(host)/tcp/0"))
        }
        let honest = try await network.addNode(listen: "/ip4/127.0.1.1/tcp/0")
        // Each lookup is for the seed's own id, so the seed is the closest candidate and is asked.
        for sybil in sybils {
            _ = await victim.dht.lookupClosestPeers(
                to: sybil.peerID.multihash.bytes, extraSeeds: [KademliaPeer(id: sybil.peerID, addresses: [sybil.address])])
        }
        // Until it answers within a lookup (a loaded machine may let one finish without it).
        for _ in 0..<5 where !victim.dht.routingTableEntries.contains(where: { $0.peer.id == honest.peerID }) {
            _ = await victim.dht.lookupClosestPeers(
                to: honest.peerID.multihash.bytes, extraSeeds: [KademliaPeer(id: honest.peerID, addresses: [honest.address])])
        }
        let table = victim.dht.routingTableEntries
        let exempt = victim.dht.state.withLockedValue { $0.table.exemptsLoopback }
        try await network.shutdown()
        return (table, KademliaKey(peer: victim.peerID), Set(sybils.map(\.peerID)), honest.peerID, exempt)
    }

    @Test("24 sybil nodes in one /24 hold at most 10 entries, 2 per bucket; a node from another /24 gets in")
    func sybilsLimited() async throws {
        let (table, local, sybils, honest, exempt) = try await Self.run(exemption: .never)
        #expect(!exempt)
        let held = table.filter { sybils.contains($0.peer.id) }
        #expect(!held.isEmpty)
        #expect(held.count <= 10)
        let perBucket = Dictionary(grouping: held) { local.distance(to: $0.key).bucketIndex }.mapValues(\.count)
        #expect(perBucket.values.allSatisfy { $0 <= 2 }, "sybil entries per bucket: \(perBucket)")
        #expect(table.contains { $0.peer.id == honest })
    }

    @Test("a node listening only on loopback leaves loopback entries out of the limits")
    func loopbackOnlyExempt() async throws {
        let (table, _, sybils, honest, exempt) = try await Self.run(exemption: .whenLoopbackOnly)
        #expect(exempt)
        // More than the table limit of one /24 (all 24 but for a bucket that drew over k of them).
        #expect(table.filter { sybils.contains($0.peer.id) }.count > 10)
        #expect(table.contains { $0.peer.id == honest })
    }
}
