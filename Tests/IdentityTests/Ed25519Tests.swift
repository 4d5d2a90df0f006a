import AgentTesting
import Testing

@testable import Identity

@Suite("Ed25519 through libsodium (RFC 8032)")
struct Ed25519Tests {
    @Test("RFC 8032 §7.1 vectors: key derivation, signature, verification", arguments: try TestVectors.array("ed25519-rfc8032.json"))
    func rfc8032(vector: Vector) throws {
        let key = try Ed25519.PrivateKey(seed: try vector.hex("secret_key"))
        let message = try vector.hex("message")
        let signature = try vector.hex("signature")
        #expect(key.publicKey.rawRepresentation == (try vector.hex("public_key")))
        #expect(key.signature(for: message) == signature)
        #expect(key.publicKey.isValidSignature(signature, for: message))
        var tampered = message
        if tampered.isEmpty { tampered = [0] } else { tampered[0] ^= 1 }
        #expect(!key.publicKey.isValidSignature(signature, for: tampered))
        var badSignature = signature
        badSignature[63] ^= 0x40
        #expect(!key.publicKey.isValidSignature(badSignature, for: message))
        #expect(!key.publicKey.isValidSignature(Array(signature.prefix(63)), for: message))
    }

    @Test("the seed read back is the seed the key was made from")
    func seed() throws {
        let seed = Sodium.randomBytes(32)
        let key = try Ed25519.PrivateKey(seed: seed)
        #expect(key.withSeed { Array($0) } == seed)
        #expect(Ed25519.PrivateKey().publicKey != key.publicKey)
    }

    @Test("keys of the wrong length and small-order points are refused")
    func invalidKeys() {
        #expect(throws: IdentityError.self) { _ = try Ed25519.PrivateKey(seed: [1, 2, 3]) }
        #expect(throws: IdentityError.self) { _ = try Ed25519.PublicKey(rawRepresentation: [UInt8](repeating: 1, count: 31)) }
        #expect(Ed25519.PrivateKey().publicKey.isValidPoint)
    }

    @Test("a small-order key is flagged and nothing ever verifies under it")
    func smallOrder() throws {
        // The identity point (0, 1) has order 1: with R = identity and S = 0, the verification
        // equation [S]B = R + [k]A holds for every message unless the implementation refuses it.
        var identity = [UInt8](repeating: 0, count: 32)
        identity[0] = 1
        let key = try Ed25519.PublicKey(rawRepresentation: identity)
        #expect(!key.isValidPoint)
        let forged = identity + [UInt8](repeating: 0, count: 32)
        for message in [[UInt8](), [1, 2, 3], Array("agent-record:v1\n".utf8)] {
            #expect(!key.isValidSignature(forged, for: message))
        }
    }
}

@Suite("X25519 through libsodium (RFC 7748)")
struct X25519Tests {
    @Test("RFC 7748 §5.2 scalar multiplication vectors", arguments: try TestVectors.array("x25519-rfc7748.json"))
    func scalarMultiplication(vector: Vector) throws {
        let key = try X25519.PrivateKey(rawRepresentation: try vector.hex("scalar"))
        let shared = try key.sharedSecret(with: try X25519.PublicKey(rawRepresentation: try vector.hex("u")))
        #expect(shared.withUnsafeBytes { Array($0) } == (try vector.hex("output")))
    }

    @Test("RFC 7748 §6.1 Diffie-Hellman", arguments: try TestVectors.array("x25519-rfc7748.json", "dh"))
    func diffieHellman(vector: Vector) throws {
        let alice = try X25519.PrivateKey(rawRepresentation: try vector.hex("alice_private"))
        let bob = try X25519.PrivateKey(rawRepresentation: try vector.hex("bob_private"))
        #expect(alice.publicKey.rawRepresentation == (try vector.hex("alice_public")))
        #expect(bob.publicKey.rawRepresentation == (try vector.hex("bob_public")))
        let ab = try alice.sharedSecret(with: bob.publicKey).withUnsafeBytes { Array($0) }
        let ba = try bob.sharedSecret(with: alice.publicKey).withUnsafeBytes { Array($0) }
        #expect(ab == (try vector.hex("shared")))
        #expect(ba == ab)
    }

    @Test("RFC 7748 §5.2 iterated vectors (1 and 1000 rounds)", arguments: try TestVectors.array("x25519-rfc7748.json", "iterated"))
    func iterated(vector: Vector) throws {
        var k = try vector.hex("k")
        var u = try vector.hex("u")
        let rounds = try #require(Int(try vector.string("iterations")))
        for _ in 0..<rounds {
            let result = try X25519.PrivateKey(rawRepresentation: k).sharedSecret(with: X25519.PublicKey(rawRepresentation: u))
            u = k
            k = result.withUnsafeBytes { Array($0) }
        }
        #expect(k == (try vector.hex("output")))
    }

    @Test("a low-order peer point is refused instead of giving a zero secret")
    func lowOrder() throws {
        let key = X25519.PrivateKey()
        let zero = try X25519.PublicKey(rawRepresentation: [UInt8](repeating: 0, count: 32))
        #expect(throws: IdentityError.self) { _ = try key.sharedSecret(with: zero) }
    }
}
