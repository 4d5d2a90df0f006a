import CSodium
import Identity
import NIOCore

/// A Noise `CipherState` for ChaChaPoly (Noise spec rev. 34, §5.1 and §12.3): a 32-byte key and a
/// 64-bit counter nonce, encoded as 4 zero bytes ‖ little-endian counter, with
/// ChaCha20-Poly1305 (IETF, RFC 8439) from libsodium.
///
/// Used for the handshake's `EncryptAndHash` and, after `Split()`, for transport messages.
public struct NoiseCipherState: Sendable {
    /// Poly1305 tag length.
    public static let tagLength = 16
    /// Noise spec §11.2: a transport message is at most 65535 bytes, tag included.
    public static let maximumMessageLength = 65535
    /// The largest plaintext of one transport message.
    public static let maximumPlaintextLength = maximumMessageLength - tagLength

    private var key: SecretBytes
    /// The next nonce. Noise spec §5.1: 2^64 − 1 is reserved; reaching it is an error.
    public private(set) var nonce: UInt64 = 0

    init(key: SecretBytes) {
        precondition(key.count == 32, "a ChaChaPoly key has 32 bytes")
        self.key = key
    }

    /// Takes the next nonce value.
    private mutating func takeNonce() throws(SessionError) -> UInt64 {
        guard nonce < UInt64.max else {
            throw SessionError(.nonceExhausted, "Noise cipher state used up its 2^64 - 1 nonces")
        }
        defer { nonce += 1 }
        return nonce
    }

    /// The next nonce as an array (handshake use).
    private mutating func nextNonce() throws(SessionError) -> [UInt8] {
        let counter = try takeNonce()
        return Self.withNonce(counter) { Array(UnsafeBufferPointer(start: $0, count: 12)) }
    }

    /// Runs `body` with the 12-byte nonce for `counter` (4 zero bytes ‖ counter, little-endian),
    /// built on the stack: transport messages allocate nothing for it.
    private static func withNonce<R>(_ counter: UInt64, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 12) { buffer in
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            raw.storeBytes(of: 0, as: UInt32.self)
            raw.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
            return body(UnsafePointer(buffer.baseAddress!))
        }
    }

    /// `Rekey()` (Noise spec rev. 34, §4.2 and §5.1): the key becomes the first 32 bytes of
    /// `ENCRYPT(k, 2^64 − 1, empty, 32 zero bytes)`; the nonce carries on. Messages sealed before
    /// cannot be opened with the new key, nor the old key derived from it.
    public mutating func rekey() {
        var nonceBytes = [UInt8](repeating: 0xFF, count: 12)
        nonceBytes.replaceSubrange(0..<4, with: [0, 0, 0, 0])
        let zeros = [UInt8](repeating: 0, count: 32)
        var output = [UInt8](repeating: 0, count: 32 + Self.tagLength)
        key.withUnsafeBytes { keyBytes in
            withMutableBytePointer(&output) { out in
                _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                    out, nil, zeros, UInt64(zeros.count), nil, 0, nil, nonceBytes, keyBytes.bytePointer)
            }
        }
        var newKey = Array(output[0..<32])
        key = SecretBytes(consuming: &newKey, protection: .heap)
        Sodium.zero(&output)
    }

    /// `ENCRYPT(k, n++, ad, plaintext)` into a new array (handshake use).
    public mutating func encrypt(_ plaintext: [UInt8], associatedData: [UInt8]) throws(SessionError) -> [UInt8] {
        let nonceBytes = try nextNonce()
        var output = [UInt8](repeating: 0, count: plaintext.count + Self.tagLength)
        var outputLength: UInt64 = 0
        key.withUnsafeBytes { keyBytes in
            withMutableBytePointer(&output) { out in
                withBytePointer(plaintext) { input, inputCount in
                    withBytePointer(associatedData) { ad, adCount in
                        _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                            out, &outputLength, input, UInt64(inputCount), ad, UInt64(adCount), nil, nonceBytes,
                            keyBytes.bytePointer)
                    }
                }
            }
        }
        return output
    }

    /// `DECRYPT(k, n++, ad, ciphertext)` (handshake use).
    /// - Throws: `.decryptionFailed` when the tag does not verify; the nonce still advances, as the
    ///   session is over anyway.
    public mutating func decrypt(_ ciphertext: [UInt8], associatedData: [UInt8]) throws(SessionError) -> [UInt8] {
        guard ciphertext.count >= Self.tagLength else {
            throw SessionError(
                .decryptionFailed, "Noise ciphertext of \(ciphertext.count) bytes is shorter than its tag")
        }
        let nonceBytes = try nextNonce()
        // One spare byte keeps the output pointer non-null for an empty plaintext.
        var output = [UInt8](repeating: 0, count: ciphertext.count - Self.tagLength + 1)
        var outputLength: UInt64 = 0
        let result = key.withUnsafeBytes { keyBytes in
            withMutableBytePointer(&output) { out in
                withBytePointer(ciphertext) { input, inputCount in
                    withBytePointer(associatedData) { ad, adCount in
                        crypto_aead_chacha20poly1305_ietf_decrypt(
                            out, &outputLength, nil, input, UInt64(inputCount), ad, UInt64(adCount), nonceBytes,
                            keyBytes.bytePointer)
                    }
                }
            }
        }
        output.removeLast()
        guard result == 0 else {
            throw SessionError(.decryptionFailed, "Noise message failed authentication")
        }
        return output
    }

    /// Encrypts `plaintext` (at most `maximumPlaintextLength` bytes) as one transport message and
    /// appends `uint16 length ‖ ciphertext ‖ tag` to `output`. The cipher reads the plaintext where
    /// it lies and writes straight into `output`'s storage: one pass, no intermediate buffer.
    public mutating func sealFrame(_ plaintext: ByteBuffer, into output: inout ByteBuffer) throws(SessionError) {
        let length = plaintext.readableBytes
        precondition(length <= Self.maximumPlaintextLength, "Noise plaintext of \(length) bytes is over one message")
        let counter = try takeNonce()
        let frameLength = 2 + length + Self.tagLength
        output.reserveCapacity(minimumWritableBytes: frameLength)
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: frameLength) { target in
            let base = target.baseAddress!.assumingMemoryBound(to: UInt8.self)
            base[0] = UInt8(truncatingIfNeeded: (length + Self.tagLength) >> 8)
            base[1] = UInt8(truncatingIfNeeded: length + Self.tagLength)
            plaintext.withUnsafeReadableBytes { source in
                let input = source.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) } ?? UnsafePointer(base)
                key.withUnsafeBytes { keyBytes in
                    Self.withNonce(counter) { nonce in
                        _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                            base + 2, base + 2 + length, nil, input, UInt64(length), nil, 0, nil, nonce,
                            keyBytes.bytePointer)
                    }
                }
            }
            return frameLength
        }
    }

    /// `sealFrame(_:into:)` for a plaintext given in pieces (at most `maximumPlaintextLength` bytes
    /// in all): the message is the pieces joined, without joining them first. The same bytes on
    /// the wire as sealing the joined buffer.
    ///
    /// ChaCha20-Poly1305 as RFC 8439 §2.8 builds it, from libsodium's parts: the Poly1305 key is
    /// the first 32 bytes of ChaCha20 block 0, the plaintext is XORed with the key stream from
    /// block 1 on, and the tag covers `ciphertext ‖ pad16 ‖ le64(0) ‖ le64(length)` (no associated
    /// data). A piece is encrypted straight from where it lies into the output when it starts on a
    /// 64-byte block of the key stream (`crypto_stream_chacha20_ietf_xor_ic` starts at a block);
    /// the bytes up to the next block boundary (a yamux header and the first bytes after it) are
    /// copied first and encrypted in place. So a frame's payload is read once, by the cipher.
    public mutating func sealFrame(gathering pieces: [ByteBuffer], into output: inout ByteBuffer) throws(SessionError) {
        var length = 0
        for piece in pieces { length += piece.readableBytes }
        precondition(length <= Self.maximumPlaintextLength, "Noise plaintext of \(length) bytes is over one message")
        let counter = try takeNonce()
        let frameLength = 2 + length + Self.tagLength
        output.reserveCapacity(minimumWritableBytes: frameLength)
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: frameLength) { target in
            let base = target.baseAddress!.assumingMemoryBound(to: UInt8.self)
            base[0] = UInt8(truncatingIfNeeded: (length + Self.tagLength) >> 8)
            base[1] = UInt8(truncatingIfNeeded: length + Self.tagLength)
            let ciphertext = base + 2
            key.withUnsafeBytes { keyBytes in
                Self.withNonce(counter) { nonce in
                    let key = keyBytes.bytePointer
                    /// Encrypts `count` bytes from `source` into `ciphertext + offset`, which must be
                    /// on a block boundary (the key stream of the message starts at block 1).
                    func encrypt(_ source: UnsafePointer<UInt8>, at offset: Int, count: Int) {
                        _ = crypto_stream_chacha20_ietf_xor_ic(
                            ciphertext + offset, source, UInt64(count), nonce, UInt32(1 + offset / 64), key)
                    }
                    // Bytes placed in the output so far; the first `encrypted` of them are ciphertext
                    // (always a whole number of blocks until the end), the rest plaintext.
                    var placed = 0
                    var encrypted = 0
                    for piece in pieces {
                        piece.withUnsafeReadableBytes { bytes in
                            guard var source = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
                            var remaining = bytes.count
                            let head = min(remaining, (64 - placed % 64) % 64)
                            (ciphertext + placed).update(from: source, count: head)
                            placed += head
                            source += head
                            remaining -= head
                            let bulk = remaining / 64 * 64
                            if bulk > 0 {
                                if encrypted < placed {
                                    encrypt(ciphertext + encrypted, at: encrypted, count: placed - encrypted)
                                }
                                encrypt(source, at: placed, count: bulk)
                                placed += bulk
                                encrypted = placed
                                source += bulk
                                remaining -= bulk
                            }
                            (ciphertext + placed).update(from: source, count: remaining)
                            placed += remaining
                        }
                    }
                    if encrypted < placed { encrypt(ciphertext + encrypted, at: encrypted, count: placed - encrypted) }
                    Self.poly1305Tag(of: ciphertext, length: length, nonce: nonce, key: key, into: ciphertext + length)
                }
            }
            return frameLength
        }
    }

    /// The RFC 8439 §2.8 tag over `length` bytes of ciphertext without associated data.
    private static func poly1305Tag(
        of ciphertext: UnsafePointer<UInt8>, length: Int, nonce: UnsafePointer<UInt8>, key: UnsafePointer<UInt8>,
        into tag: UnsafeMutablePointer<UInt8>
    ) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { scratch in
            let block = scratch.baseAddress!
            // The one-time key: ChaCha20 block 0 (the first 32 bytes of it).
            _ = crypto_stream_chacha20_ietf(block, 64, nonce, key)
            var state = crypto_onetimeauth_poly1305_state()
            _ = crypto_onetimeauth_poly1305_init(&state, block)
            _ = crypto_onetimeauth_poly1305_update(&state, ciphertext, UInt64(length))
            // pad16(ciphertext), then le64(associated data length = 0) ‖ le64(ciphertext length).
            block.initialize(repeating: 0, count: 32)
            _ = crypto_onetimeauth_poly1305_update(&state, block, UInt64((16 - length % 16) % 16))
            UnsafeMutableRawPointer(block + 24).storeBytes(of: UInt64(length).littleEndian, as: UInt64.self)
            _ = crypto_onetimeauth_poly1305_update(&state, block + 16, 16)
            _ = crypto_onetimeauth_poly1305_final(&state, tag)
            sodium_memzero(block, 64)
            withUnsafeMutableBytes(of: &state) { sodium_memzero($0.baseAddress, $0.count) }
        }
    }

    /// Decrypts one transport message body (`ciphertext ‖ tag`, without the length prefix) into a
    /// new buffer from `allocator`, in one pass.
    /// - Throws: `.decryptionFailed` when the tag does not verify.
    public mutating func openFrame(
        _ message: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws(SessionError) -> ByteBuffer {
        let length = message.readableBytes
        guard length >= Self.tagLength else {
            throw SessionError(.decryptionFailed, "Noise message of \(length) bytes is shorter than its tag")
        }
        let counter = try takeNonce()
        let plaintextLength = length - Self.tagLength
        var output = allocator.buffer(capacity: max(plaintextLength, 1))
        var result: Int32 = -1
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: max(plaintextLength, 1)) { target in
            let out = target.baseAddress!.assumingMemoryBound(to: UInt8.self)
            message.withUnsafeReadableBytes { source in
                let input = source.baseAddress!.assumingMemoryBound(to: UInt8.self)
                result = key.withUnsafeBytes { keyBytes in
                    Self.withNonce(counter) { nonce in
                        crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                            out, nil, input, UInt64(plaintextLength), input + plaintextLength, nil, 0, nonce,
                            keyBytes.bytePointer)
                    }
                }
            }
            return result == 0 ? plaintextLength : 0
        }
        guard result == 0 else {
            throw SessionError(.decryptionFailed, "Noise transport message failed authentication")
        }
        return output
    }
}
