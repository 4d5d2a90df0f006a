import Identity

/// A message id: 128 random bits (spec/messages.md §2). Its text form is 26 characters of Crockford
/// base32, most significant first, as ULIDs print (the first character carries the top 3 bits, so it
/// is `0`–`7`).
public struct MessageID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let byteCount = 16
    public static let textLength = 26
    /// Crockford's alphabet: digits and upper-case letters without I, L, O and U.
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// The two halves, big-endian: `high` holds bytes 0–7.
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A fresh id from libsodium's CSPRNG.
    public static func random() -> MessageID {
        try! MessageID(bytes: Sodium.randomBytes(byteCount))  // 16 bytes by construction
    }

    /// - Throws: `.malformed` unless `bytes` is exactly 16 bytes.
    public init<Bytes: Collection<UInt8>>(bytes: Bytes) throws(MessageError) {
        guard bytes.count == Self.byteCount else {
            throw MessageError(.malformed, "a message id is 16 bytes, not \(bytes.count)")
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// Parses the 26-character text form; upper and lower case are accepted, nothing else (no
    /// hyphens, no Crockford I/L/O substitutes).
    /// - Throws: `.malformed` naming what is wrong.
    public init(_ text: String) throws(MessageError) {
        let utf8 = Array(text.utf8)
        guard utf8.count == Self.textLength else {
            throw MessageError(.malformed, "message id \"\(text.prefix(40))\" is not 26 characters")
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, character) in utf8.enumerated() {
            let upper = character >= UInt8(ascii: "a") && character <= UInt8(ascii: "z") ? character - 0x20 : character
            guard let digit = Self.alphabet.firstIndex(of: upper) else {
                throw MessageError(.malformed, "message id \"\(text)\" contains a character outside Crockford base32")
            }
            if index == 0, digit > 7 {
                throw MessageError(.malformed, "message id \"\(text)\" is over 128 bits (first character above 7)")
            }
            // Shift the 128-bit value left by 5 and add the digit.
            high = high << 5 | low >> 59
            low = low << 5 | UInt64(digit)
        }
        self.init(high: high, low: low)
    }

    /// The 16 bytes, big-endian.
    public var bytes: [UInt8] {
        var result = [UInt8]()
        result.reserveCapacity(Self.byteCount)
        for shift in stride(from: 56, through: 0, by: -8) {
            result.append(UInt8(truncatingIfNeeded: high >> UInt64(shift)))
        }
        for shift in stride(from: 56, through: 0, by: -8) {
            result.append(UInt8(truncatingIfNeeded: low >> UInt64(shift)))
        }
        return result
    }

    /// The 26-character text form.
    public var description: String {
        var characters = [UInt8](repeating: 0, count: Self.textLength)
        var high = self.high
        var low = self.low
        for index in stride(from: Self.textLength - 1, through: 0, by: -1) {
            characters[index] = Self.alphabet[Int(low & 31)]
            low = low >> 5 | high << 59
            high >>= 5
        }
        return String(decoding: characters, as: UTF8.self)
    }

    public static func < (lhs: MessageID, rhs: MessageID) -> Bool { (lhs.high, lhs.low) < (rhs.high, rhs.low) }
}
