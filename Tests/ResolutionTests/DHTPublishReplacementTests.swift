import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import ResolutionTesting
import Testing

@testable import Resolution

/// A publish replaces each replica it cannot reach by the next closest peer, and never one that
/// refused. Found by the 100-node test under CI load: two of 100 registrations, made while request
/// deadlines passed, reached 2 and 3 of the 5 replicas although 15 more answered peers were known.
@Suite("DHT publishing: unreachable replicas replaced by the next closest")
struct DHTPublishReplacementTests {
    /// A peer nobody listens for: port 1 on loopback refuses the connection at once.
    static func unreachablePeer() throws -> KademliaPeer {
        KademliaPeer(
            id: PeerID(publicKey: Ed25519.PrivateKey().publicKey),
            addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/1")])
    }

    /// Long request deadlines: the unreachable peers fail at once (connection refused), and a live
    /// replica that answered late under load would be replaced, changing which peers store.
    static func configuration() -> DHTConfiguration {
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .seconds(30)
        configuration.requestHardTimeout = .seconds(60)
        return configuration
    }

    static func record(_ name: AgentName, key: Ed25519.PrivateKey) throws -> SignedAgentRecord {
        let now = UInt64(Date().timeIntervalSince1970)
        return try AgentRecord(
            name: name, publicKey: key.publicKey, seq: 1, timestamp: now, ttl: 3600,
            addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/4001")], protocols: []
        ).signed(with: key)
    }

    @Test("two of the first three candidates unreachable: the record still reaches three peers")
    func unreachableReplaced() async throws {
        let network = DHTLoopbackNetwork()
        let publisher = try await network.addNode(configuration: Self.configuration())
        var replicas: [DHTLoopbackNetwork.Node] = []
        for _ in 0..<4 { replicas.append(try await network.addNode(configuration: Self.configuration())) }
        let key = Ed25519.PrivateKey()
        let name = try AgentName("replaced-replica.agent")
        let record = try Self.record(name, key: key)

        let candidates = [
            try Self.unreachablePeer(), KademliaPeer(id: replicas[0].peerID, addresses: [replicas[0].address]),
            try Self.unreachablePeer(), KademliaPeer(id: replicas[1].peerID, addresses: [replicas[1].address]),
            KademliaPeer(id: replicas[2].peerID, addresses: [replicas[2].address]),
            KademliaPeer(id: replicas[3].peerID, addresses: [replicas[3].address]),
        ]
        let (stored, failures) = await publisher.dht.put(record, replicas: 3, from: candidates)
        #expect(Set(stored) == Set([replicas[0].peerID, replicas[1].peerID, replicas[2].peerID]))
        #expect(failures.count == 2)
        #expect(failures.allSatisfy { !$0.refused }, "\(failures)")
        let now = UInt64(Date().timeIntervalSince1970)
        for replica in replicas.prefix(3) {
            #expect(try replica.dht.store.get(name, now: now)?.record.seq == 1)
        }
        // Three stored: the fourth answered peer was never asked.
        #expect(try replicas[3].dht.store.get(name, now: now) == nil)
        try await network.shutdown()
    }

    @Test("a refusal is the replica's verdict: it is not replaced by a peer further from the key")
    func refusalNotReplaced() async throws {
        let network = DHTLoopbackNetwork()
        let publisher = try await network.addNode(configuration: Self.configuration())
        // The refuser's clock is 10 days ahead: it finds the record expired and refuses it.
        let refuser = try await network.addNode(configuration: Self.configuration(), unixClock: { UInt64(Date().timeIntervalSince1970) + 10 * 24 * 3600 })
        let other = try await network.addNode(configuration: Self.configuration())
        let name = try AgentName("refused-replica.agent")
        let record = try Self.record(name, key: Ed25519.PrivateKey())

        let candidates = [
            KademliaPeer(id: refuser.peerID, addresses: [refuser.address]),
            KademliaPeer(id: other.peerID, addresses: [other.address]),
        ]
        let (stored, failures) = await publisher.dht.put(record, replicas: 1, from: candidates)
        #expect(stored.isEmpty)
        #expect(failures.count == 1)
        #expect(failures.first?.refused == true, "\(failures)")
        #expect(try other.dht.store.get(name, now: UInt64(Date().timeIntervalSince1970)) == nil)
        try await network.shutdown()
    }

    @Test("fewer reachable candidates than replicas: every candidate is tried once, none twice")
    func candidatesExhausted() async throws {
        let network = DHTLoopbackNetwork()
        let publisher = try await network.addNode(configuration: Self.configuration())
        let replica = try await network.addNode(configuration: Self.configuration())
        let name = try AgentName("exhausted-replicas.agent")
        let record = try Self.record(name, key: Ed25519.PrivateKey())
        let candidates = [
            try Self.unreachablePeer(), KademliaPeer(id: replica.peerID, addresses: [replica.address]),
            try Self.unreachablePeer(),
        ]
        let (stored, failures) = await publisher.dht.put(record, replicas: 5, from: candidates)
        #expect(stored == [replica.peerID])
        #expect(failures.count == 2)
        try await network.shutdown()
    }
}
