import Identity
import Multiformats

/// A name in the `.agent` namespace, e.g. `alice.agent` or `ops.alice.agent`.
///
/// Names are case-insensitive and stored lower case. Every label follows the DNS hostname rules
/// (RFC 1035 §2.3.1, RFC 1123 §2.1): 1–63 characters of `a–z`, `0–9` and `-`, not starting or ending
/// with `-`; the whole name is at most 253 characters. A name whose only label is a libp2p peer id
/// in CIDv1 form (base36, `k51…`) is *self-certifying*: only that peer's key may sign its record.
public struct AgentName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let suffix = ".agent"
    public static let maximumLength = 253
    public static let maximumLabelLength = 63

    /// The canonical lower-case name including `.agent`.
    public let value: String

    /// Parses `text`, with or without the `.agent` suffix, in any case.
    /// - Throws: `ResolutionError.invalidName` saying which rule is broken.
    public init(_ text: String) throws(ResolutionError) {
        // Lower-case ASCII only: Unicode case mapping would turn look-alikes into letters (U+212A
        // KELVIN SIGN lower-cases to "k"), so "\u{212A}ate" would silently become "kate".
        guard text.utf8.allSatisfy({ $0 < 0x80 }) else {
            throw ResolutionError(.invalidName, "name \"\(text.prefix(80))\" contains non-ASCII characters; labels use only a-z, 0-9 and '-'")
        }
        let lowered = String(decoding: text.utf8.map { $0 >= 0x41 && $0 <= 0x5a ? $0 | 0x20 : $0 }, as: UTF8.self)
        let full = lowered.hasSuffix(Self.suffix) ? lowered : lowered + Self.suffix
        try self.init(canonical: full, original: text)
    }

    /// Parses a name that must already be canonical (as on the wire): lower case, with the suffix.
    public init(canonical text: String) throws(ResolutionError) {
        guard text.hasSuffix(Self.suffix), text == text.lowercased() else {
            throw ResolutionError(.invalidName, "\"\(text.prefix(80))\" is not a canonical lower-case .agent name")
        }
        try self.init(canonical: text, original: text)
    }

    private init(canonical full: String, original: String) throws(ResolutionError) {
        let shown = "\"\(original.prefix(80))\(original.count > 80 ? "…" : "")\""
        guard full.utf8.count <= Self.maximumLength else {
            throw ResolutionError(.invalidName, "name \(shown) is longer than \(Self.maximumLength) characters")
        }
        let stem = full.utf8.dropLast(Self.suffix.utf8.count)
        guard !stem.isEmpty else {
            throw ResolutionError(.invalidName, "name \(shown) has nothing before .agent")
        }
        for label in stem.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty else {
                throw ResolutionError(.invalidName, "name \(shown) has an empty label")
            }
            guard label.count <= Self.maximumLabelLength else {
                throw ResolutionError(.invalidName, "name \(shown) has a label longer than 63 characters")
            }
            for byte in label {
                let allowed =
                    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-")
                guard allowed else {
                    let character = String(decoding: [byte], as: UTF8.self)
                    throw ResolutionError(
                        .invalidName,
                        "name \(shown) contains '\(byte < 0x80 ? character : "non-ASCII")'; labels use only a-z, 0-9 and '-'")
                }
            }
            guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
                throw ResolutionError(.invalidName, "name \(shown) has a label that starts or ends with '-'")
            }
        }
        self.value = full
    }

    /// The DHT record key: the bytes of `/agent/` ‖ name (spec/records.md, "DHT key").
    public var recordKey: [UInt8] { Array(("/agent/" + value).utf8) }

    /// The name in a kad record key (`"/agent/" ‖ canonical name`), or nil when `key` is not one.
    public init?(recordKey key: [UInt8]) {
        let prefix = Array("/agent/".utf8)
        // Checked before any decoding, so a peer's megabyte-long key costs nothing.
        guard key.count > prefix.count, key.count <= prefix.count + Self.maximumLength,
            key.starts(with: prefix),
            let text = String(validating: key[prefix.count...], as: UTF8.self),
            let name = try? AgentName(canonical: text)
        else { return nil }
        self = name
    }

    /// The 256-bit Kademlia key: SHA-256 of `recordKey`.
    public var dhtKey: [UInt8] { SHA256.hash(recordKey) }

    /// For a self-certifying name, the peer id it names: the only label is `k` ‖ base36 of a CIDv1
    /// `libp2p-key` holding an identity multihash of an Ed25519 key (spec/records.md §1). Labels
    /// that decode to other kinds of peer id are ordinary names: records carry Ed25519 keys only.
    public var selfCertifyingPeerID: PeerID? {
        let stem = value.dropLast(Self.suffix.count)
        guard !stem.contains("."), stem.hasPrefix("k"), let peerID = try? PeerID(String(stem)),
            peerID.ed25519PublicKey != nil
        else { return nil }
        return peerID
    }

    /// The self-certifying name of `peerID`.
    public init(selfCertifying peerID: PeerID) {
        // A base36 CIDv1 of an inlined Ed25519 key is 63 characters: a valid label by construction.
        self.value = peerID.cidString(base: .base36) + Self.suffix
    }

    public var description: String { value }

    public static func < (lhs: AgentName, rhs: AgentName) -> Bool { lhs.value < rhs.value }
}
