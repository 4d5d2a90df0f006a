import Application
import ArgumentParser
import Foundation

struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits",
        abstract: "Show the node's resource limits: usage, limit and refusals per scope and resource.",
        discussion: """
            For the per-address, per-peer and per-connection scopes, "used" is the highest usage of any
            one member (the address, peer or connection closest to its limit). Raise or lower limits
            with agentd --limits FILE (spec/session.md, "Resource limits").
            """)

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "limits", .null) { result in
            var text = "scope          resource                  used         limit        refused\n"
            for row in result["scopes"]?.arrayValue ?? [] {
                let columns = [
                    (row["scope"]?.stringValue ?? "?", 14), (row["resource"]?.stringValue ?? "?", 25),
                    (row["used"]?.intValue.map(String.init) ?? "?", 12),
                    (row["limit"]?.intValue.map(String.init) ?? "?", 12),
                    (row["refused"]?.intValue.map(String.init) ?? "?", 0),
                ]
                text +=
                    columns.map { value, width in
                        value.padding(toLength: max(width, value.count), withPad: " ", startingAt: 0)
                    }
                    .joined(separator: " ") + "\n"
            }
            let blocked = result["blocked"]?.arrayValue ?? []
            text += "blocked: \(blocked.isEmpty ? "none" : blocked.compactMap(\.stringValue).joined(separator: ", "))\n"
            return text
        }
    }
}

struct BlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract:
            "Refuse a peer id or an IP network (CIDR) at accept and at dial, closing its connections; or refuse messages from NAME.agent.",
        discussion: "The deny list is kept in DATA_DIR/denylist, blocked senders in DATA_DIR/messages.db; both survive restarts.")

    @Argument(help: "A peer id (12D3KooW…), an IP network such as 203.0.113.0/24 or 2001:db8::/32, or a sender NAME.agent.")
    var target: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        if isAgentName(target) {
            try await callDaemon(daemon, output, "msg.block", .object(["name": .string(target)])) { result in
                let name = result["name"]?.stringValue ?? "?"
                return result["added"]?.boolValue == true
                    ? "messages from \(name) are refused\n" : "messages from \(name) were already refused\n"
            }
            return
        }
        try await callDaemon(daemon, output, "block", .object(["target": .string(target)])) { result in
            let target = result["target"]?.stringValue ?? "?"
            return result["added"]?.boolValue == true ? "blocked \(target)\n" : "\(target) was already blocked\n"
        }
    }
}

struct UnblockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unblock", abstract: "Remove a peer id or an IP network from the deny list, or accept messages from NAME.agent again.")

    @Argument(help: "A peer id, an IP network or a NAME.agent, as given to block.")
    var target: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        if isAgentName(target) {
            try await callDaemon(daemon, output, "msg.unblock", .object(["name": .string(target)])) { result in
                let name = result["name"]?.stringValue ?? "?"
                return result["removed"]?.boolValue == true
                    ? "messages from \(name) are accepted again\n" : "messages from \(name) were not refused\n"
            }
            return
        }
        try await callDaemon(daemon, output, "unblock", .object(["target": .string(target)])) { result in
            let target = result["target"]?.stringValue ?? "?"
            return result["removed"]?.boolValue == true ? "unblocked \(target)\n" : "\(target) was not blocked\n"
        }
    }
}

/// Whether a block target is a sender name rather than a peer id or network: it ends in `.agent`.
private func isAgentName(_ target: String) -> Bool {
    target.lowercased().hasSuffix(".agent")
}
