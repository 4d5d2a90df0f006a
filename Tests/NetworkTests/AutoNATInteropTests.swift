import AgentTesting
import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// AutoNAT v1 with py-libp2p 0.8.1 (its own `AutoNATService`) on loopback, 127.0.0.0/8 made public
/// on our side. py's server answers OK without dialing when it is connected to the requester
/// (quirk 27 of the NAT notes), which the second test shows.
@Suite("AutoNAT interop with py-libp2p", .enabled(if: Python.available), .serialized, .timeLimit(.minutes(2)))
struct AutoNATInteropTests {
    static let loopbackPublic = AddressScopeRule(publicNetworks: [try! IPNetwork("127.0.0.0/8")])

    /// Our client on a host listening on `listen`, connected to a py AutoNAT server; the first
    /// verdict and the client's state then.
    static func askPython(listen: String) async throws -> (Reachability, Int, ReachabilityTracker, Multiaddr) {
        let py = try PyPeer(script: "autonat_peer.py", ["serve"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        do {
            let bound = try await host.listen(on: try Multiaddr(listen))
            var configuration = AutoNATService.Configuration()
            configuration.tracker.scopeRule = loopbackPublic
            let service = AutoNATService.start(on: host, configuration: configuration)
            let events = host.events(label: "test")
            let ready = try await py.waitFor("ready")
            _ = try await host.connect(to: try Multiaddr(try #require((ready["addrs"] as? [String])?.first)))
            var verdict: (Reachability, Int)?
            for await event in events {
                if case .reachabilityChanged(let reachability, let confidence) = event {
                    verdict = (reachability, confidence)
                    break
                }
            }
            let result = try #require(verdict)
            let tracker = service.status.tracker
            await py.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            return (result.0, result.1, tracker, bound)
        } catch {
            await py.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
    }

    @Test("our client asks a py-libp2p server: a reachable node is told OK at its listen address")
    func ourClientReachable() async throws {
        let (verdict, confidence, tracker, bound) = try await Self.askPython(listen: "/ip4/127.0.0.1/tcp/0")
        #expect(verdict == .public && confidence == 1)
        let answer = try #require(tracker.answers.first)
        #expect(answer.status == .ok && answer.address == bound)
    }

    @Test("quirk 27: py-libp2p answers OK for an address where nobody listens, since it never dials")
    func ourClientUnreachableIsToldOK() async throws {
        // We listen on 127.0.0.2 and connect from 127.0.0.1: the address on our observed IP,
        // 127.0.0.1 with our port, has no listener. Our own server answers E_DIAL_ERROR here
        // (AutoNATServiceTests); py answers OK because its `host.connect` returns the connection
        // the request came on.
        let (verdict, _, tracker, bound) = try await Self.askPython(listen: "/ip4/127.0.0.2/tcp/0")
        let answer = try #require(tracker.answers.first)
        guard case .tcp(let port)? = bound.components.last else { throw VectorError("no port") }
        let unreachable = try Multiaddr("/ip4/127.0.0.1/tcp/\(port)")
        #expect(answer.status == .ok && answer.address == unreachable)
        #expect(verdict == .public, "py's OK is evidence to us: one py server makes a NATed node think it is public")
    }

    @Test(
        "a py-libp2p client asks our server: OK at its address, E_DIAL_ERROR for a closed port, E_DIAL_REFUSED for another IP"
    )
    func theirClientOurServer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        var configuration = AutoNATServer.Configuration()
        configuration.policy.scopeRule = Self.loopbackPublic
        // Generous: a loaded CI machine must not turn a reachable dial-back into E_DIAL_ERROR.
        configuration.dialTimeout = .seconds(10)
        let server = AutoNATServer.register(on: host, configuration: configuration)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let closed = try await AddressProbeTests.closedPort(group)
        let py = try PyPeer(
            script: "autonat_peer.py",
            [
                "ask", bound.appending(.p2p(host.peerID.multihash)).description,
                "--addrs", "/ip4/127.0.0.1/tcp/\(closed)",
                "--addrs", "/ip4/127.0.0.2/tcp/4001",
            ])
        do {
            _ = try await py.waitFor("done", timeout: .seconds(60))
            let answers = py.events.filter { $0["event"] as? String == "answer" }
            #expect(answers.map { $0["status"] as? Int } == [100, 101], "\(py.events.map(\.fields))")
            #expect(server.counters.answers == [.dialError: 1, .dialRefused: 1])
        } catch {
            await py.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        await py.stop()
        // A py client that names its own listen address is dialled back and told OK.
        let second = try PyPeer(
            script: "autonat_peer.py",
            ["ask", bound.appending(.p2p(host.peerID.multihash)).description, "--addrs", "SELF"])
        do {
            _ = try await second.waitFor("done", timeout: .seconds(60))
            let answer = try #require(second.events.first { $0["event"] as? String == "answer" })
            let ready = try #require(second.events.first { $0["event"] as? String == "ready" })
            let own = try #require((ready["addrs"] as? [String])?.first)
            #expect(answer["status"] as? Int == 0)
            #expect(
                (answer["addr"] as? String).map { own.hasPrefix($0 + "/p2p/") } == true, "\(answer.fields) vs \(own)")
        } catch {
            await second.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        await second.stop()
        await host.shutdown()
        try await group.shutdownGracefully()
    }
}
