import Foundation
import Identity
import Multiformats
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// The client side of provider records (DHT+Providers.swift): ADD_PROVIDER to the closest peers,
/// GET_PROVIDERS lookups, over a small network of real hosts on loopback.
@Suite("DHT provider records: provide and find")
struct DHTProviderTests {
    static let key: [UInt8] = [0x12, 0x20] + SHA256.hash(Array("/agent/cap/translate".utf8))

    /// Waits (up to 30 s) for `condition`, checking after each short pause: the remote end of an
    /// ADD_PROVIDER stores it after our side has closed the stream, with no answer to wait for.
    static func eventually(_ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    static func stores(_ node: DHTLoopbackNetwork.Node, _ provider: PeerID, for key: [UInt8] = key) -> Bool {
        node.dht.state.withLockedValue { $0.providers.providers(of: key, now: .now(), limit: 20) }.contains {
            $0.id == provider
        }
    }

    /// Request timeouts far above a loopback round trip: on the 2-core CI machine under load a
    /// 2 s request can time out, and the lookup then leaves that peer out (these tests are about
    /// what reaches whom, not about timeouts).
    static func patientConfiguration() -> DHTConfiguration {
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .seconds(10)
        configuration.requestHardTimeout = .seconds(20)
        return configuration
    }

    /// `count` patient nodes, each bootstrapped from node 0, then a self-lookup round.
    static func network(count: Int) async throws -> DHTLoopbackNetwork {
        let network = DHTLoopbackNetwork()
        for index in 0..<count {
            let node = try await network.addNode(configuration: patientConfiguration())
            if index > 0 { await node.dht.bootstrap([network.nodes[0].address]) }
        }
        for node in network.nodes { _ = await node.dht.lookupClosestPeers(to: node.peerID.multihash.bytes) }
        return network
    }

    @Test("a provider announced by one node is found, with its address, by a node that joined later")
    func provideAndFind() async throws {
        let network = try await Self.network(count: 5)
        let provider = network.nodes[1]
        let report = await provider.dht.provide(Self.key)
        #expect(!report.sentTo.isEmpty)
        #expect(report.failures.isEmpty, "\(report.failures)")
        #expect(Self.stores(provider, provider.peerID), "the provider keeps its own record")
        // Every peer it went to stores it (the kad server records only the sender itself).
        for peer in report.sentTo {
            let node = try #require(network.nodes.first { $0.peerID == peer })
            #expect(try await Self.eventually { Self.stores(node, provider.peerID) }, "\(peer)")
        }

        // A newcomer holds nothing itself: only a GET_PROVIDERS lookup can find it.
        let newcomer = try await network.addNode(configuration: Self.patientConfiguration())
        await newcomer.dht.bootstrap([network.nodes[0].address])
        #expect(!Self.stores(newcomer, provider.peerID))
        let found = await newcomer.dht.findProviders(Self.key)
        #expect(found.map(\.id) == [provider.peerID])
        // The address the provider announced (its listen address, without /p2p).
        #expect(
            found.first?.addresses.contains { provider.address.description.hasPrefix($0.description + "/p2p/") } == true,
            "\(found)")

        // Another capability has no providers.
        let other: [UInt8] = [0x12, 0x20] + SHA256.hash(Array("/agent/cap/summarize".utf8))
        #expect(await newcomer.dht.findProviders(other).isEmpty)
        try await network.shutdown()
    }

    @Test("findProviders stops at its limit and lists each provider once")
    func limit() async throws {
        let network = try await Self.network(count: 5)
        // Each provider holds its own record at once; node 4's lookup asks all four others.
        for index in 1...3 { _ = await network.nodes[index].dht.provide(Self.key) }
        let all = await network.nodes[4].dht.findProviders(Self.key)
        #expect(Set(all.map(\.id)) == Set((1...3).map { network.nodes[$0].peerID }))
        #expect(all.count == 3)
        let two = await network.nodes[4].dht.findProviders(Self.key, limit: 2)
        #expect(two.count == 2)
        try await network.shutdown()
    }
}
