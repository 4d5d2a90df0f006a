/// The multibase encodings this implementation reads and writes (multiformats/multibase).
public enum Multibase: Character, Sendable, CaseIterable {
    /// RFC 4648 base32, lower case, no padding.
    case base32 = "b"
    /// Base36, lower case.
    case base36 = "k"
    /// Base58 with the Bitcoin alphabet.
    case base58btc = "z"

    /// Encodes `bytes` with the multibase prefix.
    public func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        switch self {
        case .base32: return "b" + Base32.encode(bytes)
        case .base36: return "k" + Multiformats.base36.encode(bytes)
        case .base58btc: return "z" + Multiformats.base58btc.encode(bytes)
        }
    }

    /// Decodes a multibase string, returning its encoding and bytes.
    ///
    /// base32 and base36 are case-insensitive (multibase spec): the upper-case prefixes `B` and `K`
    /// and mixed-case bodies decode to the same bytes.
    /// - Throws: `.unsupportedMultibase` for an empty string or unknown prefix, or the decoder's error.
    public static func decode(_ text: String) throws(MultiformatsError) -> (Multibase, [UInt8]) {
        guard let first = text.first else {
            throw MultiformatsError(.unsupportedMultibase, "empty multibase string")
        }
        let encoding: Multibase
        var body = text.dropFirst()
        switch first {
        case "B", "K":
            encoding = first == "B" ? .base32 : .base36
        default:
            guard let known = Multibase(rawValue: first) else {
                throw MultiformatsError(.unsupportedMultibase, "unsupported multibase prefix '\(first)'")
            }
            encoding = known
        }
        if encoding != .base58btc, body.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5a }) {
            body = Substring(body.lowercased())
        }
        switch encoding {
        case .base32: return (encoding, try Base32.decode(body))
        case .base36: return (encoding, try Multiformats.base36.decode(body))
        case .base58btc: return (encoding, try Multiformats.base58btc.decode(body))
        }
    }
}
