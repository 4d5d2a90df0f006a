import AgentTesting
import Identity
import Testing

@testable import Session

/// Noise's HKDF (rev. 34 §4.3) is RFC 5869 HKDF-SHA256 with the chaining key as salt and an empty
/// info; its two outputs are the first 64 bytes of the RFC's OKM.
@Suite("Noise HKDF")
struct NoiseHKDFTests {
    @Test("RFC 5869 A.3 (SHA-256, empty salt and info): both outputs match the OKM")
    func rfc5869TestCase3() throws {
        // An empty salt is HashLen zero bytes (RFC 5869 §2.2), which is also what HMAC makes of it.
        let salt = SecretBytes(count: 32, protection: .heap) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        let inputKeyMaterial = [UInt8](repeating: 0x0b, count: 22)
        let (first, second) = inputKeyMaterial.withUnsafeBytes {
            NoiseSymmetricState.hkdf(chainingKey: salt, inputKeyMaterial: $0)
        }
        let output = first.withUnsafeBytes { Array($0) } + second.withUnsafeBytes { Array($0) }
        let expected = try Hex.decode("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
        #expect(Array(output.prefix(42)) == expected)
        #expect(first.count == 32 && second.count == 32)
    }
}
