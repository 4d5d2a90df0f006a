import NIOCore

/// A multihash (multiformats/multihash): `varint code ‖ varint digest length ‖ digest`.
///
/// Only the functions libp2p peer ids use are accepted: `identity` (for keys of at most 42 bytes)
/// and `sha2-256` (32-byte digest). Anything else is rejected when parsing rather than carried
/// around unverifiable.
public struct Multihash: Hashable, Sendable {
    /// Longest `identity` digest accepted. libp2p inlines keys of at most 42 bytes; the margin lets
    /// slightly larger keys through while keeping hostile lengths out.
    public static let maximumIdentityDigestLength = 128

    /// The hash function code (`Multicodec.identity` or `Multicodec.sha2_256`).
    public let code: UInt64
    /// The digest bytes.
    public let digest: [UInt8]

    /// Creates a multihash, checking the digest length for the function.
    public init(code: UInt64, digest: [UInt8]) throws(MultiformatsError) {
        switch code {
        case Multicodec.identity:
            guard digest.count <= Self.maximumIdentityDigestLength else {
                throw MultiformatsError(
                    .invalidMultihash,
                    "identity multihash of \(digest.count) bytes is over the \(Self.maximumIdentityDigestLength)-byte limit")
            }
        case Multicodec.sha2_256:
            guard digest.count == 32 else {
                throw MultiformatsError(.invalidMultihash, "sha2-256 multihash must have a 32-byte digest, not \(digest.count)")
            }
        default:
            throw MultiformatsError(.invalidMultihash, "unsupported multihash function 0x\(String(code, radix: 16))")
        }
        self.code = code
        self.digest = digest
    }

    /// Parses a multihash that spans all of `bytes`.
    public init<Bytes: Collection<UInt8>>(bytes: Bytes) throws(MultiformatsError) {
        let array = Array(bytes)
        var index = 0
        try self.init(reading: array, at: &index)
        guard index == array.count else {
            throw MultiformatsError(.trailingBytes, "\(array.count - index) bytes follow the multihash")
        }
    }

    /// Parses a multihash at `index` in `bytes`, advancing `index` past it.
    public init(reading bytes: [UInt8], at index: inout Int) throws(MultiformatsError) {
        let code = try UVarint.read(bytes, at: &index)
        let length = try UVarint.read(bytes, at: &index)
        // Check the claimed length against what is there before slicing: a hostile length must not
        // become an allocation or a trap.
        guard length <= UInt64(bytes.count - index) else {
            throw MultiformatsError(.truncated, "multihash claims \(length) digest bytes, only \(bytes.count - index) remain")
        }
        let digest = Array(bytes[index..<(index + Int(length))])
        try self.init(code: code, digest: digest)
        index += Int(length)
    }

    /// The binary form.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + digest.count)
        UVarint.encode(code, into: &bytes)
        UVarint.encode(UInt64(digest.count), into: &bytes)
        bytes.append(contentsOf: digest)
        return bytes
    }
}
