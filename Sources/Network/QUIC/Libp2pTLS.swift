import CQuic
import Identity
import Multiformats

#if canImport(Glibc)
    import Glibc
#endif

/// libp2p's TLS handshake as QUIC uses it (libp2p/specs `tls/tls.md`; spec/network.md, "QUIC"):
/// each side presents a self-signed certificate for an ephemeral key (ECDSA P-256, never the host
/// key) that carries the extension `1.3.6.1.4.1.53594.1.1`, whose value is
///
///     SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }
///
/// with `publicKey` the host key's libp2p `PublicKey` protobuf and `signature` the host key's
/// signature over `"libp2p-tls-handshake:" ‖ DER(SubjectPublicKeyInfo of the certificate)`. The
/// spec text says BIT STRING; go, rust and py emit OCTET STRING. We emit OCTET STRING and accept
/// both. The peer id is derived from `publicKey`.
///
/// The X.509 work (building, parsing, the self-signature) is GnuTLS's, in CQuic; the libp2p parts
/// (the SignedKey, the host signature, the peer id) are here, over bounds-checked Swift.
public enum Libp2pTLS {
    public static let signaturePrefix = Array("libp2p-tls-handshake:".utf8)
    /// Largest extension value and SubjectPublicKeyInfo accepted from a peer.
    static let maximumFieldLength = 4096

    /// A certificate and its key for one host: what an endpoint's TLS credential is made of.
    final class Certificate: @unchecked Sendable {
        // `@unchecked Sendable`: both pointers are written once in `init` and freed in `deinit`;
        // GnuTLS's credentials are read-only after creation and may be shared across sessions.
        let key: OpaquePointer
        let der: [UInt8]
        let credentials: OpaquePointer
        /// The end of the validity window (Unix seconds).
        let notAfter: Int64

        /// A fresh ephemeral key and a certificate for it, signed for `identity`, valid from an hour
        /// ago (clock skew) for `lifetime` seconds.
        init(identity: Ed25519.PrivateKey, now: Int64 = Int64(time(nil)), lifetime: Int64 = 100 * 86_400) throws {
            guard let key = cq_key_generate() else {
                throw NetworkError(.invalidConfiguration, "cannot generate a TLS certificate key")
            }
            let spki: [UInt8]
            do {
                spki = try Libp2pTLS.subjectPublicKeyInfo(of: key)
            } catch {
                cq_key_free(key)
                throw error
            }
            let signedKey = Libp2pTLS.signedKey(
                publicKey: LibP2PPublicKey(identity.publicKey).protobuf,
                signature: identity.signature(for: Libp2pTLS.signaturePrefix + spki))
            let der: [UInt8]
            do {
                der = try Libp2pTLS.buildCertificate(
                    key: key, commonName: PeerID(publicKey: identity.publicKey).description, extension: signedKey,
                    notBefore: now - 3600, notAfter: now + lifetime)
            } catch {
                cq_key_free(key)
                throw error
            }
            var message = [CChar](repeating: 0, count: 256)
            guard let credentials = cq_credentials_new(key, der, der.count, &message, message.count) else {
                cq_key_free(key)
                throw NetworkError(.invalidConfiguration, cMessage(message))
            }
            self.key = key
            self.der = der
            self.credentials = credentials
            self.notAfter = now + lifetime
        }

        deinit {
            cq_credentials_free(credentials)
            cq_key_free(key)
        }
    }

    static func subjectPublicKeyInfo(of key: OpaquePointer) throws -> [UInt8] {
        var spki = [UInt8](repeating: 0, count: 1024)
        var length = spki.count
        guard cq_key_spki(key, &spki, &length) == 0 else {
            throw NetworkError(.invalidConfiguration, "cannot export the TLS key")
        }
        return Array(spki[..<length])
    }

    /// A self-signed certificate for `key` with `extension` as the libp2p extension's value; the
    /// parameters past that exist to build hostile certificates in tests.
    static func buildCertificate(
        key: OpaquePointer, commonName: String, extension value: [UInt8], critical: Bool = false,
        notBefore: Int64, notAfter: Int64, extraCriticalOID: String? = nil
    ) throws -> [UInt8] {
        var der = [UInt8](repeating: 0, count: 16384)
        var length = der.count
        var message = [CChar](repeating: 0, count: 256)
        let result = commonName.withCString { name in
            if let extraCriticalOID {
                return extraCriticalOID.withCString { oid in
                    cq_cert_build(
                        key, name, value, value.count, critical ? 1 : 0, notBefore, notAfter, oid, &der, &length,
                        &message, message.count)
                }
            }
            return cq_cert_build(
                key, name, value, value.count, critical ? 1 : 0, notBefore, notAfter, nil, &der, &length, &message,
                message.count)
        }
        guard result == 0 else { throw NetworkError(.invalidConfiguration, cMessage(message)) }
        return Array(der[..<length])
    }

    /// The DER of `SignedKey { publicKey OCTET STRING, signature OCTET STRING }`.
    static func signedKey(publicKey: [UInt8], signature: [UInt8]) -> [UInt8] {
        var body: [UInt8] = []
        DER.append(tag: 0x04, publicKey, to: &body)
        DER.append(tag: 0x04, signature, to: &body)
        var out: [UInt8] = []
        DER.append(tag: 0x30, body, to: &out)
        return out
    }

    /// Verifies a peer's certificate completely (X.509 checks, then `verify(extension:spki:)`) and
    /// returns its peer id. For tests and tools; the handshake runs the same two steps.
    public static func verify(certificate der: [UInt8], now: Int64 = Int64(time(nil))) throws(NetworkError) -> PeerID {
        var extensionValue = [UInt8](repeating: 0, count: maximumFieldLength)
        var spki = [UInt8](repeating: 0, count: maximumFieldLength)
        var extensionLength = extensionValue.count
        var spkiLength = spki.count
        var message = [CChar](repeating: 0, count: 256)
        guard
            cq_cert_inspect(
                der, der.count, now, &extensionValue, &extensionLength, &spki, &spkiLength, &message, message.count) == 0
        else {
            throw NetworkError(.refused, "peer certificate refused: \(cMessage(message))")
        }
        return try verify(extension: extensionValue[..<extensionLength], spki: spki[..<spkiLength])
    }

    /// The libp2p part of the verification: parses the SignedKey in `extension`, checks the host
    /// key's signature over the prefix and `spki` (the certificate's SubjectPublicKeyInfo DER), and
    /// returns the peer id of the host key. Hostile input: every failure is a thrown error.
    public static func verify(extension value: ArraySlice<UInt8>, spki: ArraySlice<UInt8>) throws(NetworkError)
        -> PeerID
    {
        var reader = DER.Reader(value)
        guard var sequence = reader.read(tag: 0x30), reader.isAtEnd else {
            throw NetworkError(.refused, "libp2p certificate extension is not a SignedKey sequence")
        }
        guard let publicKeyBytes = sequence.readString(),
            let signature = sequence.readString(), sequence.isAtEnd
        else {
            throw NetworkError(.refused, "libp2p certificate extension's SignedKey is malformed")
        }
        let publicKey: LibP2PPublicKey
        do {
            publicKey = try LibP2PPublicKey(protobuf: publicKeyBytes)
        } catch {
            throw NetworkError(.refused, "libp2p certificate extension's public key is malformed: \(error)")
        }
        let message = signaturePrefix + Array(spki)
        let valid: Bool
        switch publicKey.type {
        case .ed25519:
            guard let key = try? Ed25519.PublicKey(rawRepresentation: publicKey.data) else {
                throw NetworkError(.refused, "libp2p certificate extension's Ed25519 key is malformed")
            }
            valid = key.isValidSignature(Array(signature), for: message)
        case .ecdsa, .rsa:
            valid =
                cq_verify_host_signature(
                    Int32(publicKey.type.rawValue), publicKey.data, publicKey.data.count, message, message.count,
                    Array(signature), signature.count) == 0
        case .secp256k1:
            throw NetworkError(.refused, "secp256k1 host keys are not supported (no secp256k1 in GnuTLS)")
        }
        guard valid else {
            throw NetworkError(.refused, "libp2p certificate extension's signature is invalid")
        }
        return PeerID(publicKey: publicKey)
    }
}

/// The text of a NUL-terminated message a C call wrote into `buffer`.
func cMessage(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// The little DER the SignedKey needs: definite lengths, one level of nesting, OCTET STRING or
/// BIT STRING (with zero unused bits) contents.
enum DER {
    static func append(tag: UInt8, _ content: [UInt8], to out: inout [UInt8]) {
        out.append(tag)
        let count = content.count
        if count < 0x80 {
            out.append(UInt8(count))
        } else {
            var lengthBytes: [UInt8] = []
            var remaining = count
            while remaining > 0 {
                lengthBytes.insert(UInt8(remaining & 0xff), at: 0)
                remaining >>= 8
            }
            out.append(0x80 | UInt8(lengthBytes.count))
            out.append(contentsOf: lengthBytes)
        }
        out.append(contentsOf: content)
    }

    struct Reader {
        private var bytes: ArraySlice<UInt8>

        init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

        var isAtEnd: Bool { bytes.isEmpty }

        /// The next element's content if its tag is `tag` (minimal or long-form lengths up to 4
        /// bytes; never past the end).
        mutating func read(tag: UInt8) -> Reader? {
            guard let content = readElement(tag: tag) else { return nil }
            return Reader(content)
        }

        /// An OCTET STRING's content, or a BIT STRING's with zero unused bits.
        mutating func readString() -> ArraySlice<UInt8>? {
            guard let first = bytes.first else { return nil }
            if first == 0x04 { return readElement(tag: 0x04) }
            guard first == 0x03, let content = readElement(tag: 0x03), content.first == 0 else { return nil }
            return content.dropFirst()
        }

        private mutating func readElement(tag: UInt8) -> ArraySlice<UInt8>? {
            var cursor = bytes
            guard cursor.popFirst() == tag, let first = cursor.popFirst() else { return nil }
            var length = 0
            if first < 0x80 {
                length = Int(first)
            } else {
                let count = Int(first & 0x7f)
                guard count >= 1, count <= 4, cursor.count >= count else { return nil }
                for _ in 0..<count { length = length << 8 | Int(cursor.popFirst()!) }
            }
            guard length <= cursor.count else { return nil }
            let content = cursor.prefix(length)
            bytes = cursor.dropFirst(length)
            return content
        }
    }
}
