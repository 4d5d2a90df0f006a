import Identity
import Multiformats

/// The content of a `.agent` record: who holds a name, where to reach them and what they speak.
///
/// The signed, encoded form is `SignedAgentRecord`; spec/records.md gives the byte layout.
public struct AgentRecord: Hashable, Sendable {
    /// The name the record is for.
    public var name: AgentName
    /// The key that signs the record and owns the name.
    public var publicKey: Ed25519.PublicKey
    /// Version number; a holder's updates must strictly increase it.
    public var seq: UInt64
    /// When the record was signed, in seconds since the Unix epoch (UTC).
    public var timestamp: UInt64
    /// Seconds after `timestamp` until the record expires.
    public var ttl: UInt32
    /// Where the agent can be reached.
    public var addresses: [Multiaddr]
    /// Protocol ids the agent speaks, e.g. `/agent/msg/1.0.0`.
    public var protocols: [String]
    /// Present when this record moves the name from a previous key to `publicKey`.
    public var rotation: RecordRotation?

    public init(
        name: AgentName, publicKey: Ed25519.PublicKey, seq: UInt64, timestamp: UInt64,
        ttl: UInt32 = RecordLimits.defaultTTL, addresses: [Multiaddr] = [], protocols: [String] = [],
        rotation: RecordRotation? = nil
    ) {
        self.name = name
        self.publicKey = publicKey
        self.seq = seq
        self.timestamp = timestamp
        self.ttl = ttl
        self.addresses = addresses
        self.protocols = protocols
        self.rotation = rotation
    }

    /// The peer id of the signing key.
    public var peerID: PeerID { PeerID(publicKey: publicKey) }

    /// `timestamp + ttl`, in seconds since the epoch; saturates at `UInt64.max` rather than wrap
    /// (spec/records.md §4: the arithmetic is exact, and every `now` is below a saturated sum).
    public var expires: UInt64 {
        let (sum, overflow) = timestamp.addingReportingOverflow(UInt64(ttl))
        return overflow ? .max : sum
    }

    /// Whether the record has expired at `now`.
    public func isExpired(at now: UInt64) -> Bool { now > expires }

    /// Signs the record with `key`, which must be the key named in `publicKey`.
    /// - Throws: `ResolutionError` when the record breaks a structural limit (size, list lengths),
    ///   so that no one can sign a record that others would refuse to decode.
    public func signed(with key: Ed25519.PrivateKey) throws(ResolutionError) -> SignedAgentRecord {
        precondition(key.publicKey == publicKey, "signing key does not match the record's public key")
        var body: [UInt8] = []
        try encodeBody(into: &body)
        let signature = key.signature(for: AgentRecord.signingContext + body)
        var bytes = body
        bytes.append(contentsOf: signature)
        guard bytes.count <= RecordLimits.maximumRecordSize else {
            throw ResolutionError(
                .oversized, "record is \(bytes.count) bytes, over the \(RecordLimits.maximumRecordSize)-byte limit")
        }
        return SignedAgentRecord(record: self, signature: signature, bytes: bytes, bodyLength: body.count)
    }
}

/// Moves a name from one key to another: the previous key signs
/// `"agent-record-rotation:v1\n"` ‖ uvarint(len name) ‖ name ‖ new public key.
///
/// The endorsement names the new key and the name but not a seq, so the new holder can keep
/// attaching it to later records without the old key's help (replicas that missed the first
/// rotated record then still accept later ones while the old claim is live).
public struct RecordRotation: Hashable, Sendable {
    /// The key that held the name before.
    public var previousKey: Ed25519.PublicKey
    /// Ed25519 signature by `previousKey` over the rotation statement.
    public var signature: [UInt8]

    public init(previousKey: Ed25519.PublicKey, signature: [UInt8]) {
        self.previousKey = previousKey
        self.signature = signature
    }

    /// The previous key's endorsement of `newKey` as holder of `name`.
    public static func endorse(
        name: AgentName, newKey: Ed25519.PublicKey, by previousKey: Ed25519.PrivateKey
    ) -> RecordRotation {
        let statement = statement(name: name, newKey: newKey)
        return RecordRotation(previousKey: previousKey.publicKey, signature: previousKey.signature(for: statement))
    }

    /// The signed statement (spec/records.md, "Rotation").
    public static func statement(name: AgentName, newKey: Ed25519.PublicKey) -> [UInt8] {
        var bytes = Array("agent-record-rotation:v1\n".utf8)
        UVarint.encode(UInt64(name.value.utf8.count), into: &bytes)
        bytes.append(contentsOf: name.value.utf8)
        bytes.append(contentsOf: newKey.rawRepresentation)
        return bytes
    }

    /// Whether the endorsement verifies for `name` and `newKey`.
    public func isValid(name: AgentName, newKey: Ed25519.PublicKey) -> Bool {
        previousKey.isValidSignature(signature, for: Self.statement(name: name, newKey: newKey))
    }
}
