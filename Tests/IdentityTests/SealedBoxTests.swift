import Testing

@testable import Identity

@Suite("sealed boxes to an Ed25519 identity")
struct SealedBoxTests {
    @Test("a box opens with the recipient's key only, to exactly the plaintext", arguments: [0, 1, 1000, 300_000])
    func roundTrip(size: Int) throws {
        let recipient = Ed25519.PrivateKey()
        let plaintext = Sodium.randomBytes(size)
        let sealed = try SealedBox.seal(plaintext, to: recipient.publicKey)
        #expect(sealed.count == size + SealedBox.overhead)
        #expect(try SealedBox.open(sealed, with: recipient) == plaintext)
        // Sealing is randomised (a fresh ephemeral key each time).
        #expect(try SealedBox.seal(plaintext, to: recipient.publicKey) != sealed)
        #expect(throws: IdentityError(.invalidSignature, "the sealed box does not open with this key (another recipient, or altered)")) {
            try SealedBox.open(sealed, with: Ed25519.PrivateKey())
        }
    }

    @Test("an altered, truncated or empty box is refused, never opened")
    func hostile() throws {
        let recipient = Ed25519.PrivateKey()
        let sealed = try SealedBox.seal(Array("hello".utf8), to: recipient.publicKey)
        for index in [0, 31, 32, 47, sealed.count - 1] {
            var altered = sealed
            altered[index] ^= 0x01
            #expect(throws: IdentityError.self) { try SealedBox.open(altered, with: recipient) }
        }
        for length in [0, 1, SealedBox.overhead - 1, SealedBox.overhead, sealed.count - 1] {
            #expect(throws: IdentityError.self) { try SealedBox.open(sealed.prefix(length), with: recipient) }
        }
    }

    @Test("a box cannot be sealed to a key that is not a curve point")
    func invalidRecipient() throws {
        // y = 2 is not the y-coordinate of any point of edwards25519.
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes[0] = 2
        let key = try Ed25519.PublicKey(rawRepresentation: bytes)
        #expect(!key.isValidPoint)
        #expect(throws: IdentityError.self) { try SealedBox.seal([1, 2, 3], to: key) }
    }
}
