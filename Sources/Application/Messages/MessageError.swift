/// The error type of agent messages (spec/messages.md §7): a stable kind that code switches on and
/// that travels in receipts, and a message a person can act on.
public struct MessageError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        // Decoding (spec/messages.md §3): the bytes are not a message.
        /// Over the size limit of the whole message or of its content.
        case oversized
        /// Not the canonical encoding, a field over its limit, a missing or misplaced field.
        case malformed
        /// A sender or recipient that is not a canonical `.agent` name.
        case invalidName = "invalid_name"
        // Acceptance (spec/messages.md §5): a well-formed message the receiver refuses.
        /// The recipient is not a name this node serves.
        case wrongRecipient = "wrong_recipient"
        /// The timestamp is more than the allowed skew ahead of the receiver's clock.
        case fromTheFuture = "from_the_future"
        /// The timestamp is older than the acceptance window (or than what the replay window covers).
        case tooOld = "too_old"
        /// No valid record names a key for the sender.
        case unknownSender = "unknown_sender"
        /// The signature does not verify under the key the sender's record names.
        case badSignature = "bad_signature"
        /// The same sender's message with this id was accepted already.
        case replayed
        /// A STREAM part out of place: a sequence already seen, beyond the reassembly window, or
        /// after the part that ended the stream.
        case badStream = "bad_stream"
        /// The receiver is at a limit (open streams, reassembly buffer, handler backlog); retry later.
        case busy
        /// The receiving agent refused the message (e.g. a blocked sender).
        case refused
        // Sender side: what went wrong before any receipt came back.
        /// The recipient could not be resolved or connected to.
        case unreachable
        /// The recipient's node does not speak `/agent/msg/1.0.0`.
        case protocolNotSupported = "protocol_not_supported"
        /// No receipt, or no response to a request, within the time allowed.
        case timeout
        /// The peer broke the protocol (a malformed receipt, a receipt for another message).
        case protocolViolation = "protocol_violation"
        /// The sender is not a name this node can sign for.
        case unknownLocalName = "unknown_local_name"
        /// The service is shut down.
        case shutdown

        /// Whether a receiver may answer with this kind in a receipt (spec/messages.md §7).
        public var isReceiptCode: Bool {
            switch self {
            case .oversized, .malformed, .invalidName, .wrongRecipient, .fromTheFuture, .tooOld, .unknownSender,
                .badSignature, .replayed, .badStream, .busy, .refused:
                return true
            case .unreachable, .protocolNotSupported, .timeout, .protocolViolation, .unknownLocalName, .shutdown:
                return false
            }
        }
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
