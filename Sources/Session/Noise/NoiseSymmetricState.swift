import CSodium
import Identity

/// The Noise `SymmetricState` (Noise spec rev. 34, §5.2) with SHA-256 and HMAC-SHA256 HKDF (§4.3),
/// from libsodium.
struct NoiseSymmetricState: Sendable {
    static let hashLength = 32

    private var chainingKey: [UInt8]
    private(set) var handshakeHash: [UInt8]
    private var cipher: NoiseCipherState?

    /// `InitializeSymmetric(protocol_name)`.
    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        // §5.2: "If protocol_name is less than or equal to HASHLEN bytes in length, sets h equal to
        // protocol_name with zero bytes appended to make HASHLEN bytes. Otherwise sets h = HASH(protocol_name)."
        if name.count <= Self.hashLength {
            handshakeHash = name + [UInt8](repeating: 0, count: Self.hashLength - name.count)
        } else {
            handshakeHash = SHA256.hash(name)
        }
        chainingKey = handshakeHash
    }

    var hasKey: Bool { cipher != nil }

    mutating func mixHash(_ data: [UInt8]) {
        handshakeHash = SHA256.hash(handshakeHash + data)
    }

    mutating func mixKey(_ inputKeyMaterial: SecretBytes) {
        let outputs = inputKeyMaterial.withUnsafeBytes { Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: Array($0), count: 2) }
        Sodium.zero(&chainingKey)
        chainingKey = outputs[0]
        var key = outputs[1]
        cipher = NoiseCipherState(key: SecretBytes(consuming: &key, protection: .heap))
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(SessionError) -> [UInt8] {
        guard var cipher else {
            mixHash(plaintext)
            return plaintext
        }
        let ciphertext = try cipher.encrypt(plaintext, associatedData: handshakeHash)
        self.cipher = cipher
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(SessionError) -> [UInt8] {
        guard var cipher else {
            mixHash(ciphertext)
            return ciphertext
        }
        let plaintext = try cipher.decrypt(ciphertext, associatedData: handshakeHash)
        self.cipher = cipher
        mixHash(ciphertext)
        return plaintext
    }

    /// `Split()`: the initiator-to-responder and responder-to-initiator cipher states.
    mutating func split() -> (NoiseCipherState, NoiseCipherState) {
        var outputs = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: [], count: 2)
        Sodium.zero(&chainingKey)
        let first = NoiseCipherState(key: SecretBytes(consuming: &outputs[0], protection: .heap))
        let second = NoiseCipherState(key: SecretBytes(consuming: &outputs[1], protection: .heap))
        return (first, second)
    }

    /// HKDF as Noise defines it (§4.3), which is RFC 5869 with HMAC-SHA256, an empty info, and the
    /// chaining key as salt: temp = HMAC(ck, ikm); out1 = HMAC(temp, 0x01);
    /// out_i = HMAC(temp, out_{i-1} ‖ i).
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], count: Int) -> [[UInt8]] {
        var temporaryKey = hmac(key: chainingKey, inputKeyMaterial)
        defer { Sodium.zero(&temporaryKey) }
        var outputs: [[UInt8]] = []
        var previous: [UInt8] = []
        for index in 1...count {
            previous = hmac(key: temporaryKey, previous + [UInt8(index)])
            outputs.append(previous)
        }
        return outputs
    }

    static func hmac(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        var state = crypto_auth_hmacsha256_state()
        var output = [UInt8](repeating: 0, count: 32)
        withBytePointer(key) { keyBytes, keyCount in
            _ = crypto_auth_hmacsha256_init(&state, keyBytes, keyCount)
        }
        withBytePointer(message) { input, count in
            _ = crypto_auth_hmacsha256_update(&state, input, UInt64(count))
        }
        withMutableBytePointer(&output) { out in
            _ = crypto_auth_hmacsha256_final(&state, out)
        }
        sodium_memzero(&state, MemoryLayout<crypto_auth_hmacsha256_state>.size)
        return output
    }
}
