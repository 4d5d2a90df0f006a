import CSodium

/// Ed25519 signatures (RFC 8032) through libsodium's `crypto_sign_*`.
public enum Ed25519 {
    public static let publicKeyLength = 32
    public static let seedLength = 32
    public static let signatureLength = 64

    /// An Ed25519 public key.
    public struct PublicKey: Hashable, Sendable {
        /// The 32-byte encoded point (RFC 8032 §5.1.2).
        public let rawRepresentation: [UInt8]

        /// Wraps 32 raw bytes.
        ///
        /// No curve check happens here: it would cost as much as a verification, and
        /// `isValidSignature` already refuses non-canonical and small-order keys (libsodium ≥ 1.0.16),
        /// so a key under which signatures prove nothing can never verify anything. Call
        /// `isValidPoint` where a key must be checked without a signature.
        /// - Throws: `IdentityError.invalidKey` when not 32 bytes.
        public init<Bytes: Collection<UInt8>>(rawRepresentation bytes: Bytes) throws(IdentityError) {
            guard bytes.count == publicKeyLength else {
                throw IdentityError(.invalidKey, "Ed25519 public key must be 32 bytes, not \(bytes.count)")
            }
            self.rawRepresentation = Array(bytes)
        }

        /// Whether the key is a valid curve point in the main subgroup and not of small order
        /// (libsodium `crypto_core_ed25519_is_valid_point`). About as costly as one verification.
        public var isValidPoint: Bool {
            Sodium.ensureInitialized()
            return withBytePointer(rawRepresentation) { point, _ in crypto_core_ed25519_is_valid_point(point) == 1 }
        }

        /// Whether `signature` is a valid signature of `message` under this key.
        ///
        /// libsodium rejects non-canonical `S` values and small-order `R`, so signatures are not
        /// malleable.
        public func isValidSignature<Message: Collection<UInt8>>(_ signature: [UInt8], for message: Message) -> Bool {
            guard signature.count == signatureLength else { return false }
            Sodium.ensureInitialized()
            return withBytePointer(message) { messagePointer, messageCount in
                withBytePointer(signature) { sig, _ in
                    withBytePointer(rawRepresentation) { key, _ in
                        crypto_sign_verify_detached(sig, messagePointer, UInt64(messageCount), key) == 0
                    }
                }
            }
        }
    }

    /// An Ed25519 private key. The 64-byte libsodium secret key (seed ‖ public key) lives in
    /// `sodium_malloc` memory and is zeroed when the key is released.
    public struct PrivateKey: Sendable {
        private let secretKey: SecretBytes
        /// The matching public key.
        public let publicKey: PublicKey

        /// Generates a new key from libsodium's CSPRNG.
        public init() {
            var seed = Sodium.randomBytes(seedLength)
            defer { Sodium.zero(&seed) }
            // A fresh seed always yields a valid key.
            self = try! PrivateKey(seed: seed)
        }

        /// Derives the key from a 32-byte seed (RFC 8032's "private key").
        /// - Throws: `IdentityError.invalidKey` when the seed is not 32 bytes.
        public init(seed: [UInt8]) throws(IdentityError) {
            guard seed.count == seedLength else {
                throw IdentityError(.invalidKey, "Ed25519 seed must be 32 bytes, not \(seed.count)")
            }
            Sodium.ensureInitialized()
            var publicKey = [UInt8](repeating: 0, count: publicKeyLength)
            let secretKey = SecretBytes(count: Int(crypto_sign_SECRETKEYBYTES)) { secret in
                withBytePointer(seed) { seedBytes, _ in
                    withMutableBytePointer(&publicKey) { pk in
                        _ = crypto_sign_seed_keypair(pk, secret.bytePointer, seedBytes)
                    }
                }
            }
            self.secretKey = secretKey
            self.publicKey = try PublicKey(rawRepresentation: publicKey)
        }

        /// Gives read access to the 32-byte seed for the duration of `body` (for writing key files).
        public func withSeed<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
            try secretKey.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(seedLength))) }
        }

        /// The X25519 scalar of this key (`crypto_sign_ed25519_sk_to_curve25519`), for opening boxes
        /// sealed to the matching public key (`SealedBox`). Lives in locked memory like the key.
        func curve25519PrivateKey() -> SecretBytes {
            SecretBytes(count: X25519.keyLength) { scalar in
                secretKey.withUnsafeBytes { secret in
                    _ = crypto_sign_ed25519_sk_to_curve25519(scalar.bytePointer, secret.bytePointer)
                }
            }
        }

        /// Signs `message` (pure Ed25519, no prehash).
        public func signature<Message: Collection<UInt8>>(for message: Message) -> [UInt8] {
            var signature = [UInt8](repeating: 0, count: signatureLength)
            withBytePointer(message) { messagePointer, messageCount in
                secretKey.withUnsafeBytes { secret in
                    withMutableBytePointer(&signature) { sig in
                        _ = crypto_sign_detached(sig, nil, messagePointer, UInt64(messageCount), secret.bytePointer)
                    }
                }
            }
            return signature
        }
    }
}
