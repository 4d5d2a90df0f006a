import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// The AutoNAT client running on a host against real servers over loopback (127.0.0.0/8 made
/// public on both sides, as `--public-cidr 127.0.0.0/8` would).
@Suite("AutoNAT client service over loopback", .timeLimit(.minutes(1)))
struct AutoNATServiceTests {
    static let loopbackPublic = AddressScopeRule(publicNetworks: [try! IPNetwork("127.0.0.0/8")])

    static func server(_ group: EventLoopGroup) async throws -> (Host, Multiaddr) {
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        var configuration = AutoNATServer.Configuration()
        configuration.policy.scopeRule = loopbackPublic
        // Generous: a loaded CI machine must not turn a reachable dial-back into E_DIAL_ERROR.
        configuration.dialTimeout = .seconds(10)
        AutoNATServer.register(on: host, configuration: configuration)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        return (host, bound.appending(.p2p(host.peerID.multihash)))
    }

    static func client(_ group: EventLoopGroup, listen: String) async throws -> (Host, AutoNATService) {
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        _ = try await host.listen(on: try Multiaddr(listen))
        var configuration = AutoNATService.Configuration()
        configuration.tracker.scopeRule = loopbackPublic
        return (host, AutoNATService.start(on: host, configuration: configuration))
    }

    /// The first `reachabilityChanged` on `events`.
    static func verdict(_ events: AsyncStream<HostEvent>) async -> (Reachability, Int)? {
        for await event in events {
            if case .reachabilityChanged(let reachability, let confidence) = event { return (reachability, confidence) }
        }
        return nil
    }

    @Test("a reachable node learns it is public from the servers it connects to, and ends with its host")
    func publicVerdict() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (serverA, addressA) = try await Self.server(group)
        let (serverB, addressB) = try await Self.server(group)
        let (client, service) = try await Self.client(group, listen: "/ip4/127.0.0.1/tcp/0")
        let events = client.events(label: "test")
        _ = try await client.connect(to: addressA)
        _ = try await client.connect(to: addressB)
        var verdicts: [(Reachability, Int)] = []
        var iterator = events.makeAsyncIterator()
        while verdicts.count < 2, let event = await iterator.next() {
            if case .reachabilityChanged(let reachability, let confidence) = event {
                verdicts.append((reachability, confidence))
            }
        }
        #expect(verdicts.map(\.0) == [.public, .public])
        #expect(verdicts.map(\.1) == [1, 2])
        let status = service.status.tracker
        #expect(status.answers.count == 2 && status.answers.allSatisfy { $0.status == .ok })
        #expect(status.observedIPs == [try IPAddress("127.0.0.1")])
        await client.shutdown()
        // The host's events end with it (after what was emitted before; the suite's time limit
        // catches a stream that never finishes), and so does the client's task.
        while await iterator.next() != nil {}
        await serverA.shutdown()
        await serverB.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a node the servers cannot dial back learns it is private")
    func privateVerdict() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (server, address) = try await Self.server(group)
        // Listening on 127.0.0.2 but connecting from 127.0.0.1: the server sees 127.0.0.1, and
        // nobody listens there on our port (a NAT's outside address in miniature).
        let (client, service) = try await Self.client(group, listen: "/ip4/127.0.0.2/tcp/0")
        let events = client.events(label: "test")
        _ = try await client.connect(to: address)
        let verdict = await Self.verdict(events)
        #expect(verdict?.0 == .private && verdict?.1 == 1)
        #expect(service.status.tracker.answers.last?.status == .dialError)
        await client.shutdown()
        await server.shutdown()
        try await group.shutdownGracefully()
    }
}
