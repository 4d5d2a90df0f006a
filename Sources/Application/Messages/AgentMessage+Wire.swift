import Resolution

/// The canonical binary encoding of the envelope (spec/messages.md §3): protobuf wire format,
/// fields in number order, defaults omitted, nothing unknown.
extension AgentMessage {
    enum Field {
        static let id: UInt64 = 1
        static let type: UInt64 = 2
        static let sender: UInt64 = 3
        static let recipient: UInt64 = 4
        static let timestamp: UInt64 = 5
        static let mediaType: UInt64 = 6
        static let content: UInt64 = 7
        static let inReplyTo: UInt64 = 8
        static let streamID: UInt64 = 9
        static let streamSequence: UInt64 = 10
        static let streamEnd: UInt64 = 11
        static let errorCode: UInt64 = 12
        static let errorText: UInt64 = 13
        static let senderSequence: UInt64 = 14
    }

    static let schema: [UInt64: ProtobufReader.WireType] = [
        1: .lengthDelimited, 2: .varint, 3: .lengthDelimited, 4: .lengthDelimited, 5: .varint, 6: .lengthDelimited,
        7: .lengthDelimited, 8: .lengthDelimited, 9: .lengthDelimited, 10: .varint, 11: .varint, 12: .lengthDelimited,
        13: .lengthDelimited, 14: .varint,
    ]
    static let fieldNames: [UInt64: String] = [
        1: "id", 2: "type", 3: "sender", 4: "recipient", 5: "timestamp_ms", 6: "media_type", 7: "content",
        8: "in_reply_to", 9: "stream_id", 10: "stream_seq", 11: "stream_end", 12: "error_code", 13: "error_text",
        14: "sender_seq",
    ]

    /// The largest length each length-delimited field may declare, and the kind of a longer one.
    static func fieldLimit(_ number: UInt64) -> (Int, MessageError.Kind) {
        switch number {
        case Field.id, Field.inReplyTo, Field.streamID: return (MessageID.byteCount, .malformed)
        case Field.sender, Field.recipient: return (AgentName.maximumLength, .malformed)
        case Field.mediaType: return (MessageLimits.maximumMediaType, .malformed)
        case Field.content: return (MessageLimits.maximumContent, .oversized)
        case Field.errorCode: return (MessageLimits.maximumErrorCode, .malformed)
        default: return (MessageLimits.maximumErrorText, .malformed)
        }
    }

    /// The canonical envelope bytes.
    /// - Throws: `MessageError` when a field breaks a limit or a format rule (a receiver would
    ///   refuse the message), so that no one signs a message others cannot decode.
    public func encoded() throws(MessageError) -> [UInt8] {
        guard timestamp != 0 else { throw MessageError(.malformed, "timestamp must be after 1970-01-01T00:00:00Z") }
        if let content {
            guard content.bytes.count <= MessageLimits.maximumContent else {
                throw MessageError(
                    .oversized,
                    "content is \(content.bytes.count) bytes, over the \(MessageLimits.maximumContent)-byte limit; send larger data as STREAM parts"
                )
            }
            try Self.checkMediaType(content.mediaType)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((content?.bytes.count ?? 0) + 128 + sender.value.utf8.count + recipient.value.utf8.count)
        ProtobufWriter.appendBytesField(Field.id, id.bytes, to: &bytes)
        ProtobufWriter.appendVarintField(Field.type, UInt64(type.rawValue), to: &bytes)
        ProtobufWriter.appendBytesField(Field.sender, sender.value.utf8, to: &bytes)
        ProtobufWriter.appendBytesField(Field.recipient, recipient.value.utf8, to: &bytes)
        ProtobufWriter.appendVarintField(Field.timestamp, timestamp, to: &bytes)
        if let content {
            ProtobufWriter.appendBytesField(Field.mediaType, content.mediaType.utf8, to: &bytes)
            ProtobufWriter.appendBytesField(Field.content, content.bytes, to: &bytes)
        }
        if let inReplyTo = kind.inReplyTo {
            ProtobufWriter.appendBytesField(Field.inReplyTo, inReplyTo.bytes, to: &bytes)
        }
        switch kind {
        case .request, .notification, .response: break
        case .stream(let part):
            ProtobufWriter.appendBytesField(Field.streamID, part.streamID.bytes, to: &bytes)
            ProtobufWriter.appendVarintField(Field.streamSequence, part.sequence, to: &bytes)
            ProtobufWriter.appendVarintField(Field.streamEnd, part.isEnd ? 1 : 0, to: &bytes)
        case .error(_, let code, let text):
            try Self.checkErrorCode(code)
            guard text.utf8.count <= MessageLimits.maximumErrorText else {
                throw MessageError(
                    .malformed, "error text is \(text.utf8.count) bytes; at most \(MessageLimits.maximumErrorText)")
            }
            ProtobufWriter.appendBytesField(Field.errorCode, code.utf8, to: &bytes)
            ProtobufWriter.appendBytesField(Field.errorText, text.utf8, to: &bytes)
        }
        ProtobufWriter.appendVarintField(Field.senderSequence, senderSequence, to: &bytes)
        return bytes
    }

    /// Decodes canonical envelope bytes (`range` of `bytes`).
    /// - Throws: `MessageError` `.oversized` (content over 256 KiB), `.invalidName` or `.malformed`,
    ///   for the first field that breaks a rule in wire order, then for the presence rules.
    public static func decode(_ bytes: [UInt8], range: Range<Int>? = nil) throws(MessageError) -> AgentMessage {
        var reader = ProtobufReader(bytes: bytes, range: range, what: "message")
        var id: MessageID?
        var type: MessageType?
        var sender: AgentName?
        var recipient: AgentName?
        var timestamp: UInt64?
        var mediaType: String?
        var content: [UInt8]?
        var inReplyTo: MessageID?
        var streamID: MessageID?
        var streamSequence: UInt64?
        var streamEnd = false
        var errorCode: String?
        var errorText: String?
        var senderSequence: UInt64 = 0
        while !reader.isAtEnd {
            let (number, value) = try reader.readField(schema: schema, names: fieldNames, limit: fieldLimit)
            switch (number, value) {
            case (Field.id, .bytes(let range)): id = try readID(bytes[range], "id")
            case (Field.type, .varint(let raw)):
                guard raw <= UInt64(UInt8.max), let decoded = MessageType(rawValue: UInt8(raw)) else {
                    throw MessageError(.malformed, "message type \(raw) is not one of 1 (REQUEST) to 5 (ERROR)")
                }
                type = decoded
            case (Field.sender, .bytes(let range)): sender = try readName(bytes[range], "sender")
            case (Field.recipient, .bytes(let range)): recipient = try readName(bytes[range], "recipient")
            case (Field.timestamp, .varint(let raw)): timestamp = raw
            case (Field.mediaType, .bytes(let range)):
                let text = String(decoding: bytes[range], as: UTF8.self)
                guard bytes[range].allSatisfy({ $0 >= 0x20 && $0 <= 0x7e }) else {
                    throw MessageError(.malformed, "media_type must be printable ASCII")
                }
                mediaType = text
            case (Field.content, .bytes(let range)): content = Array(bytes[range])
            case (Field.inReplyTo, .bytes(let range)): inReplyTo = try readID(bytes[range], "in_reply_to")
            case (Field.streamID, .bytes(let range)): streamID = try readID(bytes[range], "stream_id")
            case (Field.streamSequence, .varint(let raw)): streamSequence = raw
            case (Field.streamEnd, .varint(let raw)):
                guard raw == 1 else { throw MessageError(.malformed, "stream_end is \(raw); a bool is encoded as 1") }
                streamEnd = true
            case (Field.errorCode, .bytes(let range)):
                let code = String(decoding: bytes[range], as: UTF8.self)
                try checkErrorCode(code)
                errorCode = code
            case (Field.errorText, .bytes(let range)):
                guard let text = String(validating: bytes[range], as: UTF8.self) else {
                    throw MessageError(.malformed, "error_text is not valid UTF-8")
                }
                errorText = text
            case (Field.senderSequence, .varint(let raw)): senderSequence = raw
            default:
                preconditionFailure("field \(number) read with a wire type its schema does not give")
            }
        }
        guard let id else { throw MessageError(.malformed, "message has no id") }
        guard let type else { throw MessageError(.malformed, "message has no type") }
        guard let sender else { throw MessageError(.malformed, "message has no sender") }
        guard let recipient else { throw MessageError(.malformed, "message has no recipient") }
        guard let timestamp else { throw MessageError(.malformed, "message has no timestamp") }
        guard (mediaType == nil) == (content == nil) else {
            throw MessageError(.malformed, "content and media_type must be present together")
        }
        let isStream = type == .stream
        let isError = type == .error
        if !isStream, streamID != nil || streamSequence != nil || streamEnd {
            throw MessageError(.malformed, "stream fields on a \(type.name) message")
        }
        if !isError, errorCode != nil || errorText != nil {
            throw MessageError(.malformed, "error fields on a \(type.name) message")
        }
        let kind: Kind
        switch type {
        case .request, .notification:
            guard inReplyTo == nil else { throw MessageError(.malformed, "in_reply_to on a \(type.name) message") }
            kind = type == .request ? .request : .notification
        case .response:
            guard let inReplyTo else { throw MessageError(.malformed, "response has no in_reply_to") }
            kind = .response(inReplyTo: inReplyTo)
        case .stream:
            guard let streamID else { throw MessageError(.malformed, "stream part has no stream_id") }
            kind = .stream(
                StreamPart(streamID: streamID, sequence: streamSequence ?? 0, isEnd: streamEnd, inReplyTo: inReplyTo))
        case .error:
            guard let inReplyTo else { throw MessageError(.malformed, "error has no in_reply_to") }
            guard let errorCode else { throw MessageError(.malformed, "error has no error_code") }
            kind = .error(inReplyTo: inReplyTo, code: errorCode, text: errorText ?? "")
        }
        return AgentMessage(
            id: id, kind: kind, sender: sender, recipient: recipient, timestamp: timestamp,
            content: content.map { Content(mediaType: mediaType!, bytes: $0) }, senderSequence: senderSequence)
    }

    private static func readID(_ bytes: ArraySlice<UInt8>, _ field: String) throws(MessageError) -> MessageID {
        guard bytes.count == MessageID.byteCount else {
            throw MessageError(.malformed, "\(field) is \(bytes.count) bytes; ids are 16 bytes")
        }
        return try MessageID(bytes: bytes)
    }

    private static func readName(_ bytes: ArraySlice<UInt8>, _ field: String) throws(MessageError) -> AgentName {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw MessageError(.invalidName, "\(field) is not valid UTF-8")
        }
        do {
            return try AgentName(canonical: text)
        } catch {
            throw MessageError(.invalidName, "\(field): \(error.message)")
        }
    }

    /// media_type: 1–255 bytes of printable ASCII (U+0020–U+007E).
    static func checkMediaType(_ mediaType: String) throws(MessageError) {
        let count = mediaType.utf8.count
        guard count >= 1, count <= MessageLimits.maximumMediaType,
            mediaType.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7e })
        else {
            throw MessageError(.malformed, "media_type must be 1 to 255 bytes of printable ASCII")
        }
    }

    /// error_code: 1–64 bytes of `a–z 0–9 _ . -`.
    static func checkErrorCode(_ code: String) throws(MessageError) {
        let count = code.utf8.count
        let allowed = code.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
        guard count >= 1, count <= MessageLimits.maximumErrorCode, allowed else {
            throw MessageError(
                .malformed, "error_code \"\(code.prefix(80))\" must be 1 to 64 characters of a-z, 0-9, '_', '.', '-'")
        }
    }
}
