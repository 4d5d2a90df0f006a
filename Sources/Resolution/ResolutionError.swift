/// The one error type of the `Resolution` module. Every way a record can be refused has its own
/// `kind`, so callers (the DHT, `agentctl record verify`, the control API) can switch on it, and a
/// `message` that tells a person exactly what was wrong.
public struct ResolutionError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// The name is not a valid `.agent` name.
        case invalidName = "invalid_name"
        /// The record bytes do not follow the wire format (truncated, bad field, a field or list over
        /// its limit, trailing bytes).
        case malformed
        /// The record is over 8192 bytes.
        case oversized
        /// The record's signature does not verify under its key.
        case badSignature = "bad_signature"
        /// The rotation endorsement does not verify under the previous key.
        case badRotation = "bad_rotation"
        /// The TTL is outside the allowed range.
        case ttlOutOfRange = "ttl_out_of_range"
        /// The timestamp is further in the future than the allowed clock skew.
        case fromTheFuture = "from_the_future"
        /// The timestamp is older than the maximum record age (7 days).
        case tooOld = "too_old"
        /// `timestamp + ttl` has passed.
        case expired
        /// A self-certifying name (`<peer id>.agent`) with a record signed by a different key.
        case selfCertifyingMismatch = "self_certifying_mismatch"
        /// Same key, lower seq than the record held.
        case staleSeq = "stale_seq"
        /// Same key, same seq, different content: the owner signed two versions (equivocation).
        case conflictingSeq = "conflicting_seq"
        /// A different key while the current claim is live and no rotation from its key is shown.
        case nameHeld = "name_held"
        /// A rotation endorsed by a key other than the current holder's.
        case rotationFromWrongKey = "rotation_from_wrong_key"
        /// The record store holds its maximum number of records (total, or for one sending peer).
        case storeFull = "store_full"
        /// The record store (SQLite) failed: the database could not be opened, read or written.
        case storage
        /// No valid record was found for the name.
        case notFound = "not_found"
        /// A DHT request or lookup failed (peer unreachable, timed out, answered with garbage).
        case network
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
