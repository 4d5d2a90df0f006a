import Application
import Foundation
import Logging
import Resolution

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `agentd --inbox-dir DIR`: messages as files, for agents that prefer files to a socket
/// (README, "Messages as files").
///
/// - `DIR/inbox.jsonl`: each message the inbox delivers, one JSON object per line (messages.md §6),
///   appended and fsync'd, then marked read in the node's inbox (so the file is the inbox).
/// - `DIR/outbox.jsonl`: the agent appends one request per line, `{"to", "content", "type"?,
///   "from"?, "media_type"?, "content_encoding"?, "in_reply_to"?}`; each complete line is sent once.
/// - `DIR/sent.jsonl`: one result per outbox line, `{"line": N (1-based), "id", "delivery",
///   "replicas"}` or `{"line": N, "error": {"kind", "message"}}`.
///
/// Restarts lose and repeat nothing: `DIR/.outbox-state` records how far the outbox was read and
/// the id given to the line being sent before it is sent, so a line interrupted by a crash is sent
/// again under the same id (the messenger answers with the recorded outcome, and a recipient that
/// already has it answers `replayed`); an inbox message is marked read only after its line is on
/// disk, and lines already in `inbox.jsonl` are not written twice.
final class NodeFileMode: Sendable {
    let directory: String
    private let messaging: NodeMessaging
    private let logger: Logger
    private let pollInterval: Duration

    init(directory: String, messaging: NodeMessaging, logger: Logger, pollInterval: Duration = .milliseconds(200)) throws {
        self.directory = directory
        self.messaging = messaging
        self.logger = logger
        self.pollInterval = pollInterval
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for file in ["inbox.jsonl", "outbox.jsonl", "sent.jsonl"] {
                let path = directory + "/" + file
                if !FileManager.default.fileExists(atPath: path) {
                    guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                        throw NodeError(.fileSystem, "cannot create \(path)")
                    }
                }
            }
        } catch let error as NodeError {
            throw error
        } catch {
            throw NodeError(.fileSystem, "cannot use --inbox-dir \(directory): \(error)")
        }
    }

    /// Runs both directions until cancelled (a host task).
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.runInbox() }
            group.addTask { await self.runOutbox() }
        }
    }

    // MARK: Inbox

    private func runInbox() async {
        let messenger = messaging.messenger
        // Subscribed first: what arrives while the backlog is written is not missed.
        let arrivals = messenger.subscribe()
        var written: Set<MessageID>
        do {
            written = try existingInboxIDs()
            for message in try messenger.inbox() { try write(message, written: &written) }
        } catch {
            logger.error("file mode: cannot write the inbox backlog to \(directory)/inbox.jsonl: \(error)")
            return
        }
        for await message in arrivals {
            do {
                try write(message, written: &written)
            } catch {
                // The message stays in the node's inbox (not marked read): it is written at the next start.
                logger.error("file mode: cannot append to \(directory)/inbox.jsonl: \(error)")
            }
        }
    }

    private func write(_ message: SignedAgentMessage, written: inout Set<MessageID>) throws {
        if !written.contains(message.message.id) {
            try append(message.message.json.jsonText + "\n", to: "inbox.jsonl")
            written.insert(message.message.id)
        }
        _ = try messaging.messenger.acknowledge([message.message.id])
    }

    /// The ids of the messages already in `inbox.jsonl`.
    private func existingInboxIDs() throws -> Set<MessageID> {
        var ids = Set<MessageID>()
        let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/inbox.jsonl"))
        for line in data.split(separator: UInt8(ascii: "\n")) {
            if let text = (try? JSONValue(parsing: line))?["id"]?.stringValue, let id = try? MessageID(text) { ids.insert(id) }
        }
        return ids
    }

    // MARK: Outbox

    struct OutboxState: Equatable {
        /// Bytes of outbox.jsonl fully handled.
        var offset: Int
        /// Lines fully handled.
        var line: Int
        /// The line being sent and the id it was given.
        var pendingID: String?

        var json: JSONValue {
            .object([
                "offset": .number(offset), "line": .number(line), "pending_id": pendingID.map { .string($0) } ?? .null,
            ])
        }
    }

    private func runOutbox() async {
        var state: OutboxState
        do {
            state = try loadState()
        } catch {
            logger.error("file mode: \(error); the outbox is not read")
            return
        }
        while !Task.isCancelled {
            do {
                try await sendNewLines(&state)
            } catch {
                logger.error("file mode: outbox: \(error)")
            }
            try? await Task.sleep(for: pollInterval)
        }
    }

    private func sendNewLines(_ state: inout OutboxState) async throws {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: directory + "/outbox.jsonl"))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(state.offset))
        guard let data = try handle.readToEnd(), !data.isEmpty else { return }
        var start = data.startIndex
        while let newline = data[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = data[start..<newline]
            let lineNumber = state.line + 1
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }) {
                // Blank lines are skipped (and counted).
            } else {
                let id = try state.pendingID.map { try MessageID($0) } ?? MessageID.random()
                if state.pendingID == nil {
                    state.pendingID = id.description
                    try saveState(state)
                }
                let result = await send(line: line, id: id)
                try appendResult(result, line: lineNumber)
            }
            state.offset += line.count + 1
            state.line = lineNumber
            state.pendingID = nil
            try saveState(state)
            start = newline + 1
        }
    }

    /// Sends one outbox line; the result object for sent.jsonl (without "line").
    private func send(line: Data, id: MessageID) async -> [String: JSONValue] {
        do {
            let request: JSONValue
            do {
                request = try JSONValue(parsing: line)
            } catch {
                throw MessageError(.malformed, "an outbox line is not JSON: \(error.message)")
            }
            guard let object = request.objectValue else { throw MessageError(.malformed, "an outbox line is a JSON object") }
            let allowed: Set<String> = ["to", "content", "type", "from", "media_type", "content_encoding", "in_reply_to"]
            if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw MessageError(.malformed, "unknown field \"\(unknown)\" in an outbox line")
            }
            guard let to = request["to"]?.stringValue else { throw MessageError(.malformed, "an outbox line needs \"to\": NAME.agent") }
            let recipient: AgentName
            do {
                recipient = try AgentName(to)
            } catch {
                throw MessageError(.invalidName, "to: \(error.message)")
            }
            let sender = try messaging.sender(from: request["from"]?.stringValue)
            let content = try AgentMessage.Content(json: request["content"], mediaType: request["media_type"], encoding: request["content_encoding"])
            let kind: AgentMessage.Kind
            let replyTo = try request["in_reply_to"]?.stringValue.map { try MessageID($0) }
            switch (request["type"]?.stringValue ?? (replyTo == nil ? "notification" : "response"), replyTo) {
            case ("notification", nil): kind = .notification
            case ("request", nil): kind = .request
            case ("response", let replyTo?): kind = .response(inReplyTo: replyTo)
            case (let type, _):
                throw MessageError(
                    .malformed, "type \"\(type)\" with\(replyTo == nil ? "out" : "") in_reply_to: use notification, request, or response with in_reply_to")
            }
            let message = AgentMessage(
                id: id, kind: kind, sender: sender, recipient: recipient, timestamp: UInt64(Date().timeIntervalSince1970 * 1000),
                content: content)
            let result = try await messaging.messenger.send(message)
            return [
                "id": .string(result.id.description), "delivery": .string(result.delivery.rawValue), "replicas": .number(result.replicas),
            ]
        } catch let error as MessageError {
            return ["id": .string(id.description), "error": .object(["kind": .string(error.kind.rawValue), "message": .string(error.message)])]
        } catch let error as ControlAPIError {
            return ["id": .string(id.description), "error": .object(["kind": .string(error.wireKind), "message": .string(error.message)])]
        } catch let error as MailboxError {
            return ["id": .string(id.description), "error": .object(["kind": .string(error.kind.rawValue), "message": .string(error.message)])]
        } catch {
            return ["id": .string(id.description), "error": .object(["kind": .string("malformed"), "message": .string("\(error)")])]
        }
    }

    private func appendResult(_ result: [String: JSONValue], line: Int) throws {
        // After a crash between this append and the state save, the line is handled again: its
        // result is not written twice.
        let path = directory + "/sent.jsonl"
        if let last = try lastLine(of: path), (try? JSONValue(parsing: last))?["line"]?.intValue == line { return }
        var object = result
        object["line"] = .number(line)
        try append(JSONValue.object(object).jsonText + "\n", to: "sent.jsonl")
    }

    // MARK: Files

    private var statePath: String { directory + "/.outbox-state" }

    private func loadState() throws -> OutboxState {
        guard FileManager.default.fileExists(atPath: statePath) else { return OutboxState(offset: 0, line: 0, pendingID: nil) }
        let data = try Data(contentsOf: URL(fileURLWithPath: statePath))
        let json = try JSONValue(parsing: data)
        guard let offset = json["offset"]?.intValue, let line = json["line"]?.intValue, offset >= 0, line >= 0 else {
            throw NodeError(.fileSystem, "\(statePath) is damaged; remove it to read outbox.jsonl from its start")
        }
        return OutboxState(offset: offset, line: line, pendingID: json["pending_id"]?.stringValue)
    }

    /// Writes the state to a temporary file, fsyncs it and renames it over the old one.
    private func saveState(_ state: OutboxState) throws {
        let temporary = statePath + ".tmp"
        try write(Data(state.json.jsonText.utf8), to: temporary, append: false)
        guard rename(temporary, statePath) == 0 else {
            throw NodeError(.fileSystem, "cannot rename \(temporary): \(String(cString: strerror(errno)))")
        }
    }

    private func append(_ text: String, to file: String) throws {
        try write(Data(text.utf8), to: directory + "/" + file, append: true)
    }

    /// Writes `data` and fsyncs before returning.
    private func write(_ data: Data, to path: String, append: Bool) throws {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { throw NodeError(.fileSystem, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var written = 0
        try data.withUnsafeBytes { buffer in
            while written < buffer.count {
                let result = Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written)
                guard result > 0 else {
                    if result < 0 && errno == EINTR { continue }
                    throw NodeError(.fileSystem, "cannot write \(path): \(String(cString: strerror(errno)))")
                }
                written += result
            }
        }
        guard fsync(fd) == 0 else { throw NodeError(.fileSystem, "cannot fsync \(path): \(String(cString: strerror(errno)))") }
    }

    /// The last line of a file (read from its last 64 KiB, which holds a whole result line).
    private func lastLine(of path: String) throws -> Data? {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size - min(size, 65_536))
        let tail = try handle.readToEnd() ?? Data()
        return tail.split(separator: UInt8(ascii: "\n")).last.map { Data($0) }
    }
}
