import Resolution

/// The JSON form of a message for the local API and agentctl (spec/messages.md §6). The binary
/// form is what is signed; the JSON form is a view of it, and JSON content is re-serialised
/// (compact, keys sorted) when it is read back.
extension AgentMessage {
    /// The keys of the JSON form; any other key is refused when parsing.
    static let jsonKeys: Set<String> = [
        "id", "type", "sender", "recipient", "timestamp", "media_type", "content", "content_encoding", "in_reply_to",
        "stream_id", "sequence", "end", "error_code", "error_text", "sender_seq",
    ]

    /// The message as a JSON object.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(id.description),
            "type": .string(type.name),
            "sender": .string(sender.value),
            "recipient": .string(recipient.value),
            "timestamp": .string(MessageTime.rfc3339(timestamp)),
        ]
        if let content { object.merge(content.jsonFields) { $1 } }
        if let inReplyTo = kind.inReplyTo { object["in_reply_to"] = .string(inReplyTo.description) }
        switch kind {
        case .request, .response, .notification: break
        case .stream(let part):
            object["stream_id"] = .string(part.streamID.description)
            object["sequence"] = .number(JSONNumber(part.sequence))
            object["end"] = .bool(part.isEnd)
        case .error(_, let code, let text):
            object["error_code"] = .string(code)
            object["error_text"] = .string(text)
        }
        if senderSequence != 0 { object["sender_seq"] = .number(JSONNumber(senderSequence)) }
        return .object(object)
    }

    /// Reads the JSON form (every envelope field; the type-specific ones as the type needs).
    /// - Throws: `.malformed` (or `.invalidName`, `.oversized`) naming the field.
    public init(json: JSONValue) throws(MessageError) {
        guard let object = json.objectValue else { throw MessageError(.malformed, "a message is a JSON object") }
        if let unknown = object.keys.sorted().first(where: { !Self.jsonKeys.contains($0) }) {
            throw MessageError(.malformed, "unknown message field \"\(unknown)\"")
        }
        func string(_ key: String) throws(MessageError) -> String {
            guard let value = object[key] else { throw MessageError(.malformed, "message has no \(key)") }
            guard let text = value.stringValue else { throw MessageError(.malformed, "\(key) must be a string") }
            return text
        }
        func name(_ key: String) throws(MessageError) -> AgentName {
            do {
                return try AgentName(canonical: try string(key))
            } catch let error as MessageError {
                throw error
            } catch {
                throw MessageError(.invalidName, "\(key): \(error)")
            }
        }
        let id = try MessageID(try string("id"))
        let typeName = try string("type")
        guard let type = MessageType(name: typeName) else {
            throw MessageError(
                .malformed, "type \"\(typeName)\" is not request, response, notification, stream or error")
        }
        let sender = try name("sender")
        let recipient = try name("recipient")
        let timestamp = try MessageTime.parse(try string("timestamp"))
        let content = try Content(
            json: object["content"], mediaType: object["media_type"], encoding: object["content_encoding"])
        let inReplyTo = try object["in_reply_to"].map { _ throws(MessageError) in
            try MessageID(try string("in_reply_to"))
        }
        let streamKeys = ["stream_id", "sequence", "end"]
        let errorKeys = ["error_code", "error_text"]
        if type != .stream, let key = streamKeys.first(where: { object[$0] != nil }) {
            throw MessageError(.malformed, "\(key) on a \(type.name) message")
        }
        if type != .error, let key = errorKeys.first(where: { object[$0] != nil }) {
            throw MessageError(.malformed, "\(key) on a \(type.name) message")
        }
        if [.request, .notification].contains(type), inReplyTo != nil {
            throw MessageError(.malformed, "in_reply_to on a \(type.name) message")
        }
        let kind: Kind
        switch type {
        case .request: kind = .request
        case .notification: kind = .notification
        case .response:
            guard let inReplyTo else { throw MessageError(.malformed, "response has no in_reply_to") }
            kind = .response(inReplyTo: inReplyTo)
        case .stream:
            let streamID = try MessageID(try string("stream_id"))
            guard let sequence = object["sequence"]?.uint64Value else {
                throw MessageError(.malformed, "stream part needs a sequence (a non-negative integer)")
            }
            guard let end = object["end"]?.boolValue else {
                throw MessageError(.malformed, "stream part needs end (a bool)")
            }
            kind = .stream(StreamPart(streamID: streamID, sequence: sequence, isEnd: end, inReplyTo: inReplyTo))
        case .error:
            guard let inReplyTo else { throw MessageError(.malformed, "error has no in_reply_to") }
            let code = try string("error_code")
            let text = object["error_text"] == nil ? "" : try string("error_text")
            kind = .error(inReplyTo: inReplyTo, code: code, text: text)
        }
        var senderSequence: UInt64 = 0
        if let value = object["sender_seq"] {
            guard let number = value.uint64Value, number > 0 else {
                throw MessageError(.malformed, "sender_seq must be a positive integer")
            }
            senderSequence = number
        }
        self.init(
            id: id, kind: kind, sender: sender, recipient: recipient, timestamp: timestamp, content: content,
            senderSequence: senderSequence)
        // The same limits as the binary form: what cannot be encoded is refused here.
        _ = try encoded()
    }
}

extension AgentMessage.Content {
    /// `media_type`, `content` and, for bytes that are neither UTF-8 text nor JSON,
    /// `"content_encoding": "base64"` (spec/messages.md §6).
    public var jsonFields: [String: JSONValue] {
        if mediaType == Self.textMediaType, let text = String(validating: bytes, as: UTF8.self) {
            return ["media_type": .string(mediaType), "content": .string(text)]
        }
        if mediaType == Self.jsonMediaType {
            do {
                return ["media_type": .string(mediaType), "content": try JSONValue(parsing: bytes)]
            } catch {
                // Bytes labelled JSON that do not parse (or nest too deep) are shown as base64
                // below, unchanged: the view must never alter or drop what was signed.
            }
        }
        return [
            "media_type": .string(mediaType), "content": .string(Base64.encode(bytes)),
            "content_encoding": .string("base64"),
        ]
    }

    /// Content from the JSON form's `content`, `media_type` and `content_encoding`; nil when
    /// `content` is absent or null (a message without content).
    ///
    /// - `content_encoding: "base64"`: `content` is base64 of the bytes; `media_type` defaults to
    ///   `application/octet-stream`.
    /// - Otherwise with `media_type` `application/json`, or no media type and a non-string
    ///   `content`: the JSON value, serialised compactly with sorted keys.
    /// - Otherwise `content` must be a string and the media type absent or
    ///   `text/plain; charset=utf-8`: its UTF-8 bytes.
    public init?(json content: JSONValue?, mediaType: JSONValue?, encoding: JSONValue?) throws(MessageError) {
        guard let content, content != .null else {
            guard mediaType == nil, encoding == nil else {
                throw MessageError(.malformed, "media_type or content_encoding without content")
            }
            return nil
        }
        let type: String?
        switch mediaType {
        case nil: type = nil
        case .string(let text)?:
            try AgentMessage.checkMediaType(text)
            type = text
        default: throw MessageError(.malformed, "media_type must be a string")
        }
        switch encoding {
        case nil: break
        case .string("base64")?:
            guard let text = content.stringValue, let bytes = Base64.decode(text) else {
                throw MessageError(.malformed, "content is not canonical padded base64")
            }
            self.init(mediaType: type ?? Self.octetStreamMediaType, bytes: bytes)
            return
        default: throw MessageError(.malformed, "content_encoding must be \"base64\" when present")
        }
        if type == Self.jsonMediaType || (type == nil && content.stringValue == nil) {
            self.init(mediaType: Self.jsonMediaType, bytes: Array(content.jsonText.utf8))
            return
        }
        guard let text = content.stringValue else {
            throw MessageError(.malformed, "content for media type \(type ?? "") must be a string (or base64)")
        }
        guard type == nil || type == Self.textMediaType else {
            throw MessageError(
                .malformed,
                "string content is text/plain; charset=utf-8 or application/json; give other media types as base64 with \"content_encoding\":\"base64\""
            )
        }
        self.init(mediaType: Self.textMediaType, bytes: Array(text.utf8))
    }
}
