import AgentTesting
import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// Interop with py-libp2p 0.8.1 over QUIC v1 (aioquic 1.7.2, pinned with it), both directions:
/// the TLS handshake with the libp2p certificate each way, then identify, ping and perf on QUIC
/// streams. py accepts forged certificate extensions (spec/network.md, "QUIC"), so these tests
/// prove the wire format, not our verifier; `QUICCertificateTests` proves that.
@Suite("interop with py-libp2p over QUIC", .enabled(if: Python.available), .serialized, .timeLimit(.minutes(2)))
struct QUICPyInteropTests {
    @Test("we dial py-libp2p over QUIC: connect, ping, identify both ways, perf")
    func weDialThem() async throws {
        let py = try PyPeer(["listen", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        Perf.register(on: host)
        let ourAddress = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"))
        do {
            let ready = try await py.waitFor("ready")
            let addrText = try #require((ready["addrs"] as? [String])?.first)
            #expect(addrText.contains("/quic-v1/"))
            let pyPeer = try PeerID(try #require(ready["peer_id"] as? String))
            let connection = try await host.connect(to: try Multiaddr(addrText))
            #expect(connection.remotePeer == pyPeer)
            #expect(connection.quic != nil)

            let rtts = try await Ping.ping(host, peer: pyPeer, count: 5)
            #expect(rtts.count == 5)

            var info: IdentifyInfo?
            for _ in 0..<250 where info == nil {
                info = host.peerInfo(pyPeer)
                if info == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            let identified = try #require(info, "py-libp2p never answered identify over QUIC")
            #expect(identified.agentVersion.contains("py-libp2p"))
            #expect(identified.protocols.contains(Ping.protocolID))

            let theirView = try await py.waitFor("identify") { ($0["peer_id"] as? String) == host.peerID.description }
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

    @Test("py-libp2p dials us over QUIC: identify, ping, perf")
    func theyDialUs() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        Perf.register(on: host)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"))
        let address = bound.appending(.p2p(host.peerID.multihash))
        let py = try PyPeer([
            "dial", address.description, "--identify", "--ping", "5", "--perf-upload", "1000000",
            "--perf-download", "1000000",
        ])
        let status = await py.waitForExit()
        let events = py.events
        #expect(status == 0, "py-libp2p QUIC dial failed: \(events)")
        let identify = try #require(events.first { $0["event"] as? String == "identify" })
        #expect(identify["peer_id"] as? String == host.peerID.description)
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
