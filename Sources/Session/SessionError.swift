/// The one error type of the `Session` module (multistream-select, Noise, yamux): a stable `kind`
/// that code switches on and a `message` that names what the peer (or we) did wrong.
public struct SessionError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// The peer sent bytes that break the protocol (bad frame, unexpected message, bad version).
        case protocolViolation = "protocol_violation"
        /// multistream-select ended without a protocol both sides support.
        case negotiationFailed = "negotiation_failed"
        /// A message or frame is larger than the limit for it.
        case messageTooLarge = "message_too_large"
        /// The Noise handshake failed (bad payload, bad signature, bad key).
        case handshakeFailed = "handshake_failed"
        /// The authenticated peer is not the peer that was dialled.
        case peerIDMismatch = "peer_id_mismatch"
        /// A Noise message failed authentication (tampered, reordered or replayed).
        case decryptionFailed = "decryption_failed"
        /// A Noise cipher state used up its nonces.
        case nonceExhausted = "nonce_exhausted"
        /// The peer sent more than the flow-control window allows, or overflowed a window.
        case flowControlViolation = "flow_control_violation"
        /// Too many streams, or too many bytes buffered.
        case resourceLimit = "resource_limit"
        /// An operation on a stream that is closed or reset.
        case streamClosed = "stream_closed"
        /// The peer reset the stream.
        case streamReset = "stream_reset"
        /// The session is shutting down (GoAway sent or received).
        case goingAway = "going_away"
        /// A deadline passed (handshake, negotiation, ping).
        case timeout
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
