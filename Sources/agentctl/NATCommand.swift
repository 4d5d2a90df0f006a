import Application
import ArgumentParser
import Foundation

/// `agentctl nat`: whether the node is reachable from outside, and the evidence.
struct NATCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nat",
        abstract:
            "Show whether the node is reachable from outside (AutoNAT) and the evidence: servers asked, answers, confidence, observed addresses."
    )

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "nat", .null) { result in
            var text = "reachability:  \(result["reachability"]?.stringValue ?? "?")"
            text += " (confidence \(result["confidence"]?.intValue ?? 0))\n"
            let observed = (result["observed_ips"]?.arrayValue ?? []).compactMap(\.stringValue)
            text += "observed IPs:  \(observed.isEmpty ? "none reported yet" : observed.joined(separator: " "))\n"
            let checked = (result["checked_addrs"]?.arrayValue ?? []).compactMap(\.stringValue)
            text +=
                "checked:       \(checked.isEmpty ? "no public address to check" : checked.joined(separator: " "))\n"
            text += "servers:       \(result["servers"]?.arrayValue?.count ?? 0) connected peers offer AutoNAT\n"
            for vote in result["votes"]?.arrayValue ?? [] {
                text +=
                    "vote:          \(vote["server"]?.stringValue ?? "?") says \(vote["verdict"]?.stringValue ?? "?")\n"
            }
            for answer in result["answers"]?.arrayValue ?? [] {
                let status = answer["status"]?.stringValue ?? "failed"
                let ago = answer["seconds_ago"]?.doubleValue.map { String(format: "%.0f s ago", $0) } ?? ""
                var line = "answer:        \(answer["server"]?.stringValue ?? "?") \(status) \(ago)"
                if let address = answer["addr"]?.stringValue { line += " at \(address)" }
                if let reason = answer["text"]?.stringValue, !reason.isEmpty { line += ": \(reason)" }
                text += line + "\n"
            }
            let server = result["autonat_server"]
            if server?["enabled"]?.boolValue == true {
                let answers = (server?["answers"]?.objectValue ?? [:]).sorted { $0.key < $1.key }
                let counts = answers.map { "\($0.key) \($0.value.intValue ?? 0)" }.joined(separator: ", ")
                text += "autonat server: on\(counts.isEmpty ? ", no requests yet" : ", answered: \(counts)")\n"
            } else {
                text += "autonat server: off\n"
            }
            let reservations = result["relay_reservations"]?.arrayValue ?? []
            if reservations.isEmpty { text += "relay reservations: none\n" }
            for reservation in reservations {
                let expires = reservation["expires"]?.doubleValue.map {
                    String(format: "expires in %.0f s", $0 - Date().timeIntervalSince1970)
                } ?? ""
                let voucher = reservation["voucher_verified"]?.boolValue == true ? "voucher verified" : "no valid voucher"
                text += "reservation:   \(reservation["relay"]?.stringValue ?? "?") (\(voucher), \(expires))\n"
                for address in reservation["addrs"]?.arrayValue ?? [] {
                    text += "  address:     \(address.stringValue ?? "?")\n"
                }
            }
            if let service = result["relay_service"] {
                let mode = service["mode"]?.stringValue ?? "?"
                if service["serving"]?.boolValue == true {
                    text += "relay service: serving (\(mode)): \(service["reservations"]?.intValue ?? 0) reservations, "
                    text += "\(service["circuits"]?.intValue ?? 0) circuits open, "
                    text += "\(service["circuits_relayed"]?.intValue ?? 0) relayed, \(service["bytes_relayed"]?.uint64Value ?? 0) bytes; "
                    text += "refused \(service["reservations_refused"]?.intValue ?? 0) reservations, "
                    text += "\(service["circuits_refused"]?.intValue ?? 0) circuits\n"
                } else {
                    text += "relay service: not serving (\(mode))\n"
                }
            }
            return text
        }
    }
}
