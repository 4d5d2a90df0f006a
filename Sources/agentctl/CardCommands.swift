import Application
import ArgumentParser
import Foundation
import Resolution

/// `alice` and `alice.agent` both name `alice.agent`; a malformed name is bad usage (exit 2).
private func cardAgentName(_ text: String) throws -> String {
    let full = text.lowercased().hasSuffix(AgentName.suffix) ? text : text + AgentName.suffix
    do {
        return try AgentName(full).value
    } catch {
        throw CLIError(.usage, kind: error.kind.rawValue, error.message)
    }
}

/// A card's text form: one line per capability, then its interfaces and methods.
private func cardText(_ signed: JSONValue) -> String {
    let card = signed["card"] ?? .null
    var text = "\(card["name"]?.stringValue ?? "?") \(card["version"]?.stringValue ?? "?")"
    text += "  (\(signed["agent"]?.stringValue ?? "?"), signed \(signed["timestamp"]?.stringValue ?? "?"))\n"
    if let description = card["description"]?.stringValue { text += "  \(description)\n" }
    for interface in card["interfaces"]?.arrayValue ?? [] {
        text += "  interface \(interface["name"]?.stringValue ?? "?")\n"
        for method in interface["methods"]?.arrayValue ?? [] {
            func list(_ key: String) -> String {
                (method[key]?.arrayValue ?? []).map { "\($0["name"]?.stringValue ?? "?"): \($0["type"]?.stringValue ?? "?")" }
                    .joined(separator: ", ")
            }
            text += "    \(method["name"]?.stringValue ?? "?")(\(list("parameters"))) -> (\(list("returns")))\n"
        }
    }
    if let documentation = card["documentation"]?.stringValue { text += "  docs: \(documentation)\n" }
    return text
}

struct CardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "card",
        abstract: "Publish and read capability cards (spec/cards.md).",
        subcommands: [CardSetCommand.self, CardGetCommand.self, CardRemoveCommand.self])
}

struct CardSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Sign the card in FILE.json for one of the node's agents, serve it and announce its capability.",
        discussion: """
            FILE.json is {"name","version","description","interfaces":[{"name","methods":[{"name",
            "parameters":[{"name","type","description"}],"returns":[…],"description"}]}],"documentation"}.
            A card for the same capability replaces the agent's earlier one.
            """)

    @Argument(help: "The card's JSON file.")
    var file: String
    @Option(help: "The agent the card is for (default: the node's only registered name).")
    var name: String?
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "card.set", try {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CLIError(.usage, kind: "not_found", "cannot read \(file)")
            }
            let json: JSONValue
            do throws(ControlAPIError) {
                json = try JSONValue(parsing: [UInt8](data))
            } catch {
                throw CLIError(.usage, kind: "malformed", "\(file) is not JSON: \(error.message)")
            }
            // Checked here too, so that a bad card is refused before the daemon is asked.
            do throws(CardError) {
                _ = try CapabilityCard(json: json)
            } catch {
                throw CLIError(.usage, kind: error.kind.rawValue, "\(file): \(error.message)")
            }
            var params: [String: JSONValue] = ["card": json]
            if let name { params["name"] = .string(try cardAgentName(name)) }
            return .object(params)
        }()) { result in "card set:\n" + cardText(result) }
    }
}

struct CardGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Fetch NAME.agent's cards from its node and verify each against its record.",
        discussion: "Cards whose check fails (spec/cards.md §6) are dropped and listed under \"dropped\".")

    @Argument(help: "The agent, e.g. bob or bob.agent.")
    var name: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "card.get", .object(["name": .string(try cardAgentName(name))])) { result in
            let cards = result["cards"]?.arrayValue ?? []
            var text = cards.isEmpty ? "\(result["name"]?.stringValue ?? "?") has no cards\n" : ""
            for card in cards { text += cardText(card) }
            for reason in result["dropped"]?.arrayValue ?? [] { text += "dropped: \(reason.stringValue ?? "?")\n" }
            return text
        }
    }
}

struct CardRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Stop serving an agent's card for CAPABILITY (its provider records expire within 48 h).")

    @Argument(help: "The capability name.")
    var capability: String
    @Option(help: "The agent (default: the node's only registered name).")
    var name: String?
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "card.remove", try {
            var params: [String: JSONValue] = ["capability": .string(capability)]
            if let name { params["name"] = .string(try cardAgentName(name)) }
            return .object(params)
        }()) { result in
            result["removed"]?.boolValue == true ? "removed\n" : "no card for \(capability); nothing changed\n"
        }
    }
}

struct FindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "find",
        abstract: "Find the agents that offer a capability, each card fetched and verified.",
        discussion: """
            --version takes a range (spec/cards.md §4): 1.2.3, ^1.2, ~1.2.3, 1.x, >=1.0 <2.0, *, and
            alternatives joined by ||. Prints {"agents":[{"name","peer_id","capability","version"}…]}
            with --json. Exit 1 when no agent is found.
            """)

    @Option(help: "The capability name.")
    var capability: String
    @Option(help: "A version range (default: any version).")
    var version: String?
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var fields: [String: JSONValue] = ["capability": .string(capability)]
        if let version { fields["version"] = .string(version) }
        let params = JSONValue.object(fields)
        var agents: [JSONValue] = []
        try await Output.runAsync(json: output.json) {
            do throws(CardError) {
                try CapabilityCard.checkCapabilityName(capability)
                if let version { _ = try VersionRange(version) }
            } catch {
                throw CLIError(.usage, kind: error.kind.rawValue, error.message)
            }
            let timeout = try daemon.timeoutDuration()
            let result = try await Daemon.withClient(daemon) { client in
                try await client.call("cap.find", params, timeout: timeout)
            }
            agents = result["agents"]?.arrayValue ?? []
            var text = agents.isEmpty ? "no agent offers \(capability)\n" : ""
            for agent in agents {
                text += "\(agent["name"]?.stringValue ?? "?")  \(agent["version"]?.stringValue ?? "?")  \(agent["peer_id"]?.stringValue ?? "?")\n"
            }
            Output.write(output.json ? result.formatted() + "\n" : text)
        }
        // Nothing found is "not found" (exit 1), the answer printed all the same.
        if agents.isEmpty { throw ExitCodeError(status: .failed) }
    }
}
