import AgentTesting
import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// Interop with py-libp2p 0.8.1 (PyPI `libp2p`, pinned in requirements-test.txt), a peer nobody here
/// wrote: Noise + yamux connections, ping, identify and perf, in both directions.
@Suite("interop with py-libp2p", .enabled(if: Python.available), .serialized, .timeLimit(.minutes(2)))
struct PyLibp2pInteropTests {
    @Test("we dial py-libp2p: connect, ping, identify, perf")
    func weDialThem() async throws {
        let py = try PyPeer(["listen"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        Perf.register(on: host)
        let ourAddress = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        do {
            let ready = try await py.waitFor("ready")
            let addrText = try #require((ready["addrs"] as? [String])?.first)
            let pyPeer = try PeerID(try #require(ready["peer_id"] as? String))
            let connection = try await host.connect(to: try Multiaddr(addrText))
            #expect(connection.remotePeer == pyPeer)

            let rtts = try await Ping.ping(host, peer: pyPeer, count: 5)
            #expect(rtts.count == 5)

            var info: IdentifyInfo?
            for _ in 0..<200 where info == nil {
                info = host.peerInfo(pyPeer)
                if info == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            let identified = try #require(info, "py-libp2p never answered identify")
            #expect(identified.agentVersion.contains("py-libp2p"))
            #expect(identified.protocols.contains(Ping.protocolID))
            #expect(identified.listenAddresses.map(\.description).contains { addrText.hasPrefix($0) })

            // py identifies us too and reports what it saw.
            let theirView = try await py.waitFor("identify") { ($0["peer_id"] as? String) == host.peerID.description }
            let protocols = theirView["protocols"] as? [String] ?? []
            #expect(protocols.contains(Ping.protocolID) && protocols.contains(Identify.protocolID))
            #expect((theirView["listen_addrs"] as? [String] ?? []).contains { $0.hasPrefix(ourAddress.description) })
            #expect((theirView["agent_version"] as? String)?.hasPrefix("agentd/") == true)

            let perf = try await Perf.run(host, peer: pyPeer, upload: 2_000_000, download: 2_000_000)
            #expect(perf.uploadBytes == 2_000_000 && perf.downloadBytes == 2_000_000)
        } catch {
            await py.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        await py.stop()
        await host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("py-libp2p dials us: identify, ping, perf")
    func theyDialUs() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        Perf.register(on: host)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let address = bound.appending(.p2p(host.peerID.multihash))
        let py = try PyPeer(["dial", address.description, "--identify", "--ping", "5", "--perf-upload", "1000000", "--perf-download", "1000000"])
        let status = await py.waitForExit()
        let events = py.events
        #expect(status == 0, "py-libp2p dial failed: \(events)")
        let identify = try #require(events.first { $0["event"] as? String == "identify" })
        #expect(identify["peer_id"] as? String == host.peerID.description)
        #expect((identify["protocols"] as? [String] ?? []).contains(Perf.protocolID))
        #expect((identify["listen_addrs"] as? [String] ?? []).contains { $0.hasPrefix(bound.description) })
        #expect(events.filter { $0["event"] as? String == "ping" }.count == 5)
        let perf = try #require(events.first { $0["event"] as? String == "perf" })
        #expect((perf["upload_bytes"] as? Int) == 1_000_000)
        #expect((perf["download_bytes"] as? Int) == 1_000_000)
        #expect(events.last?["event"] as? String == "done")
        await host.shutdown()
        try await group.shutdownGracefully()
    }
}
