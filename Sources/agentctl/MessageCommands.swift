import Application
import ArgumentParser
import Foundation

/// `agentctl send`, `reply`, `inbox`, `ack`, `listen`, `status`: agent messages through the running
/// node (spec/control-api.md §9, spec/messages.md).

/// `content` / `media_type` params from the text argument or `--json-content`.
private func contentParams(text: String?, json: String?) throws(CLIError) -> [String: JSONValue] {
    switch (text, json) {
    case (let text?, nil):
        return ["content": .string(text), "media_type": .string("text/plain; charset=utf-8")]
    case (nil, let json?):
        do {
            return ["content": try JSONValue(parsing: json), "media_type": .string("application/json")]
        } catch {
            throw CLIError(.usage, kind: "invalid_input", "--json-content is not JSON: \(error)")
        }
    case (nil, nil):
        throw CLIError(.usage, kind: "invalid_input", "give the message as TEXT or --json-content JSON")
    case (_?, _?):
        throw CLIError(.usage, kind: "invalid_input", "give TEXT or --json-content, not both")
    }
}

/// Human form of a message: one header line and the content.
func describeMessage(_ message: JSONValue) -> String {
    let type = message["type"]?.stringValue ?? "?"
    var line = "\(message["id"]?.stringValue ?? "?")  \(message["timestamp"]?.stringValue ?? "")  \(type)"
    line += "  \(message["sender"]?.stringValue ?? "?") → \(message["recipient"]?.stringValue ?? "?")"
    if let reply = message["in_reply_to"]?.stringValue { line += "  (reply to \(reply))" }
    var text = line + "\n"
    if let content = message["content"] {
        if message["content_encoding"]?.stringValue == "base64" {
            text += "  [\(message["media_type"]?.stringValue ?? "bytes"), base64] \(content.stringValue ?? "")\n"
        } else if let string = content.stringValue, message["media_type"]?.stringValue?.hasPrefix("text/plain") == true {
            text += string.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n") + "\n"
        } else {
            text += "  " + content.jsonText + "\n"
        }
    }
    if let code = message["error_code"]?.stringValue {
        text += "  error \(code): \(message["error_text"]?.stringValue ?? "")\n"
    }
    return text
}

private func describeSent(_ result: JSONValue) -> String {
    let delivery = result["delivery"]?.stringValue ?? "?"
    var text = "\(result["id"]?.stringValue ?? "?"): "
    switch delivery {
    case "direct": text += "delivered directly\n"
    case "mailbox": text += "stored in the recipient's mailbox at \(result["replicas"]?.intValue ?? 0) replicas\n"
    default: text += "queued; retried until it can be delivered\n"
    }
    if let reason = result["reason"]?.stringValue, delivery != "direct" { text += "  (\(reason))\n" }
    if let response = result["response"] { text += describeMessage(response) }
    return text
}

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send a message to an agent: directly when it is online, else to its mailbox on the network.",
        discussion: """
            Prints {"id","delivery":"direct|mailbox|queued","replicas":N} with --json. Exit 0 when the message was \
            delivered, stored or queued; 1 when it cannot be accepted (the name has no record, the recipient refused it) \
            or no response came within --wait-response; 2 for bad input.
            """)

    @Argument(help: "The recipient, NAME.agent.") var recipient: String
    @Argument(help: "The message text (or use --json-content).") var text: String?
    @Option(name: .customLong("json-content"), help: "Send this JSON value as application/json content.") var jsonContent: String?
    @Option(help: "request or notification (default: notification; request with --wait-response).") var type: String?
    @Option(help: "The local name that sends (default: the node's only name).") var from: String?
    @Option(name: .customLong("wait-response"), help: "Wait this many seconds for the response (implies --type request).")
    var waitResponse: Int?
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await Output.runAsync(json: output.json) {
            var params = try contentParams(text: text, json: jsonContent)
            params["to"] = .string(recipient)
            if let type { params["type"] = .string(type) }
            if let from { params["from"] = .string(from) }
            if let waitResponse {
                guard (1...3600).contains(waitResponse) else {
                    throw CLIError(.usage, kind: "invalid_input", "--wait-response must be 1 to 3600 seconds")
                }
                params["wait_response"] = .number(waitResponse)
            }
            // The daemon's answer may take the wait plus a delivery attempt.
            let timeout = try daemon.timeoutDuration() + .seconds(waitResponse ?? 0)
            let result = try await Daemon.withClient(daemon) { client in
                try await client.call("msg.send", .object(params), timeout: timeout)
            }
            Output.write(output.json ? result.formatted() + "\n" : describeSent(result))
        }
    }
}

struct ReplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reply", abstract: "Answer a received request with a response (or an error with --error-code).")

    @Argument(help: "The id of the request (from inbox or listen).") var id: String
    @Argument(help: "The response text (or use --json-content).") var text: String?
    @Option(name: .customLong("json-content"), help: "Reply with this JSON value as application/json content.") var jsonContent: String?
    @Option(name: .customLong("error-code"), help: "Answer with an ERROR message with this code (a-z 0-9 _ . -).") var errorCode: String?
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await Output.runAsync(json: output.json) {
            var params: [String: JSONValue] = ["id": .string(id)]
            if let errorCode {
                params["error_code"] = .string(errorCode)
                if let text { params["error_text"] = .string(text) }
            } else {
                params.merge(try contentParams(text: text, json: jsonContent)) { $1 }
            }
            let result = try await Daemon.withClient(daemon) { client in
                try await client.call("msg.reply", .object(params), timeout: try daemon.timeoutDuration())
            }
            Output.write(output.json ? result.formatted() + "\n" : describeSent(result))
        }
    }
}

struct InboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inbox", abstract: "List received messages not yet acknowledged, oldest first.")

    @Option(help: "Only messages to this local name.") var name: String?
    @Option(help: "At most this many.") var limit: Int = 1000
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var params: [String: JSONValue] = ["limit": .number(limit)]
        if let name { params["name"] = .string(name) }
        try await callDaemon(daemon, output, "msg.inbox", .object(params)) { result in
            let messages = result["messages"]?.arrayValue ?? []
            return messages.isEmpty ? "no messages\n" : messages.map(describeMessage).joined()
        }
    }
}

struct AckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ack", abstract: "Mark messages as read: they leave the inbox.")

    @Argument(help: "Message ids.") var ids: [String]
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "msg.ack", .object(["ids": .array(ids.map { .string($0) })])) { result in
            let done = (result["acknowledged"]?.arrayValue ?? []).compactMap(\.stringValue)
            let missing = ids.filter { !done.contains($0.uppercased()) }
            var text = "acknowledged \(done.count) of \(ids.count)\n"
            if !missing.isEmpty { text += "not in the inbox: \(missing.joined(separator: " "))\n" }
            return text
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Where a sent message is: queued, stored (with replicas), delivered, or failed (why).")

    @Argument(help: "The message id that send printed.") var id: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "msg.status", .object(["id": .string(id)])) { result in
            var text = "\(result["id"]?.stringValue ?? id) to \(result["recipient"]?.stringValue ?? "?"): "
            text += result["status"]?.stringValue ?? "?"
            if result["status"]?.stringValue == "stored" { text += " at \(result["replicas"]?.intValue ?? 0) replicas" }
            text += " (\(result["attempts"]?.intValue ?? 0) attempts)\n"
            if let error = result["error"]?.stringValue { text += "  last error: \(error)\n" }
            return text
        }
    }
}

struct ListenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen", abstract: "Print each message as it arrives (one JSON line each with --json), until Ctrl-C.")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await Output.runAsync(json: output.json) {
            try await Daemon.withClient(daemon) { client in
                let subscription = try await client.subscribe("msg.subscribe", .null, timeout: try daemon.timeoutDuration())
                for try await notification in subscription {
                    guard notification.method == "msg.received" else { continue }
                    Output.write(output.json ? notification.params.jsonText + "\n" : describeMessage(notification.params))
                }
            }
        }
    }
}
