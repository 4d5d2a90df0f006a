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
    /// - Throws: `.unsupportedMultibase` for an empty string or unknown prefix, or the decoder's error.
    public static func decode(_ text: String) throws(MultiformatsError) -> (Multibase, [UInt8]) {
        guard let first = text.first else {
            throw MultiformatsError(.unsupportedMultibase, "empty multibase string")
        }
        guard let encoding = Multibase(rawValue: first) else {
            throw MultiformatsError(.unsupportedMultibase, "unsupported multibase prefix '\(first)'")
        }
        let body = text.dropFirst()
        switch encoding {
        case .base32: return (encoding, try Base32.decode(body))
        case .base36: return (encoding, try Multiformats.base36.decode(body))
        case .base58btc: return (encoding, try Multiformats.base58btc.decode(body))
        }
    }
}
