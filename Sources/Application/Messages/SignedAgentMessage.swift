import Identity
import Resolution

/// A message with its signature, in the exact bytes that were signed and travel on the wire
/// (spec/messages.md §3–4):
///
///     SignedMessage { bytes envelope = 1; bytes signature = 2; }
///
/// `signature` is Ed25519 by the key the sender's `.agent` record names, over
/// `"agent-msg:v1\n" ‖ envelope`. `init(bytes:)` checks structure only; `MessageAcceptance` decides
/// whether a receiver takes it.
public struct SignedAgentMessage: Hashable, Sendable {
    /// Domain separation: a message signature is never valid as a record, rotation or Noise
    /// signature by the same key, nor the other way round.
    public static let signingContext = Array("agent-msg:v1\n".utf8)

    /// The decoded envelope.
    public let message: AgentMessage
    /// The canonical envelope bytes the signature covers.
    public let envelope: [UInt8]
    /// 64 bytes.
    public let signature: [UInt8]
    /// The whole `SignedMessage` encoding.
    public let bytes: [UInt8]

    /// Signs `message` with `key`.
    /// - Throws: `MessageError` when the message breaks a limit (see `AgentMessage.encoded()`).
    public init(signing message: AgentMessage, with key: Ed25519.PrivateKey) throws(MessageError) {
        let envelope = try message.encoded()
        let signature = key.signature(for: Self.signingContext + envelope)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(envelope.count + 72)
        ProtobufWriter.appendBytesField(1, envelope, to: &bytes)
        ProtobufWriter.appendBytesField(2, signature, to: &bytes)
        guard bytes.count <= MessageLimits.maximumMessage else {
            throw MessageError(
                .oversized, "message is \(bytes.count) bytes, over the \(MessageLimits.maximumMessage)-byte limit")
        }
        self.message = message
        self.envelope = envelope
        self.signature = signature
        self.bytes = bytes
    }

    /// Decodes a signed message. The size is checked first, then the two outer fields, then the
    /// envelope (`AgentMessage.decode`).
    /// - Throws: `MessageError` `.oversized`, `.malformed` or `.invalidName`.
    public init<Bytes: Collection<UInt8>>(bytes input: Bytes) throws(MessageError) {
        guard input.count <= MessageLimits.maximumMessage else {
            throw MessageError(
                .oversized, "message is \(input.count) bytes, over the \(MessageLimits.maximumMessage)-byte limit")
        }
        let bytes = Array(input)
        var reader = ProtobufReader(bytes: bytes, what: "signed message")
        var envelopeRange: Range<Int>?
        var signature: [UInt8]?
        while !reader.isAtEnd {
            let (number, value) = try reader.readField(
                schema: [1: .lengthDelimited, 2: .lengthDelimited], names: [1: "envelope", 2: "signature"],
                limit: { $0 == 1 ? (MessageLimits.maximumMessage, .oversized) : (Ed25519.signatureLength, .malformed) })
            guard case .bytes(let range) = value else { preconditionFailure("length-delimited fields only") }
            if number == 1 {
                envelopeRange = range
            } else {
                guard range.count == Ed25519.signatureLength else {
                    throw MessageError(.malformed, "signature is \(range.count) bytes, not 64")
                }
                signature = Array(bytes[range])
            }
        }
        guard let envelopeRange else { throw MessageError(.malformed, "signed message has no envelope") }
        guard let signature else { throw MessageError(.malformed, "signed message has no signature") }
        self.message = try AgentMessage.decode(bytes, range: envelopeRange)
        self.envelope = Array(bytes[envelopeRange])
        self.signature = signature
        self.bytes = bytes
    }

    /// Whether the signature verifies under `key` (RFC 8032 with libsodium's checks, as records).
    public func isSigned(by key: Ed25519.PublicKey) -> Bool {
        key.isValidSignature(signature, for: Self.signingContext + envelope)
    }

    /// The key that may sign for `name` when the name alone determines it: a self-certifying name's
    /// peer key (spec/records.md §1); nil for other names, whose key comes from their record.
    public static func selfCertifyingKey(of name: AgentName) -> Ed25519.PublicKey? {
        name.selfCertifyingPeerID?.ed25519PublicKey
    }
}
