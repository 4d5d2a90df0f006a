import AgentTesting
import Foundation
import Testing

/// DCUtR over UDP in the NAT lab (spec/network.md, "Hole punching (DCUtR)"): every agentd listens
/// on QUIC only, so the relay, the relayed connection and the hole punch all run over UDP. Through
/// cone NATs the punch brings a direct QUIC connection (A dials from its QUIC listen port, B sends
/// random datagrams from its own); through symmetric NATs it fails and the relay keeps working.
/// (No "QUIC" in the suite's name: the Makefile's QUIC pass filters on it, this runs in the NAT
/// lab pass.)
@Suite(
    "Hole punching over UDP (QUIC) in the NAT lab", .serialized,
    .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)), .timeLimit(.minutes(3)))
struct UDPHolePunchLabTests {
    static let listen = ["--listen", "/ip4/0.0.0.0/udp/4001/quic-v1"]

    /// The relay/bootstrap node and B, reserved at it over QUIC, with b.agent registered.
    static func relayAndB(_ lab: NATLab) async throws -> (relay: NATLab.Daemon, b: NATLab.Daemon, circuit: String) {
        let relay = try await lab.startAgentd(in: .relay, arguments: ["--relay-service", "on"] + listen)
        #expect(relay.address.hasPrefix("/ip4/\(lab.addresses.relay)/udp/4001/quic-v1/p2p/"), "\(relay.address)")
        let b = try await lab.startAgentd(
            in: .hostB, arguments: ["--bootstrap", relay.address, "--relay", relay.address] + listen)
        let reservation = try await b.process.waitFor("reservation", timeout: .seconds(30))
        #expect(reservation["relay"] as? String == relay.peerID)
        let circuit = "\(relay.address)/p2p-circuit"
        #expect((reservation["addrs"] as? [String])?.first == circuit, "\(reservation.fields)")
        let register = try b.agentctl(["register", "b", "--json"], timeout: 30)
        #expect(register.status == 0, "register b: \(register.stdoutText) \(register.stderr)")
        return (relay, b, circuit)
    }

    @Test("cone NATs: A reaches b.agent over the relay, then DCUtR brings a direct QUIC connection (conntrack: a UDP flow WAN to WAN, both ways)")
    func cone() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let ip = lab.addresses
            let (relay, b, circuit) = try await Self.relayAndB(lab)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address] + Self.listen)
            let resolved = try a.agentctl(["resolve", "b.agent", "--json"], timeout: 30)
            #expect(resolved.status == 0, "resolve: \(resolved.stdoutText) \(resolved.stderr)")
            #expect((try resolved.json()["addresses"] as? [String] ?? []).contains(circuit))

            let ping = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(ping.status == 0, "ping b.agent: \(ping.stdoutText) \(ping.stderr)")
            let punchB = try await b.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punchB["peer"] as? String == a.peerID)
            #expect(punchB["result"] as? String == "direct", "\(punchB.fields)")
            #expect(punchB["attempts"] as? Int == 1, "\(punchB.fields)")
            let punchA = try await a.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punchA["result"] as? String == "direct", "\(punchA.fields)")
            // Router A tracks A's QUIC flow to router B's WAN address, router B the flow B's random
            // datagrams opened towards router A's; both saw traffic both ways, ports preserved.
            let flowA = try await lab.waitForFlow(on: .routerA, protocol: "udp") {
                $0.original.source == ip.hostA && $0.original.destination == ip.routerBWAN && $0.isAssured
            }
            let flowB = try await lab.waitForFlow(on: .routerB, protocol: "udp") {
                $0.original.source == ip.hostB && $0.original.destination == ip.routerAWAN && $0.isAssured
            }
            #expect(flowA.original.destinationPort == 4001 && flowA.isPortPreserved, "\(flowA)")
            #expect(flowB.original.destinationPort == 4001 && flowB.isPortPreserved, "\(flowB)")
            // A's connection to B is now a direct QUIC one, at router B's WAN address.
            let peers = try a.agentctl("peers", "--json").json()["peers"] as? [[String: Any]] ?? []
            let toB = peers.filter { $0["peer_id"] as? String == b.peerID }
            let direct = "/ip4/\(ip.routerBWAN)/udp/4001/quic-v1"
            #expect(toB.contains { $0["path"] as? String == "direct" && $0["addr"] as? String == direct }, "\(toB)")
            let again = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(try again.json()["path"] as? String == "direct", "\(again.stdoutText)")
        }
    }

    @Test("symmetric NATs: the UDP punch fails within its 3 attempts; the relayed connection keeps working")
    func symmetric() async throws {
        try await NATLab.with(nat: .symmetric) { lab in
            let ip = lab.addresses
            let (relay, b, _) = try await Self.relayAndB(lab)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address] + Self.listen)
            let ping = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(ping.status == 0, "ping b.agent: \(ping.stdoutText) \(ping.stderr)")
            #expect(try ping.json()["path"] as? String == "relayed", "\(ping.stdoutText)")
            let punch = try await b.process.waitFor("hole_punch", timeout: .seconds(90))
            #expect(punch["result"] as? String == "failed", "\(punch.fields)")
            #expect(punch["attempts"] as? Int == 3, "\(punch.fields)")
            let assured = try lab.conntrack(.routerA, protocol: "udp").filter {
                $0.original.source == ip.hostA && $0.original.destination == ip.routerBWAN && $0.isAssured
            }
            #expect(assured.isEmpty, "\(assured)")
            let after = try a.agentctl(["ping", "b.agent", "--json"], timeout: 30)
            #expect(after.status == 0, "ping after the failed punch: \(after.stderr)")
            #expect(try after.json()["path"] as? String == "relayed", "\(after.stdoutText)")
        }
    }
}
