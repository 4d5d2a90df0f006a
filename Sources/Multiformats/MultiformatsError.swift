/// The one error type of the `Multiformats` module.
///
/// `kind` is stable and meant for code to switch on; `message` is meant for a person and names the
/// offending input where that helps.
public struct MultiformatsError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable category.
    public enum Kind: String, Hashable, Sendable {
        /// The input ended before a complete value was read.
        case truncated
        /// A varint was longer than 9 bytes, overflowed, or was not minimally encoded.
        case invalidVarint = "invalid_varint"
        /// A character is not part of the encoding's alphabet, or the text is not canonical.
        case invalidEncoding = "invalid_encoding"
        /// The multibase prefix is unknown or not accepted here.
        case unsupportedMultibase = "unsupported_multibase"
        /// A multihash is malformed (length mismatch, unsupported function, bad digest size).
        case invalidMultihash = "invalid_multihash"
        /// A multiaddr names a protocol code or name this implementation does not know.
        case unknownProtocol = "unknown_protocol"
        /// A multiaddr component value is malformed (bad IP address, port out of range, ...).
        case invalidMultiaddr = "invalid_multiaddr"
        /// Bytes remained after a value that must span its whole input.
        case trailingBytes = "trailing_bytes"
        /// A length is over the limit this implementation accepts.
        case tooLarge = "too_large"
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
