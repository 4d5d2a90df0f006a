import Identity
import Resolution

/// The receiver's rules for a decoded message (spec/messages.md §5), as pure functions, in the
/// order the spec gives: recipient, clock, sender key, signature; the replay check
/// (`ReplayGuard`) comes last, once the message is known to be authentic.
public enum MessageAcceptance {
    /// The acceptance window.
    public struct Policy: Hashable, Sendable {
        /// A message dated more than this far ahead of the receiver's clock is `from_the_future`
        /// (ms; 300 s, as records).
        public var maximumFutureSkew: UInt64 = 300_000
        /// A message dated more than this long before the receiver's clock is `too_old` (ms; 600 s:
        /// clock skew plus time in queues and retries).
        public var maximumAge: UInt64 = 600_000

        public init() {}
    }

    /// Checks the recipient and the timestamp (spec §5.1 rules 2–4).
    /// - Parameters:
    ///   - serves: whether this node serves a name.
    ///   - now: the receiver's clock, ms since the epoch.
    public static func checkAddressAndTime(
        _ message: AgentMessage, serves: (AgentName) -> Bool, now: UInt64, policy: Policy = Policy()
    ) throws(MessageError) {
        guard serves(message.recipient) else {
            throw MessageError(
                .wrongRecipient, "message \(message.id) is for \(message.recipient), which this node does not serve")
        }
        if message.timestamp > now, message.timestamp - now > policy.maximumFutureSkew {
            throw MessageError(
                .fromTheFuture,
                "message \(message.id) from \(message.sender) is dated \(MessageTime.rfc3339(message.timestamp)), \(message.timestamp - now) ms ahead of this clock; at most \(policy.maximumFutureSkew) ms is allowed"
            )
        }
        if now > message.timestamp, now - message.timestamp > policy.maximumAge {
            throw MessageError(
                .tooOld,
                "message \(message.id) from \(message.sender) is dated \(MessageTime.rfc3339(message.timestamp)), more than \(policy.maximumAge / 1000) s before this clock"
            )
        }
    }

    /// The key that must have signed a message from `sender` (spec §4): the key of a
    /// self-certifying name, else the key of the sender's record, which must be for `sender` and
    /// valid at `now` (ms).
    /// - Throws: `.unknownSender` when `record` is nil, for another name, or not valid.
    public static func senderKey(
        _ sender: AgentName, record: SignedAgentRecord?, now: UInt64
    ) throws(MessageError) -> Ed25519.PublicKey {
        if let key = SignedAgentMessage.selfCertifyingKey(of: sender) { return key }
        guard let record else {
            throw MessageError(.unknownSender, "no record names a key for \(sender)")
        }
        guard record.record.name == sender else {
            throw MessageError(.unknownSender, "the record offered for \(sender) is for \(record.record.name)")
        }
        do {
            try record.validate(now: now / 1000)
        } catch {
            throw MessageError(.unknownSender, "the record of \(sender) is not valid: \(error.message)")
        }
        return record.record.publicKey
    }

    /// Checks the signature (spec §5.1 rule 6).
    public static func checkSignature(_ signed: SignedAgentMessage, key: Ed25519.PublicKey) throws(MessageError) {
        guard signed.isSigned(by: key) else {
            throw MessageError(
                .badSignature,
                "message \(signed.message.id) from \(signed.message.sender) is not signed by the key its record names (\(PeerID(publicKey: key)))"
            )
        }
    }
}
