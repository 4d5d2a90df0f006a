import CSodium

/// X25519 key agreement (RFC 7748) through libsodium's `crypto_scalarmult`.
public enum X25519 {
    public static let keyLength = 32

    /// An X25519 public key (a Montgomery u-coordinate).
    public struct PublicKey: Hashable, Sendable {
        public let rawRepresentation: [UInt8]

        /// - Throws: `IdentityError.invalidKey` when not 32 bytes.
        public init<Bytes: Collection<UInt8>>(rawRepresentation bytes: Bytes) throws(IdentityError) {
            guard bytes.count == keyLength else {
                throw IdentityError(.invalidKey, "X25519 public key must be 32 bytes, not \(bytes.count)")
            }
            self.rawRepresentation = Array(bytes)
        }
    }

    /// An X25519 private key, held in `sodium_malloc` memory (or, for ephemeral keys, zeroed heap
    /// memory: see `SecretBytes.Protection`).
    public struct PrivateKey: Sendable {
        private let scalar: SecretBytes
        public let publicKey: PublicKey

        /// Generates a new long-lived key (locked memory).
        public init() {
            self.init(protection: .locked)
        }

        /// Generates a new key for one handshake (heap memory, zeroed when freed).
        public static func ephemeral() -> PrivateKey {
            PrivateKey(protection: .heap)
        }

        private init(protection: SecretBytes.Protection) {
            var raw = Sodium.randomBytes(keyLength)
            defer { Sodium.zero(&raw) }
            self = try! PrivateKey(rawRepresentation: raw, protection: protection)
        }

        /// Wraps a 32-byte scalar (clamped by libsodium when used, as RFC 7748 §5 says).
        public init(rawRepresentation raw: [UInt8], protection: SecretBytes.Protection = .locked) throws(IdentityError) {
            guard raw.count == keyLength else {
                throw IdentityError(.invalidKey, "X25519 private key must be 32 bytes, not \(raw.count)")
            }
            Sodium.ensureInitialized()
            var publicKey = [UInt8](repeating: 0, count: keyLength)
            withBytePointer(raw) { scalar, _ in
                withMutableBytePointer(&publicKey) { pk in
                    _ = crypto_scalarmult_base(pk, scalar)
                }
            }
            self.scalar = SecretBytes(count: keyLength, protection: protection) { target in
                raw.withUnsafeBytes { target.copyMemory(from: $0) }
            }
            self.publicKey = try PublicKey(rawRepresentation: publicKey)
        }

        /// The shared secret with `peer`, in heap memory (it is an intermediate of a handshake).
        ///
        /// - Throws: `IdentityError.invalidKey` when the result is all zeros, i.e. the peer sent a
        ///   low-order point (RFC 7748 §6.1: "check for the all-zero value and abort if so").
        public func sharedSecret(with peer: PublicKey) throws(IdentityError) -> SecretBytes {
            var failed = false
            let shared = SecretBytes(count: keyLength, protection: .heap) { output in
                scalar.withUnsafeBytes { scalarBytes in
                    withBytePointer(peer.rawRepresentation) { point, _ in
                        failed = crypto_scalarmult(output.bytePointer, scalarBytes.bytePointer, point) != 0
                    }
                }
            }
            guard !failed else {
                throw IdentityError(.invalidKey, "X25519 peer key is a low-order point (shared secret would be zero)")
            }
            return shared
        }
    }
}
