import CSodium
import Identity

/// The Noise `SymmetricState` (Noise spec rev. 34, §5.2) with SHA-256 and HMAC-SHA256 HKDF (§4.3),
/// from libsodium.
///
/// Secrets never sit in ordinary arrays: the chaining key and the cipher keys are `SecretBytes`
/// (zeroed when released), and HKDF's temporaries (the PRK, both outputs, the HMAC states) live in
/// one scratch allocation that is zeroed before it is freed (spec/identity.md §1: transient copies
/// of secrets are zeroed).
struct NoiseSymmetricState: Sendable {
    static let hashLength = 32

    private var chainingKey: SecretBytes
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
        // ck = h: public at this point, but kept like every later chaining key.
        var initial = handshakeHash
        chainingKey = SecretBytes(consuming: &initial, protection: .heap)
    }

    var hasKey: Bool { cipher != nil }

    mutating func mixHash(_ data: [UInt8]) {
        handshakeHash = SHA256.hash(handshakeHash + data)
    }

    /// `MixKey(input_key_material)`: ck, temp_k = HKDF(ck, ikm, 2); the cipher key is temp_k.
    mutating func mixKey(_ inputKeyMaterial: SecretBytes) {
        let (nextChainingKey, key) = inputKeyMaterial.withUnsafeBytes {
            Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: $0)
        }
        // The previous chaining key is zeroed as its `SecretBytes` is released.
        chainingKey = nextChainingKey
        cipher = NoiseCipherState(key: key)
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
        let (first, second) = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: UnsafeRawBufferPointer(start: nil, count: 0))
        // ck is not needed after Split(); a fresh empty secret releases (and zeroes) the old one.
        chainingKey = SecretBytes(count: 0, protection: .heap) { _ in }
        return (NoiseCipherState(key: first), NoiseCipherState(key: second))
    }

    /// HKDF as Noise defines it (§4.3), which is RFC 5869 with HMAC-SHA256, an empty info, and the
    /// chaining key as salt, for two outputs: temp = HMAC(ck, ikm); out1 = HMAC(temp, 0x01);
    /// out2 = HMAC(temp, out1 ‖ 0x02).
    ///
    /// Everything secret is computed in one scratch allocation (temp, out1, out2 and the HMAC state)
    /// that is zeroed before it is freed; the outputs are copied straight into `SecretBytes`.
    static func hkdf(
        chainingKey: SecretBytes, inputKeyMaterial: UnsafeRawBufferPointer
    ) -> (SecretBytes, SecretBytes) {
        let stateSize = MemoryLayout<crypto_auth_hmacsha256_state>.size
        let scratchSize = 3 * hashLength + stateSize
        return withUnsafeTemporaryAllocation(byteCount: scratchSize, alignment: 16) { scratch in
            let base = scratch.baseAddress!
            defer { sodium_memzero(base, scratchSize) }
            let temporaryKey = UnsafeMutableRawBufferPointer(start: base, count: hashLength)
            let first = UnsafeMutableRawBufferPointer(start: base + hashLength, count: hashLength)
            let second = UnsafeMutableRawBufferPointer(start: base + 2 * hashLength, count: hashLength)
            let state = (base + 3 * hashLength).bindMemory(to: crypto_auth_hmacsha256_state.self, capacity: 1)
            var counter: UInt8 = 1
            chainingKey.withUnsafeBytes { chainingKey in
                hmac(state: state, key: chainingKey, [inputKeyMaterial], into: temporaryKey)
            }
            withUnsafeBytes(of: &counter) { one in
                hmac(state: state, key: UnsafeRawBufferPointer(temporaryKey), [one], into: first)
            }
            counter = 2
            withUnsafeBytes(of: &counter) { two in
                hmac(state: state, key: UnsafeRawBufferPointer(temporaryKey), [UnsafeRawBufferPointer(first), two], into: second)
            }
            return (
                SecretBytes(count: hashLength, protection: .heap) { $0.copyMemory(from: UnsafeRawBufferPointer(first)) },
                SecretBytes(count: hashLength, protection: .heap) { $0.copyMemory(from: UnsafeRawBufferPointer(second)) }
            )
        }
    }

    /// HMAC-SHA256(`key`, the concatenation of `parts`) into `output` (32 bytes), using `state`
    /// (which the caller zeroes) instead of copying the parts together.
    private static func hmac(
        state: UnsafeMutablePointer<crypto_auth_hmacsha256_state>, key: UnsafeRawBufferPointer,
        _ parts: [UnsafeRawBufferPointer], into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(output.count == hashLength && key.count > 0, "HMAC-SHA256: a 32-byte output and a key")
        _ = crypto_auth_hmacsha256_init(state, key.baseAddress!.assumingMemoryBound(to: UInt8.self), key.count)
        for part in parts where part.count > 0 {
            _ = crypto_auth_hmacsha256_update(state, part.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(part.count))
        }
        _ = crypto_auth_hmacsha256_final(state, output.baseAddress!.assumingMemoryBound(to: UInt8.self))
    }
}
