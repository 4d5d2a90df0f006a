/// RFC 4648 base32 (alphabet `a-z2-7`), lower case, without padding: the multibase `b` encoding.
public enum Base32 {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
    private static let values: [Int8] = {
        var values = [Int8](repeating: -1, count: 256)
        for (index, character) in alphabet.enumerated() { values[Int(character)] = Int8(index) }
        return values
    }()

    /// Encodes `bytes` in lower case without padding.
    public static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        var text: [UInt8] = []
        text.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                text.append(alphabet[Int((buffer >> UInt32(bits)) & 0x1f)])
            }
        }
        if bits > 0 {
            text.append(alphabet[Int((buffer << UInt32(5 - bits)) & 0x1f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Decodes lower-case, unpadded base32.
    ///
    /// Only the canonical form is accepted: no padding, no upper case, a length that a whole number
    /// of bytes produces, and zero bits in the unused tail. This keeps one text per byte string.
    /// - Throws: `MultiformatsError.invalidEncoding`.
    public static func decode(_ text: Substring) throws(MultiformatsError) -> [UInt8] {
        let utf8 = text.utf8
        // 8 characters carry 5 bytes; a tail of 1, 3 or 6 characters cannot come from whole bytes.
        switch utf8.count % 8 {
        case 1, 3, 6:
            throw MultiformatsError(.invalidEncoding, "base32 text of \(utf8.count) characters has an impossible length")
        default: break
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        for character in utf8 {
            let value = values[Int(character)]
            guard value >= 0 else {
                throw MultiformatsError(
                    .invalidEncoding, "character '\(Unicode.Scalar(character))' is not valid lower-case base32")
            }
            buffer = (buffer << 5) | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        guard buffer == 0 else {
            throw MultiformatsError(.invalidEncoding, "base32 text has non-zero trailing bits")
        }
        return bytes
    }

    public static func decode(_ text: String) throws(MultiformatsError) -> [UInt8] {
        try decode(text[...])
    }
}
