import AgentTesting
import Foundation
import Testing

/// Circuit relay v2 and DCUtR through real NATs (the NAT lab), agentd in every role: B behind one
/// NAT reserves at the relay and registers `b.agent`; A behind the other resolves it, reaches B
/// over the relay, and DCUtR brings a direct connection through cone NATs; through symmetric NATs
/// the punch fails within its attempts and the relayed connection keeps working.
@Suite(
    "Relay and hole punching in the NAT lab", .serialized,
    .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)), .timeLimit(.minutes(3)))
struct RelayLabTests {
    /// The relay/bootstrap node and B, reserved at it, with b.agent registered.
    static func relayAndB(_ lab: NATLab) async throws -> (relay: NATLab.Daemon, b: NATLab.Daemon, circuit: String) {
        let relay = try await lab.startAgentd(in: .relay, arguments: ["--relay-service", "on"])
        let b = try await lab.startAgentd(in: .hostB, arguments: ["--bootstrap", relay.address, "--relay", relay.address])
        let reservation = try await b.process.waitFor("reservation", timeout: .seconds(30))
        #expect(reservation["relay"] as? String == relay.peerID)
        let circuit = "\(relay.address)/p2p-circuit"
        #expect((reservation["addrs"] as? [String])?.first == circuit, "\(reservation.fields)")
        let register = try b.agentctl(["register", "b", "--json"], timeout: 30)
        #expect(register.status == 0, "register b: \(register.stdoutText) \(register.stderr)")
        return (relay, b, circuit)
    }

    @Test("cone NATs: A resolves b.agent to its circuit address, connects over the relay, then DCUtR brings a direct connection (conntrack: WAN to WAN); new streams use it")
    func cone() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let ip = lab.addresses
            let (relay, b, circuit) = try await Self.relayAndB(lab)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address])
            let resolved = try a.agentctl(["resolve", "b.agent", "--json"], timeout: 30)
            #expect(resolved.status == 0, "resolve: \(resolved.stdoutText) \(resolved.stderr)")
            let addrs = try resolved.json()["addresses"] as? [String] ?? []
            #expect(addrs.contains(circuit), "b.agent's addresses: \(addrs)")

            let ping = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(ping.status == 0, "ping b.agent: \(ping.stdoutText) \(ping.stderr)")
            // The hole punch, on both sides: B started it (it accepted the relayed connection).
            let punchB = try await b.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punchB["peer"] as? String == a.peerID)
            #expect(punchB["result"] as? String == "direct", "\(punchB.fields)")
            #expect(punchB["attempts"] as? Int == 1, "\(punchB.fields)")
            let punchA = try await a.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punchA["result"] as? String == "direct", "\(punchA.fields)")
            // The routers track the WAN-to-WAN flow, both ways.
            let flowA = try await lab.waitForDirectFlow(on: .routerA)
            let flowB = try await lab.waitForDirectFlow(on: .routerB)
            #expect(flowA.original.destinationPort == 4001 && flowA.isPortPreserved, "\(flowA)")
            #expect(flowB.original.destinationPort == 4001 && flowB.isPortPreserved, "\(flowB)")
            // A's connection to B is now direct, at router B's WAN address.
            let peers = try a.agentctl("peers", "--json").json()["peers"] as? [[String: Any]] ?? []
            let toB = peers.filter { $0["peer_id"] as? String == b.peerID }
            #expect(toB.contains { $0["path"] as? String == "direct" && $0["addr"] as? String == "/ip4/\(ip.routerBWAN)/tcp/4001" }, "\(toB)")
            let again = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(try again.json()["path"] as? String == "direct", "\(again.stdoutText)")
        }
    }

    @Test("symmetric NATs: the punch fails within its 3 attempts, the relayed connection keeps working (resolve, ping b.agent relayed)")
    func symmetric() async throws {
        try await NATLab.with(nat: .symmetric) { lab in
            let (relay, b, circuit) = try await Self.relayAndB(lab)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address])
            let ping = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(ping.status == 0, "ping b.agent: \(ping.stdoutText) \(ping.stderr)")
            #expect(try ping.json()["path"] as? String == "relayed", "\(ping.stdoutText)")
            let punch = try await b.process.waitFor("hole_punch", timeout: .seconds(60))
            #expect(punch["result"] as? String == "failed", "\(punch.fields)")
            #expect(punch["attempts"] as? Int == 3, "\(punch.fields)")
            #expect(try lab.directFlows(on: .routerA).allSatisfy { $0.state != "ESTABLISHED" })
            let resolved = try a.agentctl(["resolve", "b.agent", "--json"], timeout: 30)
            #expect(resolved.status == 0)
            #expect((try resolved.json()["addresses"] as? [String] ?? []).contains(circuit))
            let after = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(after.status == 0, "ping after the failed punch: \(after.stderr)")
            #expect(try after.json()["path"] as? String == "relayed", "\(after.stdoutText)")
        }
    }

    @Test("a relay restart: B loses its reservation, reserves again at the restarted relay, and A reaches b.agent through it again")
    func relayRestart() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let (relay, b, circuit) = try await Self.relayAndB(lab)
            await lab.stop(relay.process)
            let lost = try await b.process.waitFor("reservation_lost", timeout: .seconds(30))
            #expect(lost["relay"] as? String == relay.peerID)
            let again = try await lab.startAgentd(
                in: .relay, arguments: ["--relay-service", "on"], dataDirectory: relay.dataDirectory)
            #expect(again.address == relay.address)
            // The second reservation line (the first came before the restart): B retries 1, 2, 4 …
            // s apart, so it comes within about a minute of the relay's return.
            var renewed: PyEvent?
            for _ in 0..<900 {
                let reservations = b.process.events.filter { $0["event"] as? String == "reservation" }
                if reservations.count >= 2 {
                    renewed = reservations.last
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let renewal = try #require(renewed, "no new reservation: \(b.process.events.map(\.fields))")
            #expect(renewal["relay"] as? String == relay.peerID)
            #expect((renewal["addrs"] as? [String])?.first == circuit)
            // The restarted relay lost what the DHT stored: B republishes its record (its addresses
            // changed and came back), and A finds b.agent there.
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address])
            var resolved: ProcessRunner.Result?
            for _ in 0..<60 {
                resolved = try a.agentctl(["resolve", "b.agent", "--json", "--no-cache"], timeout: 30)
                if resolved?.status == 0 { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(resolved?.status == 0, "resolve after the relay restart: \(resolved?.stderr ?? "")")
            let ping = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(ping.status == 0, "\(ping.stderr)")
        }
    }
}
