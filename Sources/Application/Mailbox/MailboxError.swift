/// Why a mailbox operation was refused. The raw values are the codes on the wire
/// (spec/mailbox.md §4) and in the control API.
public struct MailboxError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// The sealed message is larger than a replica accepts.
        case tooLarge = "too_large"
        /// The message's expiry has passed.
        case expired
        /// The message's expiry is further away than the mailbox TTL allows.
        case ttlTooLong = "ttl_too_long"
        /// The recipient's mailbox holds as many messages or bytes as it may.
        case mailboxFull = "mailbox_full"
        /// The sending peer holds as many messages or bytes at this replica as it may.
        case senderQuota = "sender_quota"
        /// The replica holds as much as it may in total.
        case storeFull = "store_full"
        /// A request is malformed (bad key length, bad id, …).
        case malformed
        /// A fetch or acknowledgement is not signed by the mailbox's owner, or is stale.
        case unauthorized
        /// The recipient's record could not be found to check a signature against.
        case unknownRecipient = "unknown_recipient"
        /// The database failed.
        case storage
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
