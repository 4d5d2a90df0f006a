import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Network
import Resolution
import Testing

@testable import Application

extension CardServiceTests {
    /// A node as agentd composes it: host, DHT (in-memory records), card service over both.
    struct DHTNode {
        let host: Network.Host
        let dht: DHT
        let cards: CardService
        let address: Multiaddr
    }

    static func dhtNode(_ group: EventLoopGroup, bootstrap: Multiaddr?) async throws -> DHTNode {
        var hostConfiguration = Network.Host.Configuration()
        hostConfiguration.limits = .loopbackTestNetwork
        var logger = Logger(label: "test.cards.dht")
        logger.logLevel = .critical
        let key = Ed25519.PrivateKey()
        let host = Network.Host(identity: key, group: group, configuration: hostConfiguration, logger: logger)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        var configuration = DHTConfiguration()
        configuration.mode = .server
        // Far above a loopback round trip: under load on 2 cores a 2 s request can time out and a
        // lookup then leaves that peer (maybe the provider) out.
        configuration.requestTimeout = .seconds(10)
        configuration.requestHardTimeout = .seconds(20)
        let dht = DHT(host: host, store: try RecordStore(path: nil), configuration: configuration, logger: logger)
        dht.start()
        host.spawn("dht service") { try? await dht.run(maintenance: false) }
        if let bootstrap { await dht.bootstrap([bootstrap]) }
        let cards = CardService(
            host: host, dht: dht, store: try CardStore(path: nil), identity: key, logger: logger,
            now: { UInt64(Date().timeIntervalSince1970) })
        cards.start()
        return DHTNode(host: host, dht: dht, cards: cards, address: bound.appending(.p2p(host.peerID.multihash)))
    }

    @Test("over four DHT nodes: cards set under registered names are found by capability and range, and fetched by name")
    func discoveryOverDHT() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let first = try await Self.dhtNode(group, bootstrap: nil)
        var nodes = [first]
        for _ in 1..<4 { nodes.append(try await Self.dhtNode(group, bootstrap: first.address)) }
        _ = try await nodes[1].dht.register(Self.alice)
        _ = try await nodes[2].dht.register(Self.carol)
        try await nodes[1].cards.set(Self.translate, agent: Self.alice)
        var major = Self.translate
        major.version = try SemanticVersion("2.0.0-beta.1")
        try await nodes[2].cards.set(major, agent: Self.carol)

        let all = try await nodes[3].cards.find(capability: "translate")
        #expect(all.found.map(\.agent) == [Self.alice, Self.carol])
        #expect(all.found.map(\.peer) == [nodes[1].host.peerID, nodes[2].host.peerID])
        #expect(all.dropped.isEmpty, "\(all.dropped)")
        #expect(try await nodes[3].cards.find(capability: "translate", versions: try VersionRange("^1")).found.map(\.agent) == [Self.alice])
        // A pre-release is found only by a range that names one of its MAJOR.MINOR.PATCH.
        #expect(try await nodes[3].cards.find(capability: "translate", versions: try VersionRange(">=1")).found.map(\.agent) == [Self.alice])
        #expect(
            try await nodes[3].cards.find(capability: "translate", versions: try VersionRange(">=2.0.0-alpha")).found.map(\.agent)
                == [Self.carol])

        // By name: resolve the record, fetch from its peer, verify against its key.
        let record = try await nodes[0].dht.resolve(Self.carol).record.record
        let fetched = try await nodes[0].cards.cards(of: Self.carol, at: record.peerID, addresses: record.addresses)
        #expect(fetched.cards.map(\.card) == [major])
        // Republishing announces each local capability again.
        #expect(try await nodes[1].cards.republishProviders() == ["translate"])

        for node in nodes { await node.host.shutdown() }
        try await group.shutdownGracefully()
    }
}
