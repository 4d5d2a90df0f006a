import AgentTesting
import Foundation
import Testing

/// AutoNAT through real NATs (the NAT lab): agentd behind a cone or a symmetric NAT learns it is
/// private (the relay's dial-back to its router's WAN address is dropped, so the relay answers
/// E_DIAL_ERROR after its 5 s timeout), the relay learns it is public (the hosts dial it back), and
/// `--dht-mode auto` follows: client behind the NATs, server on the relay.
@Suite(
    "AutoNAT in the NAT lab", .serialized, .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)),
    .timeLimit(.minutes(3)))
struct AutoNATLabTests {
    @Test("peers behind NATs report private, the relay/bootstrap public", arguments: NATLab.NAT.allCases)
    func verdicts(nat: NATLab.NAT) async throws {
        try await NATLab.with(nat: nat) { lab in
            let ip = lab.addresses
            let relay = try await lab.startAgentd(in: .relay)
            let a = try await lab.startAgentd(in: .hostA, arguments: ["--bootstrap", relay.address])
            let b = try await lab.startAgentd(in: .hostB, arguments: ["--bootstrap", relay.address])

            for host in [a, b] {
                let line = try await host.process.waitFor("autonat", timeout: .seconds(30))
                #expect(line["verdict"] as? String == "private", "\(host.node) (\(nat)): \(line.fields)")
                #expect(line["confidence"] as? Int == 1)
                let status = try host.agentctl("nat", "--json").json()
                let answer = try #require((status["answers"] as? [[String: Any]])?.first)
                #expect(answer["server"] as? String == relay.peerID && answer["status"] as? String == "E_DIAL_ERROR")
                // What the host asked to be dialled at: its router's WAN address with its port.
                let wan = host.node == .hostA ? ip.routerAWAN : ip.routerBWAN
                #expect(status["observed_ips"] as? [String] == [wan])
                #expect(status["checked_addrs"] as? [String] == ["/ip4/\(wan)/tcp/4001"])
            }
            // Both hosts dialled the relay back: public, confidence 2 (one line per change).
            let relayLine = try await relay.process.waitFor("autonat", timeout: .seconds(30)) {
                $0["confidence"] as? Int == 2
            }
            #expect(relayLine["verdict"] as? String == "public")
            #expect(
                !relay.process.events.contains {
                    $0["event"] as? String == "autonat" && $0["verdict"] as? String != "public"
                })
            let relayStatus = try relay.agentctl("nat", "--json").json()
            #expect(relayStatus["checked_addrs"] as? [String] == ["/ip4/\(ip.relay)/tcp/4001"])
            #expect(
                Set((relayStatus["answers"] as? [[String: Any]] ?? []).compactMap { $0["addr"] as? String })
                    == ["/ip4/\(ip.relay)/tcp/4001"])

            // --dht-mode auto follows the verdicts.
            for (host, mode) in [(a, "client"), (b, "client"), (relay, "server")] {
                var seen: String?
                for _ in 0..<100 {
                    seen = (try host.agentctl("dht", "peers", "--json").json())["mode"] as? String
                    if seen == mode { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(seen == mode, "\(host.node)")
            }
        }
    }
}
