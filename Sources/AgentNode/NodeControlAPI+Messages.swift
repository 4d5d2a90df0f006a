import Application
import Foundation
import Identity
import NIOCore
import Resolution

/// Messaging in the control API (spec/control-api.md §9): `msg.send`, `msg.reply`, `msg.inbox`,
/// `msg.ack`, `msg.status`, `msg.subscribe`.
extension NodeControlAPI {
    static func registerMessageMethods(_ methods: inout ControlAPIMethods, messaging: NodeMessaging) {
        let messenger = messaging.messenger

        methods.register("msg.send") { params in
            let recipient = try name(params, "to")
            let sender = try messaging.sender(from: params["from"]?.stringValue)
            let wait = try integer(params, "wait_response", in: 1...3600)
            let type = params["type"]?.stringValue ?? (wait == nil ? "notification" : "request")
            let kind: AgentMessage.Kind
            switch type {
            case "notification":
                guard wait == nil else {
                    throw ControlAPIError.invalidParams("wait_response needs type \"request\": a notification gets no response")
                }
                kind = .notification
            case "request": kind = .request
            default: throw ControlAPIError.invalidParams("type must be \"notification\" or \"request\", not \"\(type)\"")
            }
            let content = try content(params)
            let message = AgentMessage(
                kind: kind, sender: sender, recipient: recipient, timestamp: nowMilliseconds(), content: content)
            return try await send(message, messenger: messenger, waitResponse: wait)
        }

        methods.register("msg.reply") { params in
            let id = try messageID(params, "id")
            guard let original = try store({ try messenger.received(id) }) else {
                throw ControlAPIError.notFound("no received message \(id)", kind: "unknown_message")
            }
            guard original.message.type == .request else {
                throw ControlAPIError.invalidParams(
                    "message \(id) is a \(original.message.type.name), not a request: only requests are replied to")
            }
            let error = params["error_code"]?.stringValue
            let kind: AgentMessage.Kind =
                error.map { .error(inReplyTo: id, code: $0, text: params["error_text"]?.stringValue ?? "") } ?? .response(inReplyTo: id)
            let message = AgentMessage(
                kind: kind, sender: original.message.recipient, recipient: original.message.sender,
                timestamp: nowMilliseconds(), content: try content(params))
            return try await send(message, messenger: messenger, waitResponse: nil)
        }

        methods.register("msg.inbox") { params in
            let recipient = try params["name"].map { _ in try name(params, "name") }
            let limit = try integer(params, "limit", in: 1...10_000) ?? 1000
            let messages = try store { try messenger.inbox(recipient: recipient, limit: limit) }
            return .object(["messages": .array(messages.map(\.message.json))])
        }

        methods.register("msg.ack") { params in
            guard let list = params["ids"]?.arrayValue, !list.isEmpty, list.count <= 10_000 else {
                throw ControlAPIError.invalidParams("msg.ack needs \"ids\": 1 to 10000 message ids")
            }
            var ids: [MessageID] = []
            for value in list {
                guard let text = value.stringValue else { throw ControlAPIError.invalidParams("ids must be strings") }
                do {
                    ids.append(try MessageID(text))
                } catch let error as MessageError {
                    throw ControlAPIError.invalidInput("bad message id \"\(text.prefix(40))\": \(error.message)", kind: "malformed")
                }
            }
            let done = try store { try messenger.acknowledge(ids) }
            return .object(["acknowledged": .array(done.map { .string($0.description) })])
        }

        methods.register("msg.status") { params in
            let id = try messageID(params, "id")
            guard let sent = try store({ try messenger.status(of: id) }) else {
                throw ControlAPIError.notFound("no message \(id) was sent by this node", kind: "unknown_message")
            }
            return .object([
                "id": .string(id.description), "status": .string(sent.status.rawValue), "recipient": .string(sent.recipient),
                "replicas": .number(sent.replicas), "attempts": .number(sent.attempts),
                "error": sent.lastError.map { .string($0) } ?? .null,
            ])
        }

        methods.register("msg.block") { params in
            let sender = try name(params, "name")
            let added = try store { try messenger.block(sender) }
            return .object(["name": .string(sender.value), "added": .bool(added)])
        }

        methods.register("msg.unblock") { params in
            let sender = try name(params, "name")
            let removed = try store { try messenger.unblock(sender) }
            return .object(["name": .string(sender.value), "removed": .bool(removed)])
        }

        methods.register("msg.blocked") { _ in
            .object(["names": .array(try store { try messenger.blockedSenders() }.map { .string($0) })])
        }

        // Notifications `{"jsonrpc":"2.0","method":"msg.received","params":{…message…}}` as the inbox
        // delivers, until the client disconnects or the node stops.
        methods.registerSubscription("msg.subscribe") { params, subscriber in
            guard params == .null || params.objectValue?.isEmpty == true else {
                throw ControlAPIError.invalidParams("msg.subscribe takes no params")
            }
            let stream = messenger.subscribe()
            try subscriber.accept(.object(["subscription": "msg"]))
            for await message in stream {
                try subscriber.notify("msg.received", message.message.json)
            }
        }
    }

    /// Sends and shapes the result: `{"id","delivery","replicas"}`, with `"response"` when waiting.
    private static func send(_ message: AgentMessage, messenger: Messenger, waitResponse: Int?) async throws -> JSONValue {
        // Subscribed before sending: a response that comes back at once is not missed.
        let responses = waitResponse.map { _ in messenger.subscribe() }
        let result: Messenger.SendResult
        do {
            result = try await messenger.send(message)
        } catch let error as MessageError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        } catch let error as MailboxError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        }
        var object: [String: JSONValue] = [
            "id": .string(result.id.description), "delivery": .string(result.delivery.rawValue),
            "replicas": .number(result.replicas),
        ]
        if let reason = result.reason, result.delivery != .direct { object["reason"] = .string(reason) }
        if !result.storedAt.isEmpty { object["stored_at"] = .array(result.storedAt.map { .string($0.description) }) }
        guard let waitResponse, let responses else { return .object(object) }
        let response = await firstResponse(
            to: result.id, from: message.recipient, in: responses, within: .seconds(Int64(waitResponse)))
        guard let response else {
            throw ControlAPIError.timeout(
                "no response to \(result.id) from \(message.recipient) within \(waitResponse) s (the request was \(result.delivery.rawValue))",
                kind: "timeout")
        }
        object["response"] = response.message.json
        return .object(object)
    }

    /// The first RESPONSE or ERROR to `id` from `sender` in `stream`, or nil after `timeout`.
    private static func firstResponse(
        to id: MessageID, from sender: AgentName, in stream: AsyncStream<SignedAgentMessage>, within timeout: TimeAmount
    ) async -> SignedAgentMessage? {
        await withTaskGroup(of: SignedAgentMessage?.self) { group in
            group.addTask {
                for await message in stream where message.message.sender == sender && message.message.kind.inReplyTo == id {
                    if message.message.type == .response || message.message.type == .error { return message }
                }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .nanoseconds(timeout.nanoseconds))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    private static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    private static func name(_ params: JSONValue, _ key: String) throws -> AgentName {
        guard let text = params[key]?.stringValue else {
            throw ControlAPIError.invalidParams("missing \"\(key)\": a NAME.agent")
        }
        do {
            return try AgentName(text)
        } catch {
            throw ControlAPIError.invalidInput("bad name \"\(text.prefix(80))\": \(error.message)", kind: "invalid_name")
        }
    }

    private static func messageID(_ params: JSONValue, _ key: String) throws -> MessageID {
        guard let text = params[key]?.stringValue else {
            throw ControlAPIError.invalidParams("missing \"\(key)\": a message id (26 characters)")
        }
        do {
            return try MessageID(text)
        } catch {
            throw ControlAPIError.invalidInput("bad message id \"\(text.prefix(40))\": \(error.message)", kind: "malformed")
        }
    }

    /// The message content from `content`, `media_type`, `content_encoding` (spec/messages.md §6).
    private static func content(_ params: JSONValue) throws -> AgentMessage.Content? {
        do {
            return try AgentMessage.Content(json: params["content"], mediaType: params["media_type"], encoding: params["content_encoding"])
        } catch {
            throw ControlAPIError.invalidInput("content: \(error.message)", kind: error.kind.rawValue)
        }
    }

    /// Maps store failures to the API's `failed`.
    private static func store<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as MailboxError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        } catch let error as MessageError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        }
    }
}
