import Identity
import Multiformats

/// A `.agent` record with its signature, in the exact bytes that were signed and travel on the wire.
///
/// Layout (spec/records.md, "Wire format"): `body ‖ signature(64)`, where the signature is Ed25519
/// by `record.publicKey` over `"agent-record:v1\n" ‖ body`.
///
/// `init(bytes:)` checks structure only; `validate(now:)` checks signatures, time and name rules.
public struct SignedAgentRecord: Hashable, Sendable {
    /// The decoded content.
    public let record: AgentRecord
    /// The Ed25519 signature over the signing context and the body.
    public let signature: [UInt8]
    /// The full encoded record, as signed and transmitted.
    public let bytes: [UInt8]
    let bodyLength: Int

    init(record: AgentRecord, signature: [UInt8], bytes: [UInt8], bodyLength: Int) {
        self.record = record
        self.signature = signature
        self.bytes = bytes
        self.bodyLength = bodyLength
    }

    /// Decodes a record. Every length is checked against the remaining input and its limit before it
    /// is used.
    /// - Throws: `ResolutionError` of kind `.oversized`, `.malformed` or `.invalidName`.
    public init<Bytes: Collection<UInt8>>(bytes input: Bytes) throws(ResolutionError) {
        guard input.count <= RecordLimits.maximumRecordSize else {
            throw ResolutionError(
                .oversized, "record is \(input.count) bytes, over the \(RecordLimits.maximumRecordSize)-byte limit")
        }
        let bytes = Array(input)
        var reader = RecordReader(bytes: bytes)
        let record = try AgentRecord.decodeBody(from: &reader)
        let bodyLength = reader.index
        let signature = try reader.readBytes(Ed25519.signatureLength, "signature")
        guard reader.isAtEnd else {
            throw ResolutionError(.malformed, "\(bytes.count - reader.index) unexpected bytes after the signature")
        }
        self.init(record: record, signature: signature, bytes: bytes, bodyLength: bodyLength)
    }

    /// The bytes the signature covers.
    public var signedPayload: [UInt8] { AgentRecord.signingContext + bytes[0..<bodyLength] }

    /// Checks the record on its own at time `now` (seconds since the epoch): signature, rotation
    /// endorsement, self-certifying name, TTL range, age, expiry and clock skew.
    /// - Throws: `ResolutionError` of the first rule broken, in the order of spec/records.md.
    public func validate(now: UInt64) throws(ResolutionError) {
        try validateContent()
        try validateTiming(now: now)
    }

    /// The rules of `validate(now:)` that do not depend on the time: signature, rotation
    /// endorsement, self-certifying name, TTL range. Their verdict on given bytes never changes, so
    /// a caller that sees one record many times may remember it (the simulator does, by record
    /// hash) and check only `validateTiming(now:)` on each use.
    /// - Throws: `ResolutionError` of the first rule broken, in the order of spec/records.md.
    public func validateContent() throws(ResolutionError) {
        let record = self.record
        guard record.publicKey.isValidSignature(signature, for: signedPayload) else {
            throw ResolutionError(
                .badSignature, "record for \(record.name) does not carry a valid signature by \(record.peerID)")
        }
        if let rotation = record.rotation {
            guard rotation.previousKey != record.publicKey else {
                throw ResolutionError(.badRotation, "record for \(record.name) rotates from its own key")
            }
            guard rotation.isValid(name: record.name, newKey: record.publicKey) else {
                throw ResolutionError(
                    .badRotation,
                    "rotation of \(record.name) to \(record.peerID) is not signed by the previous key \(PeerID(publicKey: rotation.previousKey))")
            }
        }
        if let owner = record.name.selfCertifyingPeerID, !owner.matches(record.publicKey) {
            throw ResolutionError(
                .selfCertifyingMismatch,
                "\(record.name) is the self-certifying name of \(owner), but the record is signed by \(record.peerID)")
        }
        guard (RecordLimits.minimumTTL...RecordLimits.maximumTTL).contains(record.ttl) else {
            throw ResolutionError(
                .ttlOutOfRange,
                "record for \(record.name) has ttl \(record.ttl) s; allowed is \(RecordLimits.minimumTTL) to \(RecordLimits.maximumTTL) s")
        }
    }

    /// The rules of `validate(now:)` that depend on the time `now`: clock skew, age, expiry.
    /// - Throws: `ResolutionError` of the first rule broken, in the order of spec/records.md.
    public func validateTiming(now: UInt64) throws(ResolutionError) {
        let record = self.record
        if record.timestamp > now, record.timestamp - now > RecordLimits.maximumClockSkew {
            throw ResolutionError(
                .fromTheFuture,
                "record for \(record.name) is dated \(Timestamp.iso8601(record.timestamp)), \(record.timestamp - now) s ahead of this clock (\(Timestamp.iso8601(now))); at most \(RecordLimits.maximumClockSkew) s of skew is allowed")
        }
        if now > record.timestamp, now - record.timestamp > RecordLimits.maximumAge {
            throw ResolutionError(
                .tooOld,
                "record for \(record.name) was signed at \(Timestamp.iso8601(record.timestamp)), more than 7 days ago")
        }
        guard !record.isExpired(at: now) else {
            throw ResolutionError(
                .expired, "record for \(record.name) expired at \(Timestamp.iso8601(record.expires))")
        }
    }
}

extension AgentRecord {
    /// Domain separation for record signatures, so a record signature can never be replayed as a
    /// signature of any other protocol that uses the same key (Noise payloads, messages).
    public static let signingContext = Array("agent-record:v1\n".utf8)
    /// The only wire version so far.
    static let wireVersion: UInt8 = 1
    /// Key type byte for Ed25519 (the libp2p `KeyType` value).
    static let keyTypeEd25519: UInt8 = 1

    func encodeBody(into bytes: inout [UInt8]) throws(ResolutionError) {
        guard addresses.count <= RecordLimits.maximumAddresses else {
            throw ResolutionError(.malformed, "record has \(addresses.count) addresses; at most \(RecordLimits.maximumAddresses)")
        }
        guard protocols.count <= RecordLimits.maximumProtocols else {
            throw ResolutionError(.malformed, "record has \(protocols.count) protocols; at most \(RecordLimits.maximumProtocols)")
        }
        for proto in protocols { try Self.checkProtocol(proto) }
        bytes.append(Self.wireVersion)
        UVarint.encode(UInt64(name.value.utf8.count), into: &bytes)
        bytes.append(contentsOf: name.value.utf8)
        bytes.append(Self.keyTypeEd25519)
        bytes.append(contentsOf: publicKey.rawRepresentation)
        bytes.appendBigEndian(seq)
        bytes.appendBigEndian(timestamp)
        bytes.appendBigEndian(ttl)
        UVarint.encode(UInt64(addresses.count), into: &bytes)
        for address in addresses {
            let binary = address.bytes
            UVarint.encode(UInt64(binary.count), into: &bytes)
            bytes.append(contentsOf: binary)
        }
        UVarint.encode(UInt64(protocols.count), into: &bytes)
        for proto in protocols {
            UVarint.encode(UInt64(proto.utf8.count), into: &bytes)
            bytes.append(contentsOf: proto.utf8)
        }
        if let rotation {
            bytes.append(1)
            bytes.append(contentsOf: rotation.previousKey.rawRepresentation)
            bytes.append(contentsOf: rotation.signature)
        } else {
            bytes.append(0)
        }
    }

    static func decodeBody(from reader: inout RecordReader) throws(ResolutionError) -> AgentRecord {
        let version = try reader.readByte("version")
        guard version == wireVersion else {
            throw ResolutionError(.malformed, "record version \(version) is not supported (expected \(wireVersion))")
        }
        let nameLength = try reader.readLength("name", limit: AgentName.maximumLength)
        guard nameLength > 0 else { throw ResolutionError(.malformed, "record name is empty") }
        let nameBytes = try reader.readBytes(nameLength, "name")
        guard let nameText = String(validating: nameBytes, as: UTF8.self) else {
            throw ResolutionError(.invalidName, "record name is not valid UTF-8")
        }
        let name = try AgentName(canonical: nameText)
        let keyType = try reader.readByte("key type")
        guard keyType == keyTypeEd25519 else {
            throw ResolutionError(.malformed, "record key type \(keyType) is not supported (only Ed25519, 1)")
        }
        let publicKey = try reader.readKey("public key")
        let seq = try reader.readUInt64("seq")
        let timestamp = try reader.readUInt64("timestamp")
        let ttl = UInt32(try reader.readUInt64Bytes(4, "ttl"))
        let addressCount = try reader.readLength("address count", limit: RecordLimits.maximumAddresses)
        var addresses: [Multiaddr] = []
        for index in 0..<addressCount {
            let length = try reader.readLength("address \(index) length", limit: Multiaddr.maximumByteCount)
            let binary = try reader.readBytes(length, "address \(index)")
            do {
                addresses.append(try Multiaddr(bytes: binary))
            } catch {
                throw ResolutionError(.malformed, "record address \(index) is not a valid multiaddr: \(error.message)")
            }
        }
        let protocolCount = try reader.readLength("protocol count", limit: RecordLimits.maximumProtocols)
        var protocols: [String] = []
        for index in 0..<protocolCount {
            let length = try reader.readLength("protocol \(index)", limit: RecordLimits.maximumProtocolLength)
            let raw = try reader.readBytes(length, "protocol \(index)")
            guard let text = String(validating: raw, as: UTF8.self) else {
                throw ResolutionError(.malformed, "record protocol \(index) is not valid UTF-8")
            }
            try checkProtocol(text)
            protocols.append(text)
        }
        let rotation: RecordRotation?
        switch try reader.readByte("rotation flag") {
        case 0: rotation = nil
        case 1:
            let previousKey = try reader.readKey("rotation previous key")
            let signature = try reader.readBytes(Ed25519.signatureLength, "rotation signature")
            rotation = RecordRotation(previousKey: previousKey, signature: signature)
        case let flag:
            throw ResolutionError(.malformed, "record rotation flag is \(flag); must be 0 or 1")
        }
        return AgentRecord(
            name: name, publicKey: publicKey, seq: seq, timestamp: timestamp, ttl: ttl, addresses: addresses,
            protocols: protocols, rotation: rotation)
    }

    /// Protocol ids are 1–256 bytes of UTF-8 without control characters.
    static func checkProtocol(_ proto: String) throws(ResolutionError) {
        let count = proto.utf8.count
        guard count >= 1, count <= RecordLimits.maximumProtocolLength else {
            throw ResolutionError(.malformed, "protocol id must be 1 to \(RecordLimits.maximumProtocolLength) bytes")
        }
        guard !proto.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw ResolutionError(.malformed, "protocol id \(proto.debugDescription) contains control characters")
        }
    }
}

/// A cursor over record bytes whose every read is bounds-checked.
struct RecordReader {
    let bytes: [UInt8]
    private(set) var index = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index == bytes.count }

    mutating func readByte(_ field: String) throws(ResolutionError) -> UInt8 {
        guard index < bytes.count else { throw ResolutionError(.malformed, "record ends before its \(field)") }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func readBytes(_ count: Int, _ field: String) throws(ResolutionError) -> [UInt8] {
        guard count <= bytes.count - index else {
            throw ResolutionError(.malformed, "record ends inside its \(field) (needs \(count) bytes, \(bytes.count - index) left)")
        }
        defer { index += count }
        return Array(bytes[index..<(index + count)])
    }

    mutating func readUInt64Bytes(_ count: Int, _ field: String) throws(ResolutionError) -> UInt64 {
        try readBytes(count, field).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func readUInt64(_ field: String) throws(ResolutionError) -> UInt64 {
        try readUInt64Bytes(8, field)
    }

    mutating func readLength(_ field: String, limit: Int) throws(ResolutionError) -> Int {
        let value: UInt64
        do {
            value = try UVarint.read(bytes, at: &index)
        } catch {
            throw ResolutionError(.malformed, "record \(field) is not a valid varint: \(error.message)")
        }
        guard value <= UInt64(limit) else {
            throw ResolutionError(.malformed, "record \(field) is \(value); the limit is \(limit)")
        }
        return Int(value)
    }

    mutating func readKey(_ field: String) throws(ResolutionError) -> Ed25519.PublicKey {
        let raw = try readBytes(Ed25519.publicKeyLength, field)
        do {
            return try Ed25519.PublicKey(rawRepresentation: raw)
        } catch {
            throw ResolutionError(.malformed, "record \(field) is not a usable Ed25519 key: \(error.message)")
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian<Value: FixedWidthInteger>(_ value: Value) {
        var bigEndian = value.bigEndian
        Swift.withUnsafeBytes(of: &bigEndian) { self.append(contentsOf: $0) }
    }
}
