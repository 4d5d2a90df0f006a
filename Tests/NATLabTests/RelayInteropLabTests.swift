import AgentTesting
import Foundation
import Testing

/// Circuit relay v2 and DCUtR between agentd and py-libp2p 0.8.1 through the NAT lab: py's relay
/// as our relay, our relay serving py peers, and a hole punch with a py peer behind the other NAT.
/// py's quirks that shape these tests: ../shared/notes/nat-traversal.md.
@Suite(
    "Relay and hole punching with py-libp2p in the NAT lab", .serialized,
    .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)), .timeLimit(.minutes(3)))
struct RelayInteropLabTests {
    @Test("py's relay as ours: agentd B reserves at it (voucher checked), agentd A reaches B through it and pings")
    func pyRelay() async throws {
        try await NATLab.with(nat: .symmetric) { lab in
            // A py relay holds 4 reservations in total, and py's dialers take one each (quirk 3).
            let relay = try await lab.startPyRelay(maxReservations: 16)
            let b = try await lab.startAgentd(in: .hostB, arguments: ["--relay", relay.address])
            let reservation = try await b.process.waitFor("reservation", timeout: .seconds(30))
            #expect(reservation["relay"] as? String == relay.peerID)
            #expect((reservation["addrs"] as? [String])?.first == "\(relay.address)/p2p-circuit", "\(reservation.fields)")
            let nat = try b.agentctl("nat", "--json").json()
            let held = (nat["relay_reservations"] as? [[String: Any]]) ?? []
            #expect(held.first?["relay"] as? String == relay.peerID, "\(nat)")

            let a = try await lab.startAgentd(in: .hostA)
            let circuit = "\(relay.address)/p2p-circuit/p2p/\(b.peerID)"
            let connect = try a.agentctl(["connect", circuit, "--json"], timeout: 30)
            #expect(connect.status == 0, "connect through py's relay: \(connect.stdoutText) \(connect.stderr)")
            let ping = try a.agentctl(["ping", circuit, "--count", "3", "--json"], timeout: 30)
            #expect(ping.status == 0, "ping through py's relay: \(ping.stderr)")
            #expect((try ping.json()["rtts_ms"] as? [Double])?.count == 3)
            #expect(try ping.json()["path"] as? String == "relayed", "\(ping.stdoutText)")
        }
    }

    @Test("our relay serving py peers: a py peer behind NAT B reserves at agentd, a py peer behind NAT A dials it through agentd and pings")
    func ourRelayServesPy() async throws {
        try await NATLab.with(nat: .symmetric) { lab in
            let relay = try await lab.startAgentd(in: .relay, arguments: ["--relay-service", "on"])
            let b = try await lab.startPyNATPeer(in: .hostB, relay: relay.address, dcutr: false)
            #expect(b.circuitAddress == "\(relay.address)/p2p-circuit/p2p/\(b.peerID)")
            let expire = b.reservation["expire"] as? Int ?? 0
            #expect(expire > Int(Date().timeIntervalSince1970) + 3000, "\(b.reservation.fields)")
            let a = try lab.runPyPeer(in: .hostA, ["dial", b.circuitAddress, "--ping", "2", "--timeout", "20"])
            _ = try await a.waitFor("done", timeout: .seconds(30))
            #expect(a.events.filter { $0["event"] as? String == "ping" }.count == 2, "\(a.events.map(\.fields))")
            let usage = try relay.agentctl("nat", "--json").json()
            let service = usage["relay_service"] as? [String: Any] ?? [:]
            #expect((service["circuits_relayed"] as? Int ?? 0) >= 1, "\(usage)")
        }
    }

    @Test("DCUtR with a py peer behind the other NAT (cone): agentd A dials py B over our relay; py B starts the punch; a direct connection comes up")
    func holePunchWithPy() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let relay = try await lab.startAgentd(in: .relay, arguments: ["--relay-service", "on"])
            let b = try await lab.startPyNATPeer(in: .hostB, relay: relay.address, dcutr: true)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address])
            let connect = try a.agentctl(["connect", b.circuitAddress, "--json"], timeout: 30)
            #expect(connect.status == 0, "connect to py B through our relay: \(connect.stdoutText) \(connect.stderr)")
            // py first dials B's private addresses for up to 10 s (quirk 19), then runs the exchange.
            let punch = try await a.process.waitFor("hole_punch", timeout: .seconds(60)) {
                $0["result"] as? String == "direct"
            }
            #expect(punch["peer"] as? String == b.peerID)
            let flow = try await lab.waitForDirectFlow(on: .routerA, timeout: .seconds(20))
            #expect(flow.original.destinationPort == 4001, "\(flow)")
            let peers = try a.agentctl("peers", "--json").json()["peers"] as? [[String: Any]] ?? []
            #expect(peers.contains { $0["peer_id"] as? String == b.peerID && $0["path"] as? String == "direct" }, "\(peers)")
        }
    }
}
