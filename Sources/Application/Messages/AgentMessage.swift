import Resolution

/// An agent message before signing: the envelope of spec/messages.md §2.
///
/// The type-specific fields live in `kind`, so a message that breaks the presence rules (a
/// RESPONSE without `in_reply_to`, stream fields on a REQUEST) cannot be built; the decoder
/// refuses such bytes as `malformed`. The signed, encoded form is `SignedAgentMessage`.
public struct AgentMessage: Hashable, Sendable {
    /// The wire values of the `type` field.
    public enum MessageType: UInt8, Hashable, Sendable, CaseIterable {
        case request = 1
        case response = 2
        case notification = 3
        case stream = 4
        case error = 5

        /// The lower-case name of the JSON form (`"request"`).
        public var name: String {
            switch self {
            case .request: return "request"
            case .response: return "response"
            case .notification: return "notification"
            case .stream: return "stream"
            case .error: return "error"
            }
        }

        public init?(name: String) {
            guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
            self = match
        }
    }

    /// One part of a STREAM: parts share `streamID` and count `sequence` up from 0; the last one
    /// has `isEnd`.
    public struct StreamPart: Hashable, Sendable {
        public var streamID: MessageID
        public var sequence: UInt64
        public var isEnd: Bool
        /// The request this stream answers, if any.
        public var inReplyTo: MessageID?

        public init(streamID: MessageID, sequence: UInt64, isEnd: Bool, inReplyTo: MessageID? = nil) {
            self.streamID = streamID
            self.sequence = sequence
            self.isEnd = isEnd
            self.inReplyTo = inReplyTo
        }
    }

    /// The type with its type-specific fields.
    public enum Kind: Hashable, Sendable {
        case request
        case response(inReplyTo: MessageID)
        case notification
        case stream(StreamPart)
        /// `code`: 1–64 characters of `a–z 0–9 _ . -`; `text`: at most 1024 bytes of UTF-8.
        case error(inReplyTo: MessageID, code: String, text: String)

        public var type: MessageType {
            switch self {
            case .request: return .request
            case .response: return .response
            case .notification: return .notification
            case .stream: return .stream
            case .error: return .error
            }
        }

        /// The message this one answers (RESPONSE, ERROR, and a STREAM that answers a request).
        public var inReplyTo: MessageID? {
            switch self {
            case .request, .notification: return nil
            case .response(let id), .error(let id, _, _): return id
            case .stream(let part): return part.inReplyTo
            }
        }
    }

    /// Content bytes and their media type; absent content has no media type (spec §2).
    public struct Content: Hashable, Sendable {
        public static let textMediaType = "text/plain; charset=utf-8"
        public static let jsonMediaType = "application/json"
        public static let octetStreamMediaType = "application/octet-stream"

        public var mediaType: String
        public var bytes: [UInt8]

        public init(mediaType: String, bytes: [UInt8]) {
            self.mediaType = mediaType
            self.bytes = bytes
        }

        /// UTF-8 text, `text/plain; charset=utf-8`.
        public static func text(_ text: String) -> Content {
            Content(mediaType: textMediaType, bytes: Array(text.utf8))
        }
    }

    public var id: MessageID
    public var kind: Kind
    public var sender: AgentName
    public var recipient: AgentName
    /// Milliseconds since 1970-01-01T00:00:00Z; never 0.
    public var timestamp: UInt64
    /// `nil` for a message without content (empty content is not encoded, so it reads back as nil).
    public var content: Content?
    /// The message's place in the sender's sequence to this recipient (1, 2, 3, …, assigned by the
    /// sender's node), by which a mailbox delivers in order; 0 when the sender assigns none.
    public var senderSequence: UInt64

    public init(
        id: MessageID = .random(), kind: Kind, sender: AgentName, recipient: AgentName, timestamp: UInt64,
        content: Content? = nil, senderSequence: UInt64 = 0
    ) {
        self.id = id
        self.kind = kind
        self.sender = sender
        self.recipient = recipient
        self.timestamp = timestamp
        self.content = content.flatMap { $0.bytes.isEmpty ? nil : $0 }
        self.senderSequence = senderSequence
    }

    public var type: MessageType { kind.type }
}

/// Limits of spec/messages.md §4, one place.
public enum MessageLimits {
    /// Content bytes per message: 256 KiB. Larger data travels as STREAM parts.
    public static let maximumContent = 262_144
    /// The whole signed message (`SignedMessage` bytes): content plus room for every other field.
    public static let maximumMessage = 270_336
    /// `media_type`: 1–255 bytes of printable ASCII.
    public static let maximumMediaType = 255
    /// `error_code`: 1–64 bytes of `a–z 0–9 _ . -`.
    public static let maximumErrorCode = 64
    /// `error_text`: at most 1024 bytes of UTF-8.
    public static let maximumErrorText = 1024
}
