import CSodium
import Identity
import NIOCore
import Network
import Session

/// The physical limits set by the cryptography, measured on one core: ChaCha20-Poly1305 (the
/// transport's AEAD), and the X25519 and Ed25519 operations a Noise XX handshake performs.
struct CryptoBaselines {
    /// Plaintext bytes of one full Noise transport message (Noise spec §11.2: 65535 − 16-byte tag).
    static let messageLength = NoiseCipherState.maximumPlaintextLength
    /// The libp2p Noise payload signs `"noise-libp2p-static-key:" ‖ 32-byte static key`.
    static let signedLength = NoiseHandshake.signaturePrefix.count + X25519.keyLength

    /// `NoiseCipherState.sealFrame` over 65519-byte messages, plaintext bytes/s: baseline A.
    var sealFrame = 0.0
    /// `crypto_aead_chacha20poly1305_ietf_encrypt_detached` directly, bytes/s.
    var rawEncrypt = 0.0
    /// `crypto_aead_chacha20poly1305_ietf_decrypt_detached` directly (tag verified), bytes/s.
    var rawDecrypt = 0.0
    /// `crypto_scalarmult` (one DH), per second.
    var x25519 = 0.0
    /// `crypto_scalarmult_base` (an ephemeral key pair), per second.
    var x25519Base = 0.0
    /// `crypto_sign_detached` over the 56-byte static-key message, per second.
    var sign = 0.0
    /// `crypto_sign_verify_detached` of it, per second.
    var verify = 0.0
    /// One DH through `X25519.PrivateKey.sharedSecret` (adds the `SecretBytes` allocation), per second.
    var identityDH = 0.0
    /// Both sides of a complete Noise XX handshake with libp2p payloads, in memory on one core, per second.
    var inMemoryHandshakes = 0.0

    /// Seconds of crypto one side of a handshake spends (see `NoiseHandshake`): a fresh ephemeral key
    /// (one base-point multiplication), three DHs (ee, es and se; two when writing or reading
    /// message 2, one for message 3), and the verification of the peer's signature. The signature
    /// over the static key is the same for every handshake of a node, made once at start.
    var secondsPerSide: Double { 1 / x25519Base + 3 / x25519 + 1 / verify }

    /// Handshakes/s when each side has its own core and handshakes run one after another: the critical
    /// path is both sides' key generation in parallel, then the six DHs and two verifications in
    /// turn (responder writes message 2: 2 DH; initiator reads it and writes message 3: 3 DH +
    /// verify; responder reads message 3: 1 DH + verify).
    var sequentialBound: Double { 1 / (1 / x25519Base + 6 / x25519 + 2 / verify) }

    /// Handshakes/s when each side has its own core and enough handshakes overlap to keep it busy.
    var concurrentBound: Double { 1 / secondsPerSide }

    /// Handshakes/s with both sides on one core (the in-memory measurement's bound).
    var oneCoreBound: Double { 1 / (2 * secondsPerSide) }

    /// Keeps, figure by figure, the better of `self` and `other`: a disturbed measurement (another
    /// process on the core or its hyperthread sibling) only ever makes a rate lower.
    mutating func keepBest(_ other: CryptoBaselines) {
        for field in [
            \CryptoBaselines.sealFrame, \.rawEncrypt, \.rawDecrypt, \.x25519, \.x25519Base, \.sign, \.verify,
            \.identityDH, \.inMemoryHandshakes,
        ] {
            self[keyPath: field] = max(self[keyPath: field], other[keyPath: field])
        }
    }

    /// Measures every figure for about `seconds` each.
    static func measure(seconds: Double) throws -> CryptoBaselines {
        Sodium.ensureInitialized()
        var results = CryptoBaselines()
        try results.measureAEAD(seconds: seconds)
        results.measureAsymmetric(seconds: seconds)
        let fixture = HandshakeFixture()
        results.inMemoryHandshakes = try measureRate(seconds: seconds) { _ = try fixture.run() }
        return results
    }

    private mutating func measureAEAD(seconds: Double) throws {
        let length = Self.messageLength
        var cipher = try HandshakeFixture().run().initiator.send
        let plaintext = ByteBuffer(repeating: 0xA5, count: length)
        var output = ByteBufferAllocator().buffer(capacity: length + 2 + NoiseCipherState.tagLength)
        _ = try measureRate(seconds: seconds / 10) {
            output.clear()
            try cipher.sealFrame(plaintext, into: &output)
        }
        sealFrame =
            Double(length)
            * (try measureRate(seconds: seconds) {
                output.clear()
                try cipher.sealFrame(plaintext, into: &output)
            })

        let message = UnsafeMutablePointer<UInt8>.allocate(capacity: length)
        let ciphertext = UnsafeMutablePointer<UInt8>.allocate(capacity: length)
        let key = UnsafeMutablePointer<UInt8>.allocate(capacity: Int(crypto_aead_chacha20poly1305_ietf_KEYBYTES))
        var nonce = [UInt8](repeating: 0, count: Int(crypto_aead_chacha20poly1305_ietf_NPUBBYTES))
        var tag = [UInt8](repeating: 0, count: NoiseCipherState.tagLength)
        defer {
            message.deallocate()
            ciphertext.deallocate()
            key.deallocate()
        }
        message.initialize(repeating: 0xA5, count: length)
        randombytes_buf(key, Int(crypto_aead_chacha20poly1305_ietf_KEYBYTES))
        var counter: UInt64 = 0
        rawEncrypt =
            Double(length)
            * measureRate(seconds: seconds) {
                // A fresh nonce per message, as the transport uses.
                counter += 1
                nonce.withUnsafeMutableBytes {
                    $0.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
                }
                _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                    ciphertext, &tag, nil, message, UInt64(length), nil, 0, nil, nonce, key)
            }
        // One valid message, opened over and over: every call verifies the tag and decrypts.
        _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            ciphertext, &tag, nil, message, UInt64(length), nil, 0, nil, nonce, key)
        var failures = 0
        rawDecrypt =
            Double(length)
            * measureRate(seconds: seconds) {
                if crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                    message, nil, ciphertext, UInt64(length), tag, nil, 0, nonce, key) != 0
                {
                    failures += 1
                }
            }
        precondition(failures == 0, "ChaCha20-Poly1305 decryption of our own message failed")
    }

    private mutating func measureAsymmetric(seconds: Double) {
        var scalar = Sodium.randomBytes(32)
        var point = [UInt8](repeating: 0, count: 32)
        var shared = [UInt8](repeating: 0, count: 32)
        _ = crypto_scalarmult_base(&point, Sodium.randomBytes(32))
        var sink: Int32 = 0
        x25519 = measureRate(seconds: seconds) { sink |= crypto_scalarmult(&shared, scalar, point) }
        x25519Base = measureRate(seconds: seconds) {
            scalar[0] &+= 1
            sink |= crypto_scalarmult_base(&point, scalar)
        }

        var publicKey = [UInt8](repeating: 0, count: Int(crypto_sign_PUBLICKEYBYTES))
        var secretKey = [UInt8](repeating: 0, count: Int(crypto_sign_SECRETKEYBYTES))
        _ = crypto_sign_keypair(&publicKey, &secretKey)
        var message = Sodium.randomBytes(Self.signedLength)
        var signature = [UInt8](repeating: 0, count: Ed25519.signatureLength)
        sign = measureRate(seconds: seconds) {
            message[0] &+= 1
            sink |= crypto_sign_detached(&signature, nil, message, UInt64(message.count), secretKey)
        }
        _ = crypto_sign_detached(&signature, nil, message, UInt64(message.count), secretKey)
        verify = measureRate(seconds: seconds) {
            sink |= crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey)
        }
        precondition(sink == 0, "a libsodium operation failed during the baseline")

        let local = X25519.PrivateKey()
        let remote = X25519.PrivateKey().publicKey
        identityDH = measureRate(seconds: seconds) { _ = try? local.sharedSecret(with: remote) }
    }

}

/// Two identities with their Noise static keys, made once (as a node does at start), between which
/// complete handshakes run in memory.
struct HandshakeFixture {
    let initiatorIdentity = Ed25519.PrivateKey()
    let initiatorStatic = X25519.PrivateKey()
    let responderIdentity = Ed25519.PrivateKey()
    let responderStatic = X25519.PrivateKey()
    let initiatorSignature: [UInt8]
    let responderSignature: [UInt8]

    init() {
        initiatorSignature = NoiseHandshake.staticKeySignature(identity: initiatorIdentity, staticKey: initiatorStatic)
        responderSignature = NoiseHandshake.staticKeySignature(identity: responderIdentity, staticKey: responderStatic)
    }

    /// One complete libp2p Noise XX handshake (three messages, payloads checked), both sides.
    func run() throws -> (initiator: NoiseHandshake.Result, responder: NoiseHandshake.Result) {
        var initiator = NoiseHandshake(
            role: .initiator, identity: initiatorIdentity, staticKey: initiatorStatic,
            staticKeySignature: initiatorSignature)
        var responder = NoiseHandshake(
            role: .responder, identity: responderIdentity, staticKey: responderStatic,
            staticKeySignature: responderSignature)
        try responder.readMessage(try initiator.writeMessage())
        try initiator.readMessage(try responder.writeMessage())
        try responder.readMessage(try initiator.writeMessage())
        return (initiator.finish(), responder.finish())
    }
}

/// Runs `body` in batches until at least `seconds` have passed; returns calls per second.
func measureRate(seconds: Double, _ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    var calls = 0
    var batch = 1
    while true {
        for _ in 0..<batch { try body() }
        calls += batch
        let elapsed = (clock.now - start).seconds
        if elapsed >= seconds { return Double(calls) / elapsed }
        // Grow batches so the clock is read rarely once the call cost is known.
        batch = min(batch * 2, 1 << 16)
    }
}
