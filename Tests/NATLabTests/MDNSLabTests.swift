import AgentTesting
import Foundation
import Testing

/// mDNS discovery (spec/network.md, "mDNS") between two agentd with `--mdns` and no bootstrap
/// peers, in two network namespaces on one bridge (the NAT lab's "internet": the relay node and a
/// public host, 198.18.0.1 and 198.18.0.2, and with IPv6 fd00:198:18::1 and ::2). Multicast stays
/// inside the lab's namespaces.
@Suite(
    "mDNS discovery between two agentd on one bridge", .serialized,
    .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)), .timeLimit(.minutes(3)))
struct MDNSLabTests {
    /// Polls `agentctl peers --json` of `daemon` until `peer` is connected (at most 30 s).
    static func waitForPeer(_ daemon: NATLab.Daemon, _ peer: String) async throws -> [String: Any]? {
        for _ in 0..<150 {
            let peers = try daemon.agentctl("peers", "--json").json()["peers"] as? [[String: Any]] ?? []
            if let found = peers.first(where: { $0["peer_id"] as? String == peer }) { return found }
            try await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }

    @Test("two agentd with --mdns and no bootstrap find each other, connect, and resolve each other's names")
    func discovery() async throws {
        try await NATLab.with(nat: .cone, publicHosts: 1) { lab in
            let ip = lab.addresses
            let a = try await lab.startAgentd(in: .relay, arguments: ["--mdns", "--name", "a"])
            let b = try await lab.startAgentd(in: .publicHost(1), arguments: ["--mdns", "--name", "b"])
            // Each dials what the other announced (both may dial at once: one connection stays).
            let atA = try #require(try await Self.waitForPeer(a, b.peerID), "a never connected to b")
            #expect(atA["path"] as? String == "direct")
            #expect((atA["addr"] as? String)?.hasPrefix("/ip4/\(ip.publicHost(1))/tcp/") == true, "\(atA)")
            #expect(try await Self.waitForPeer(b, a.peerID) != nil)
            try await Self.expectResolution([(a, "b.agent", b), (b, "a.agent", a)])
        }
    }

    /// Names resolve both ways once each DHT has taken the other into its table and the node
    /// republished its name there (no bootstrap node took part).
    static func expectResolution(_ pairs: [(NATLab.Daemon, String, NATLab.Daemon)]) async throws {
        for (daemon, name, other) in pairs {
            var resolved: ProcessRunner.Result?
            for _ in 0..<150 {
                let attempt = try daemon.agentctl(["resolve", name, "--json", "--no-cache"], timeout: 30)
                resolved = attempt
                if attempt.status == 0 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let result = try #require(resolved)
            #expect(result.status == 0, "resolve \(name): \(result.stdoutText) \(result.stderr)")
            if result.status == 0 {
                #expect(try result.json()["peer_id"] as? String == other.peerID, "\(result.stdoutText)")
            }
        }
    }

    /// IPv6 (ff02::fb): both listen on IPv6 only, so their IPv4 mDNS has nothing to announce and
    /// answers no query; they can only find each other through the IPv6 group on the bridge, and
    /// each must dial the other's unique-local address (fd00:198:18::/64, the link's prefix).
    @Test("two agentd with --mdns listening on IPv6 only find each other over ff02::fb, connect over IPv6, and resolve each other's names")
    func discoveryIPv6() async throws {
        try await NATLab.with(nat: .cone, publicHosts: 1, ipv6: true) { lab in
            let ip = lab.addresses
            let listen = ["--listen", "/ip6/::/tcp/4001", "--listen", "/ip6/::/udp/4001/quic-v1"]
            let a = try await lab.startAgentd(in: .relay, arguments: ["--mdns", "--name", "a"] + listen)
            let b = try await lab.startAgentd(in: .publicHost(1), arguments: ["--mdns", "--name", "b"] + listen)
            let atA = try #require(try await Self.waitForPeer(a, b.peerID), "a never connected to b")
            #expect(atA["path"] as? String == "direct")
            #expect((atA["addr"] as? String)?.hasPrefix("/ip6/\(ip.ipv6(of: .publicHost(1))!)/") == true, "\(atA)")
            let atB = try #require(try await Self.waitForPeer(b, a.peerID), "b never connected to a")
            #expect((atB["addr"] as? String)?.hasPrefix("/ip6/\(ip.ipv6(of: .relay)!)/") == true, "\(atB)")
            try await Self.expectResolution([(a, "b.agent", b), (b, "a.agent", a)])
        }
    }

    @Test("--mdns on a node listening on loopback only is refused with a clear error")
    func loopbackOnly() async throws {
        try await NATLab.with(nat: .cone) { lab in
            do {
                _ = try await lab.startAgentd(
                    in: .relay, arguments: ["--mdns", "--listen", "/ip4/127.0.0.1/tcp/4001"], readyTimeout: .seconds(10))
                Issue.record("agentd started with --mdns on loopback only")
            } catch {
                #expect("\(error)".contains("no ready line"), "\(error)")
            }
        }
    }
}
