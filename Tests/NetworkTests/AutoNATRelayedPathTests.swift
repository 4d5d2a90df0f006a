import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// AutoNAT and relayed connections, over real sockets. Until the circuit transport exists, a
/// "relayed" connection is made the way that transport will hand one to the host: a channel given
/// to `HostCore.initializeInbound` with `path: .relayed` and a circuit remote address. Here the
/// channel is a plain loopback TCP connection; the host cannot tell, and the checks under test
/// read only `Connection.path`.
@Suite("AutoNAT over relayed connections", .timeLimit(.minutes(1)))
struct AutoNATRelayedPathTests {
    static let loopbackPublic = AddressScopeRule(publicNetworks: [try! IPNetwork("127.0.0.0/8")])

    /// A listener whose connections `host` takes as circuits through `relay`.
    static func relayedListener(into host: Host, relay: PeerID, group: EventLoopGroup) async throws -> Channel {
        let circuit = try Multiaddr("/ip4/127.0.0.9/tcp/4001/p2p/\(relay)/p2p-circuit")
        let core = host.core
        return try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try core.initializeInbound(
                        channel,
                        transport: TransportChannelInfo(
                            path: .relayed(relay: relay), remoteAddress: circuit, remoteIP: nil))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    static func address(_ channel: Channel, _ peer: PeerID) throws -> Multiaddr {
        try Multiaddr("/ip4/127.0.0.1/tcp/\(channel.localAddress!.port!)/p2p/\(peer)")
    }

    @Test("the server refuses a request that arrives over a relayed connection, and serves the same over a direct one")
    func serverRefusesRelayed() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = Host(identity: Ed25519.PrivateKey(), group: group)
        var configuration = AutoNATServer.Configuration()
        configuration.policy.scopeRule = Self.loopbackPublic
        configuration.dialTimeout = .seconds(10)
        let service = AutoNATServer.register(on: server, configuration: configuration)
        let direct = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let relay = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let circuits = try await Self.relayedListener(into: server, relay: relay, group: group)

        var answers: [AutoNATDialResponse] = []
        for via in [try Self.address(circuits, server.peerID), direct.appending(.p2p(server.peerID.multihash))] {
            let requester = Host(identity: Ed25519.PrivateKey(), group: group)
            let own = try await requester.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            _ = try await requester.connect(to: via)
            let stream = try await requester.newStream(to: server.peerID, protocols: [AutoNAT.protocolID])
            try await stream.writeLengthPrefixed(
                AutoNATMessage.encode(AutoNATDialRequest(peer: requester.peerID, addresses: [own])))
            let bytes = try #require(try await stream.readLengthPrefixed(maximumLength: AutoNAT.maximumMessageLength))
            answers.append(try AutoNATMessage.decodeResponse(bytes))
            stream.close()
            await requester.shutdown()
        }
        #expect(answers.map(\.status) == [.dialRefused, .ok])
        #expect(answers.first?.statusText.contains("relayed") == true)
        #expect(service.counters.answers == [.dialRefused: 1, .ok: 1])
        try await circuits.close()
        await server.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("the client never asks a server it reaches only over a relayed connection")
    func clientSkipsRelayedServers() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = Host(identity: Ed25519.PrivateKey(), group: group)
        _ = try await client.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        var clientConfiguration = AutoNATService.Configuration()
        clientConfiguration.tracker.scopeRule = Self.loopbackPublic
        let autonat = AutoNATService.start(on: client, configuration: clientConfiguration)
        var events = client.events(label: "test").makeAsyncIterator()
        let circuits = try await Self.relayedListener(
            into: client, relay: PeerID(publicKey: Ed25519.PrivateKey().publicKey), group: group)

        var servers: [Host] = []
        for _ in 0..<2 {
            let host = Host(identity: Ed25519.PrivateKey(), group: group)
            var configuration = AutoNATServer.Configuration()
            configuration.policy.scopeRule = Self.loopbackPublic
            configuration.dialTimeout = .seconds(10)
            AutoNATServer.register(on: host, configuration: configuration)
            servers.append(host)
        }
        let (relayedServer, directServer) = (servers[0], servers[1])
        // The first server reaches the client over a "circuit"; the client identifies it there.
        _ = try await relayedServer.connect(to: try Self.address(circuits, client.peerID))
        while let event = await events.next() {
            if case .identified(let peer, _, _) = event, peer == relayedServer.peerID { break }
        }
        // The second is dialled directly; its answer is the first evidence.
        let bound = try await directServer.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        _ = try await client.connect(to: bound.appending(.p2p(directServer.peerID.multihash)))
        while let event = await events.next() {
            if case .reachabilityChanged = event { break }
        }
        let tracker = autonat.status.tracker
        #expect(Array(tracker.servers.keys) == [directServer.peerID])
        #expect(tracker.answers.map(\.server) == [directServer.peerID])
        #expect(tracker.reachability == .public)
        await client.shutdown()
        for host in servers { await host.shutdown() }
        try await circuits.close()
        try await group.shutdownGracefully()
    }
}
