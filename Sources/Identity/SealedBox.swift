import CSodium

/// Anonymous public-key encryption to an Ed25519 identity: libsodium's sealed box
/// (`crypto_box_seal`: an ephemeral X25519 key, X25519 + XSalsa20-Poly1305) to the X25519 key
/// derived from the recipient's Ed25519 key (`crypto_sign_ed25519_pk_to_curve25519`).
///
/// Only the holder of the Ed25519 private key can open a box; the box does not reveal who sealed it
/// (the sender authenticates inside, by signing what it seals). spec/mailbox.md uses it for
/// messages waiting in a mailbox.
public enum SealedBox {
    /// Bytes a sealed box adds to its plaintext: the ephemeral public key and the MAC.
    public static let overhead = Int(crypto_box_sealbytes())

    /// Seals `plaintext` to the owner of `recipient`.
    /// - Throws: `.invalidKey` when `recipient` is not a valid Ed25519 point (it has no X25519 twin).
    public static func seal<Bytes: Collection<UInt8>>(_ plaintext: Bytes, to recipient: Ed25519.PublicKey) throws(IdentityError)
        -> [UInt8]
    {
        Sodium.ensureInitialized()
        var curveKey = [UInt8](repeating: 0, count: X25519.keyLength)
        let converted = withBytePointer(recipient.rawRepresentation) { edKey, _ in
            withMutableBytePointer(&curveKey) { crypto_sign_ed25519_pk_to_curve25519($0, edKey) }
        }
        guard converted == 0 else {
            throw IdentityError(.invalidKey, "the recipient's Ed25519 key has no X25519 form (not a valid point)")
        }
        var sealed = [UInt8](repeating: 0, count: plaintext.count + overhead)
        let result = withBytePointer(plaintext) { message, count in
            withBytePointer(curveKey) { key, _ in
                withMutableBytePointer(&sealed) { crypto_box_seal($0, message, UInt64(count), key) }
            }
        }
        guard result == 0 else {
            throw IdentityError(.cryptoFailure, "crypto_box_seal failed")
        }
        return sealed
    }

    /// Opens a box sealed to `key`'s public key.
    /// - Throws: `.invalidSignature` when the box is too short, was sealed to another key, or was
    ///   altered (the MAC fails): the three are indistinguishable by design.
    public static func open<Bytes: Collection<UInt8>>(_ sealed: Bytes, with key: Ed25519.PrivateKey) throws(IdentityError)
        -> [UInt8]
    {
        guard sealed.count >= overhead else {
            throw IdentityError(.invalidSignature, "sealed box of \(sealed.count) bytes is shorter than its \(overhead)-byte overhead")
        }
        Sodium.ensureInitialized()
        var curvePublic = [UInt8](repeating: 0, count: X25519.keyLength)
        let converted = withBytePointer(key.publicKey.rawRepresentation) { edKey, _ in
            withMutableBytePointer(&curvePublic) { crypto_sign_ed25519_pk_to_curve25519($0, edKey) }
        }
        guard converted == 0 else {
            throw IdentityError(.invalidKey, "the key's Ed25519 public key has no X25519 form")
        }
        let scalar = key.curve25519PrivateKey()
        let plaintextCount = sealed.count - overhead
        // One byte more than needed when empty: the output pointer must not be null.
        var plaintext = [UInt8](repeating: 0, count: max(plaintextCount, 1))
        let result = withBytePointer(sealed) { box, count in
            withBytePointer(curvePublic) { publicKey, _ in
                scalar.withUnsafeBytes { secret in
                    withMutableBytePointer(&plaintext) {
                        crypto_box_seal_open($0, box, UInt64(count), publicKey, secret.bytePointer)
                    }
                }
            }
        }
        guard result == 0 else {
            Sodium.zero(&plaintext)
            throw IdentityError(.invalidSignature, "the sealed box does not open with this key (another recipient, or altered)")
        }
        if plaintextCount == 0 { plaintext.removeAll() }
        return plaintext
    }
}
