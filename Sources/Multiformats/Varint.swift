import NIOCore

/// Unsigned varints as specified by multiformats/unsigned-varint: little-endian base-128 groups, the
/// high bit of each byte set when another byte follows.
///
/// The spec limits varints to 9 bytes (63 bits of value) and requires the minimal encoding; both
/// rules are enforced when reading, so that every value has exactly one encoding (a signature over
/// bytes that contain varints then has exactly one meaning).
public enum UVarint {
    /// multiformats/unsigned-varint, "Practical maximum": at most 9 bytes, value below 2^63.
    public static let maximumByteCount = 9
    /// The largest value that fits in 9 bytes.
    public static let maximumValue: UInt64 = (1 << 63) - 1

    /// The number of bytes `value` takes when encoded.
    @inlinable
    public static func encodedLength(_ value: UInt64) -> Int {
        var length = 1
        var rest = value >> 7
        while rest != 0 {
            length += 1
            rest >>= 7
        }
        return length
    }

    /// Appends the encoding of `value` to `bytes`.
    /// - Precondition: `value <= maximumValue`.
    @inlinable
    public static func encode(_ value: UInt64, into bytes: inout [UInt8]) {
        precondition(value <= maximumValue, "varint value \(value) is over the 63-bit limit")
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    /// The encoding of `value`.
    @inlinable
    public static func encode(_ value: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encodedLength(value))
        encode(value, into: &bytes)
        return bytes
    }

    /// Decodes a varint at the start of `bytes`.
    ///
    /// - Returns: the value and the number of bytes it took, or `nil` when `bytes` ends before the
    ///   varint does (and is still shorter than the 9-byte limit).
    /// - Throws: `MultiformatsError.invalidVarint` for an overlong (10+ bytes or over 63 bits) or
    ///   non-minimal encoding.
    @inlinable
    public static func decode<Bytes: Collection<UInt8>>(
        _ bytes: Bytes
    ) throws(MultiformatsError) -> (value: UInt64, length: Int)? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var length = 0
        for byte in bytes {
            length += 1
            if length > maximumByteCount {
                throw MultiformatsError(.invalidVarint, "varint is longer than \(maximumByteCount) bytes")
            }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 != 0 && length == maximumByteCount {
                // A tenth byte would follow: reject now rather than wait for bytes that cannot help.
                throw MultiformatsError(.invalidVarint, "varint is longer than \(maximumByteCount) bytes")
            }
            if byte & 0x80 == 0 {
                // A final zero group after the first byte means a shorter encoding existed.
                if byte == 0 && length > 1 {
                    throw MultiformatsError(.invalidVarint, "varint is not minimally encoded")
                }
                if value > maximumValue {
                    throw MultiformatsError(.invalidVarint, "varint value is over the 63-bit limit")
                }
                return (value, length)
            }
            shift += 7
        }
        return nil
    }

    /// Decodes a varint at `index` in `bytes`, advancing `index` past it.
    /// - Throws: `.truncated` when the input ends inside the varint, `.invalidVarint` when malformed.
    @inlinable
    public static func read(_ bytes: [UInt8], at index: inout Int) throws(MultiformatsError) -> UInt64 {
        guard index <= bytes.count, let (value, length) = try decode(bytes[index...]) else {
            throw MultiformatsError(.truncated, "input ends inside a varint")
        }
        index += length
        return value
    }
}

extension ByteBuffer {
    /// Reads an unsigned varint (multiformats/unsigned-varint).
    ///
    /// - Returns: `nil`, leaving the reader index where it was, when the buffer ends before the varint
    ///   does; this is "need more bytes", not an error.
    /// - Throws: `MultiformatsError.invalidVarint` for overlong or non-minimal encodings.
    @inlinable
    public mutating func readUVarint() throws(MultiformatsError) -> UInt64? {
        let view = self.readableBytesView
        guard let (value, length) = try UVarint.decode(view) else { return nil }
        self.moveReaderIndex(forwardBy: length)
        return value
    }

    /// Writes `value` as an unsigned varint and returns the number of bytes written.
    @inlinable
    @discardableResult
    public mutating func writeUVarint(_ value: UInt64) -> Int {
        precondition(value <= UVarint.maximumValue, "varint value \(value) is over the 63-bit limit")
        var rest = value
        var written = 0
        while rest >= 0x80 {
            written += self.writeInteger(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        written += self.writeInteger(UInt8(rest))
        return written
    }
}
