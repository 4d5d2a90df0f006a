/// A positional encoding of bytes as a big number in base `alphabet.count`, where each leading zero
/// byte is written as one "zero" character. Base58btc and base36 are both of this kind.
///
/// Decoding is quadratic in the input length, so inputs are capped at `maximumTextLength`; no value
/// we handle (peer ids, keys, did:key) comes near the cap.
public struct BaseXAlphabet: Sendable {
    /// Longest text `decode` accepts. 8 KiB covers an 8 KiB record's worth of text many times over.
    public static let maximumTextLength = 8192

    public let name: String
    @usableFromInline let characters: [UInt8]
    @usableFromInline let values: [Int8]  // ASCII byte -> digit, or -1
    @usableFromInline let base: Int

    init(name: String, characters: String) {
        self.name = name
        self.characters = Array(characters.utf8)
        self.base = self.characters.count
        var values = [Int8](repeating: -1, count: 256)
        for (index, character) in self.characters.enumerated() {
            values[Int(character)] = Int8(index)
        }
        self.values = values
    }

    /// Encodes `bytes`.
    public func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        let zeros = bytes.prefix(while: { $0 == 0 }).count
        // Digits of the number in base `base`, least significant first.
        var digits: [UInt8] = []
        digits.reserveCapacity(bytes.count * 138 / 100 + 1)
        for byte in bytes.dropFirst(zeros) {
            var carry = Int(byte)
            for index in digits.indices {
                carry += Int(digits[index]) << 8
                digits[index] = UInt8(carry % base)
                carry /= base
            }
            while carry > 0 {
                digits.append(UInt8(carry % base))
                carry /= base
            }
        }
        var text = [UInt8](repeating: characters[0], count: zeros)
        text.reserveCapacity(zeros + digits.count)
        for digit in digits.reversed() {
            text.append(characters[Int(digit)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Decodes `text`.
    /// - Throws: `.invalidEncoding` for a character outside the alphabet, `.tooLarge` for text over
    ///   `maximumTextLength`.
    public func decode(_ text: Substring) throws(MultiformatsError) -> [UInt8] {
        let utf8 = text.utf8
        guard utf8.count <= Self.maximumTextLength else {
            throw MultiformatsError(.tooLarge, "\(name) text of \(utf8.count) characters is over the limit")
        }
        let zeroCharacter = characters[0]
        let zeros = utf8.prefix(while: { $0 == zeroCharacter }).count
        // Bytes of the number, least significant first.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        for character in utf8.dropFirst(zeros) {
            let digit = values[Int(character)]
            guard digit >= 0 else {
                throw MultiformatsError(
                    .invalidEncoding, "character '\(Unicode.Scalar(character))' is not valid \(name)")
            }
            var carry = Int(digit)
            for index in bytes.indices {
                carry += Int(bytes[index]) * base
                bytes[index] = UInt8(truncatingIfNeeded: carry)
                carry >>= 8
            }
            while carry > 0 {
                bytes.append(UInt8(truncatingIfNeeded: carry))
                carry >>= 8
            }
        }
        return [UInt8](repeating: 0, count: zeros) + bytes.reversed()
    }

    public func decode(_ text: String) throws(MultiformatsError) -> [UInt8] {
        try decode(text[...])
    }
}

/// Base58btc: the Bitcoin alphabet, as used for libp2p peer ids and `did:key`.
public let base58btc = BaseXAlphabet(
    name: "base58btc", characters: "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")

/// Base36, lower case, as multibase `k`: used for peer ids inside DNS labels.
public let base36 = BaseXAlphabet(name: "base36", characters: "0123456789abcdefghijklmnopqrstuvwxyz")
