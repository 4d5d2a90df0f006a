import CQuic
import Identity
import Testing

@testable import Network

#if canImport(Glibc)
    import Glibc
#endif

/// The libp2p TLS certificate (libp2p/specs tls/tls.md): our certificates verify, the spec's test
/// vectors give the spec's peer ids, and every forged or malformed certificate is refused with an
/// error (hostile input: never a crash). py-libp2p 0.8.1 accepts forged extension signatures, so
/// these known-answer tests are what proves ours refuses them.
@Suite("QUIC: libp2p TLS certificates")
struct QUICCertificateTests {
    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    // libp2p/specs tls/tls.md, "Test vectors" (valid 1975 to 4096).
    static let ed25519Vector = bytes(
        hex:
            "308201ae30820156a0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea37c307a3078060a2b0601040183a25a0101046a3068042408011220a77f1d92fedb59dddaea5a1c4abd1ac2fbde7d7b879ed364501809923d7c11b90440d90d2769db992d5e6195dbb08e706b6651e024fda6cfb8846694a435519941cac215a8207792e42849cccc6cd8136c6e4bde92a58c5e08cfd4206eb5fe0bf909300a06082a8648ce3d0403020346003043021f50f6b6c52711a881778718238f650c9fb48943ae6ee6d28427dc6071ae55e702203625f116a7a454db9c56986c82a25682f7248ea1cb764d322ea983ed36a31b77"
    )
    static let ecdsaVector = bytes(
        hex:
            "308201f63082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f2044730450220064ea8124774caf8f50e57f436aa62350ce652418c019df5d98a3ac666c9386a022100aa59d704a931b5f72fb9222cb6cc51f954d04a4e2e5450f8805fe8918f71eaae300a06082a8648ce3d04030203470030440220799395b0b6c1e940a7e4484705f610ab51ed376f19ff9d7c16757cfbf61b8d4302206205c03fbb0f95205c779be86581d3e31c01871ad5d1f3435bcf375cb0e5088a"
    )
    static let secp256k1Vector = bytes(
        hex:
            "308201ba3082015fa0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea38184308181307f060a2b0601040183a25a01010471306f0425080212210206dc6968726765b820f050263ececf7f71e4955892776c0970542efd689d2382044630440220145e15a991961f0d08cd15425bb95ec93f6ffa03c5a385eedc34ecf464c7a8ab022026b3109b8a3f40ef833169777eb2aa337cfb6282f188de0666d1bcec2a4690dd300a06082a8648ce3d0403020349003046022100e1a217eeef9ec9204b3f774a08b70849646b6a1e6b8b27f93dc00ed58545d9fe022100b00dafa549d0f03547878338c7b15e7502888f6d45db387e5ae6b5d46899cef0"
    )
    /// Vector 4: the extension's signature does not match its (ECDSA) key.
    static let invalidVector = bytes(
        hex:
            "308201f73082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f204473045022100bb6e03577b7cc7a3cd1558df0da2b117dfdcc0399bc2504ebe7de6f65cade72802206de96e2a5be9b6202adba24ee0362e490641ac45c240db71fe955f2c5cf8df6e300a06082a8648ce3d0403020348003045022100e847f267f43717358f850355bdcabbefb2cfbf8a3c043b203a14788a092fe8db022027c1d04a2d41fd6b57a7e8b3989e470325de4406e52e084e34a3fd56eef0d0df"
    )

    static let now = Int64(time(nil))

    /// A certificate for a fresh ephemeral key with `extension` as given (signed correctly or not,
    /// as the test makes it): the building block of the forgeries below.
    static func certificate(
        extension value: (_ spki: [UInt8]) -> [UInt8], critical: Bool = false, notBefore: Int64 = now - 60,
        notAfter: Int64 = now + 3600, extraCriticalOID: String? = nil
    ) throws -> [UInt8] {
        let key = try #require(cq_key_generate())
        defer { cq_key_free(key) }
        let spki = try Libp2pTLS.subjectPublicKeyInfo(of: key)
        return try Libp2pTLS.buildCertificate(
            key: key, commonName: "test", extension: value(spki), critical: critical, notBefore: notBefore,
            notAfter: notAfter, extraCriticalOID: extraCriticalOID)
    }

    static func refusal(_ der: [UInt8]) -> String? {
        do {
            _ = try Libp2pTLS.verify(certificate: der)
            return nil
        } catch {
            return error.message
        }
    }

    @Test("spec vector 1 (Ed25519 host key) gives the spec's peer id")
    func ed25519Vector() throws {
        #expect(
            try Libp2pTLS.verify(certificate: Self.ed25519Vector).description
                == "12D3KooWM6CgA9iBFZmcYAHA6A2qvbAxqfkmrYiRQuz3XEsk4Ksv")
    }

    @Test("spec vector 2 (ECDSA host key) gives the spec's peer id")
    func ecdsaVector() throws {
        #expect(
            try Libp2pTLS.verify(certificate: Self.ecdsaVector).description
                == "QmfXbAwNjJLXfesgztEHe8HwgVDCMMpZ9Eax1HYq6hn9uE")
    }

    @Test("spec vector 4 (extension signature does not match its key) is refused")
    func invalidVector() {
        #expect(Self.refusal(Self.invalidVector)?.contains("signature is invalid") == true)
    }

    @Test("spec vector 3 (secp256k1) is refused as unsupported, clearly")
    func secp256k1Vector() {
        #expect(Self.refusal(Self.secp256k1Vector)?.contains("secp256k1") == true)
    }

    @Test("our certificate verifies and names our peer id; the same SPKI from GnuTLS and the extension")
    func ownCertificate() throws {
        let identity = Ed25519.PrivateKey()
        let certificate = try Libp2pTLS.Certificate(identity: identity)
        #expect(try Libp2pTLS.verify(certificate: certificate.der) == PeerID(publicKey: identity.publicKey))
    }

    @Test("a forged extension signature (another host key signed, or bytes flipped) is refused")
    func forgedSignature() throws {
        let victim = Ed25519.PrivateKey()
        let attacker = Ed25519.PrivateKey()
        // The victim's public key, signed by the attacker.
        let forged = try Self.certificate { spki in
            Libp2pTLS.signedKey(
                publicKey: LibP2PPublicKey(victim.publicKey).protobuf,
                signature: attacker.signature(for: Libp2pTLS.signaturePrefix + spki))
        }
        #expect(Self.refusal(forged)?.contains("signature is invalid") == true)
        // A correct signature with one bit flipped.
        let flipped = try Self.certificate { spki in
            var signature = victim.signature(for: Libp2pTLS.signaturePrefix + spki)
            signature[17] ^= 0x01
            return Libp2pTLS.signedKey(publicKey: LibP2PPublicKey(victim.publicKey).protobuf, signature: signature)
        }
        #expect(Self.refusal(flipped)?.contains("signature is invalid") == true)
        // The victim's real signature over another certificate's key (a replayed extension).
        let otherKey = try #require(cq_key_generate())
        defer { cq_key_free(otherKey) }
        let otherSPKI = try Libp2pTLS.subjectPublicKeyInfo(of: otherKey)
        let replayed = try Self.certificate { _ in
            Libp2pTLS.signedKey(
                publicKey: LibP2PPublicKey(victim.publicKey).protobuf,
                signature: victim.signature(for: Libp2pTLS.signaturePrefix + otherSPKI))
        }
        #expect(Self.refusal(replayed)?.contains("signature is invalid") == true)
        // Signed without the prefix.
        let unprefixed = try Self.certificate { spki in
            Libp2pTLS.signedKey(
                publicKey: LibP2PPublicKey(victim.publicKey).protobuf, signature: victim.signature(for: spki))
        }
        #expect(Self.refusal(unprefixed)?.contains("signature is invalid") == true)
    }

    @Test("BIT STRING SignedKey fields (the spec text's form) are accepted")
    func bitStringForm() throws {
        let identity = Ed25519.PrivateKey()
        let certificate = try Self.certificate { spki in
            var body: [UInt8] = []
            DER.append(tag: 0x03, [0] + LibP2PPublicKey(identity.publicKey).protobuf, to: &body)
            DER.append(tag: 0x03, [0] + identity.signature(for: Libp2pTLS.signaturePrefix + spki), to: &body)
            var out: [UInt8] = []
            DER.append(tag: 0x30, body, to: &out)
            return out
        }
        #expect(try Libp2pTLS.verify(certificate: certificate) == PeerID(publicKey: identity.publicKey))
    }

    @Test("malformed extensions, expired or unknown-critical certificates and garbage are refused, never a crash")
    func malformed() throws {
        let identity = Ed25519.PrivateKey()
        func good(_ spki: [UInt8]) -> [UInt8] {
            Libp2pTLS.signedKey(
                publicKey: LibP2PPublicKey(identity.publicKey).protobuf,
                signature: identity.signature(for: Libp2pTLS.signaturePrefix + spki))
        }
        let cases: [(String, [UInt8])] = [
            ("empty extension", try Self.certificate { _ in [] }),
            ("not a sequence", try Self.certificate { _ in [0x04, 0x02, 0x01, 0x02] }),
            ("one field", try Self.certificate { _ in [0x30, 0x03, 0x04, 0x01, 0x08] }),
            ("length past the end", try Self.certificate { _ in [0x30, 0x7f, 0x04, 0x01, 0x08] }),
            ("huge length", try Self.certificate { _ in [0x30, 0x84, 0xff, 0xff, 0xff, 0xff] }),
            ("trailing bytes", try Self.certificate { spki in good(spki) + [0x00] }),
            ("garbage protobuf", try Self.certificate { _ in Libp2pTLS.signedKey(publicKey: [0xff, 0xff], signature: [1]) }),
            ("BIT STRING with unused bits", try Self.certificate { _ in [0x30, 0x06, 0x03, 0x01, 0x07, 0x03, 0x01, 0x07] }),
            ("expired", try Self.certificate(extension: good, notBefore: Self.now - 7200, notAfter: Self.now - 3600)),
            ("not yet valid", try Self.certificate(extension: good, notBefore: Self.now + 3600, notAfter: Self.now + 7200)),
            ("unknown critical extension", try Self.certificate(extension: good, extraCriticalOID: "1.2.3.4.5")),
            ("empty input", []),
            ("garbage", Array(repeating: 0x30, count: 200)),
        ]
        for (name, der) in cases {
            #expect(Self.refusal(der) != nil, "\(name) was accepted")
        }
        // The critical libp2p extension itself is allowed.
        let critical = try Self.certificate(extension: good, critical: true)
        #expect(try Libp2pTLS.verify(certificate: critical) == PeerID(publicKey: identity.publicKey))
        // Every truncation and every single-byte corruption of a valid certificate is refused
        // (or, where a byte is outside what is signed and checked, still names the right peer).
        let valid = try Self.certificate(extension: good)
        for length in 0..<valid.count {
            #expect(Self.refusal(Array(valid[..<length])) != nil)
        }
        for index in stride(from: 0, to: valid.count, by: 3) {
            var corrupted = valid
            corrupted[index] ^= 0x5a
            if let peer = try? Libp2pTLS.verify(certificate: corrupted) {
                #expect(peer == PeerID(publicKey: identity.publicKey))
            }
        }
    }

    @Test("a forged certificate made by flipping a byte of the spec vector fails its self-signature")
    func tamperedVector() {
        var tampered = Self.ed25519Vector
        tampered[300] ^= 0x01  // inside the extension, covered by the self-signature
        #expect(Self.refusal(tampered) != nil)
    }
}
