import Testing

@testable import Identity

@Suite("SecretBytes: locked and heap secrets")
struct SecretBytesTests {
    @Test("ephemeral keys agree with long-lived ones, both ways")
    func ephemeralAgreement() throws {
        let ephemeral = X25519.PrivateKey.ephemeral()
        let longLived = X25519.PrivateKey()
        let a = try ephemeral.sharedSecret(with: longLived.publicKey)
        let b = try longLived.sharedSecret(with: ephemeral.publicKey)
        #expect(a.withUnsafeBytes { Array($0) } == b.withUnsafeBytes { Array($0) })
        #expect(a.count == 32)
    }

    /// A node with thousands of connections holds two cipher keys per connection plus handshake
    /// intermediates. In sodium_malloc memory every secret costs 3-4 kernel memory mappings, and the
    /// default limit of 65530 mappings ran out at about 16,000 secrets (a 100-node test crashed with
    /// "sodium_malloc(32) failed"). Per-connection secrets live in heap memory now.
    @Test("40,000 per-connection secrets can be held at once")
    func manyHeapSecrets() throws {
        let peer = X25519.PrivateKey().publicKey
        var held: [SecretBytes] = []
        held.reserveCapacity(40_000)
        for _ in 0..<20_000 {
            let key = X25519.PrivateKey.ephemeral()
            held.append(try key.sharedSecret(with: peer))
            var bytes = [UInt8](repeating: 7, count: 32)
            held.append(SecretBytes(consuming: &bytes, protection: .heap))
            #expect(bytes == [UInt8](repeating: 0, count: 32))
        }
        #expect(held.count == 40_000)
    }
}
