import Application
import ArgumentParser
import Foundation
import Resolution

/// `alice` and `alice.agent` both name `alice.agent`; a malformed name is bad usage (exit 2).
private func checkedName(_ text: String) throws -> String {
    let full = text.lowercased().hasSuffix(AgentName.suffix) ? text : text + AgentName.suffix
    do {
        return try AgentName(full).value
    } catch {
        throw CLIError(.usage, kind: error.kind.rawValue, error.message)
    }
}

private func recordText(_ result: JSONValue) -> String {
    var text = "name:      \(result["name"]?.stringValue ?? "?")\n"
    text += "peer id:   \(result["peer_id"]?.stringValue ?? "?")\n"
    text += "key:       \(result["public_key"]?.stringValue ?? "?") (Ed25519, base64)\n"
    text += "seq:       \(result["seq"]?.uint64Value.map(String.init) ?? "?")\n"
    text += "expires:   \(result["expires"]?.stringValue ?? "?")\n"
    for address in result["addresses"]?.arrayValue ?? [] { text += "address:   \(address.stringValue ?? "")\n" }
    for proto in result["protocols"]?.arrayValue ?? [] { text += "protocol:  \(proto.stringValue ?? "")\n" }
    return text
}

struct RegisterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Publish NAME.agent for the running node (signed with its key) and keep it fresh.",
        discussion: """
            The record is stored at the closest DHT nodes and republished before it expires. Without
            --address the node's own listen addresses are published (and follow changes).
            """)

    @Argument(help: "The name, e.g. alice or alice.agent.")
    var name: String
    @Option(name: .customLong("address"), help: "An address to publish (repeatable; default: the node's).")
    var addresses: [String] = []
    @Option(name: .customLong("protocol"), help: "A protocol id to publish (repeatable; default: the node's).")
    var protocols: [String] = []
    @Option(help: "Record lifetime in seconds (60 to 604800).")
    var ttl: UInt32 = RecordLimits.defaultTTL
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "register", try {
            var params: [String: JSONValue] = ["name": .string(try checkedName(name)), "ttl": .number(UInt64(ttl))]
            if !addresses.isEmpty { params["addrs"] = .array(addresses.map { .string($0) }) }
            if !protocols.isEmpty { params["protocols"] = .array(protocols.map { .string($0) }) }
            return .object(params)
        }()) { result in
            let replicas = result["replicas"]?.arrayValue?.count ?? 0
            return recordText(result) + "stored at: \(replicas) replica\(replicas == 1 ? "" : "s")\n"
        }
    }
}

struct UnregisterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unregister",
        abstract: "Stop publishing NAME.agent for the running node, now and after restarts.",
        discussion: """
            The record already published stays in the network until it expires; the name is held
            by the node's key until then, and a later `register` continues its seq.
            """)

    @Argument(help: "The name, e.g. alice or alice.agent.")
    var name: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "unregister", .object(["name": .string(try checkedName(name))])) { result in
            let name = result["name"]?.stringValue ?? "?"
            return result["was_registered"]?.boolValue == true
                ? "\(name): no longer published\n" : "\(name) was not registered; nothing changed\n"
        }
    }
}

struct NamesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "names",
        abstract: "List the names the running node publishes.",
        discussion: """
            persistent: registered with `agentctl register`, published again after a restart; the
            others come from `agentd --name` and the node's self-certifying name.
            """)

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "names", .object([:])) { result in
            var text = ""
            for entry in result["names"]?.arrayValue ?? [] {
                let name = entry["name"]?.stringValue ?? "?"
                let seq = entry["seq"]?.uint64Value.map(String.init) ?? "?"
                let expires = entry["expires"]?.stringValue ?? "?"
                let persistent = entry["persistent"]?.boolValue == true
                let published = entry["published"]?.boolValue == true
                let kind =
                    !published ? "persistent, NOT published: its publish failed and is retried; see the daemon's log"
                    : persistent ? "persistent" : "this run"
                text += "\(name)  seq \(seq)  expires \(expires)  (\(kind))\n"
            }
            return text.isEmpty ? "no names published\n" : text
        }
    }
}

struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve",
        abstract: "Resolve NAME.agent to its verified record: peer id, key, addresses, protocols.",
        discussion: "Exit 1 with \"not found\" when no valid record exists; exit 2 for a malformed name.")

    @Argument(help: "The name, e.g. bob.agent.")
    var name: String
    @Flag(name: .customLong("no-cache"), help: "Ask the network even if a cached answer is fresh.")
    var noCache = false
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "resolve", .object(["name": .string(try checkedName(name)), "no_cache": .bool(noCache)])) {
            result in
            var text = recordText(result)
            let source = result["source"]?.stringValue ?? "?"
            text += "source:    \(source)"
            let replicas = result["replicas"]?.intValue ?? 0
            if source != "cache" { text += replicas == 1 ? ", 1 replica agrees" : ", \(replicas) replicas agree" }
            return text + "\n"
        }
    }
}

struct DHTCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dht", abstract: "Inspect the node's DHT.", subcommands: [DHTPeersCommand.self, DHTGetClosestCommand.self])
}

struct DHTPeersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers", abstract: "Routing table summary: mode, size, buckets, peers.")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "dht.peers", .null) { result in
            var text = "mode: \(result["mode"]?.stringValue ?? "?")  protocol: \(result["protocol"]?.stringValue ?? "?")  "
            text += "peers: \(result["size"]?.intValue ?? 0)\n"
            for bucket in result["buckets"]?.arrayValue ?? [] {
                text += "bucket cpl=\(bucket["common_prefix_length"]?.intValue ?? 0): \(bucket["entries"]?.intValue ?? 0) peers"
                text += ", \(bucket["replacements"]?.intValue ?? 0) waiting\n"
            }
            for peer in result["peers"]?.arrayValue ?? [] {
                let addresses = (peer["addrs"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: " ")
                text += "\(peer["peer_id"]?.stringValue ?? "?")  \(addresses)\n"
            }
            return text
        }
    }
}

struct DHTGetClosestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-closest", abstract: "Find the 20 peers closest to KEY with an iterative lookup.")

    @Argument(help: "A peer id, a NAME.agent (its record key), or any text (its UTF-8 bytes).")
    var key: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "dht.get_closest", .object(["key": .string(key)])) { result in
            var text = ""
            for peer in result["peers"]?.arrayValue ?? [] {
                text += "\(peer["peer_id"]?.stringValue ?? "?")  cpl=\(peer["common_prefix_length"]?.intValue ?? 0)\n"
            }
            let lookup = result["lookup"]
            text += "\(result["peers"]?.arrayValue?.count ?? 0) peers; \(lookup?["requests"]?.intValue ?? 0) requests, "
            text += "\(lookup?["hops"]?.intValue ?? 0) hops, \(String(format: "%.1f", lookup?["duration_ms"]?.doubleValue ?? 0)) ms\n"
            return text
        }
    }
}
