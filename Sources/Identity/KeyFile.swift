import CSodium

/// The identity key file: an Ed25519 private key as PKCS#8 (RFC 5208 / RFC 5958) in PEM armour, as
/// RFC 8410 §7 specifies for Ed25519 and as `openssl genpkey -algorithm ed25519` writes it:
///
/// ```
/// -----BEGIN PRIVATE KEY-----
/// base64(30 2e 02 01 00 30 05 06 03 2b 65 70 04 22 04 20 ‖ 32-byte seed)
/// -----END PRIVATE KEY-----
/// ```
///
/// Reading also accepts the version-2 form (RFC 5958 `OneAsymmetricKey`) with optional attributes
/// and public key; a public key that does not match the seed is an error. The file must be mode
/// 0600 (no group/other bits); it is written atomically with that mode.
public enum KeyFile {
    /// The file name inside a data directory.
    public static let fileName = "identity.key"
    /// Largest key file read; a PEM Ed25519 key is about 120 bytes.
    public static let maximumFileSize = 16 * 1024

    static let beginLine = "-----BEGIN PRIVATE KEY-----"
    static let endLine = "-----END PRIVATE KEY-----"
    /// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`
    /// up to the seed: RFC 8410 §7.
    static let pkcs8Prefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    /// The PEM text of `key`. The returned bytes are secret: zero them with `Sodium.zero` after use.
    public static func pem(for key: Ed25519.PrivateKey) -> [UInt8] {
        var der = pkcs8Prefix
        key.withSeed { der.append(contentsOf: $0) }
        defer { Sodium.zero(&der) }
        var base64 = [UInt8](repeating: 0, count: sodium_base64_encoded_len(der.count, sodium_base64_VARIANT_ORIGINAL))
        _ = base64.withUnsafeMutableBufferPointer { out in
            der.withUnsafeBufferPointer { input in
                sodium_bin2base64(
                    UnsafeMutableRawPointer(out.baseAddress!).assumingMemoryBound(to: CChar.self), out.count,
                    input.baseAddress!, input.count, sodium_base64_VARIANT_ORIGINAL)
            }
        }
        // Drop the NUL terminator.
        base64.removeLast()
        defer { Sodium.zero(&base64) }
        var pem = Array((beginLine + "\n").utf8)
        pem.append(contentsOf: base64)
        pem.append(contentsOf: Array(("\n" + endLine + "\n").utf8))
        return pem
    }

    /// Parses PEM text into a private key.
    /// - Throws: `IdentityError.invalidKeyFile` saying what is wrong.
    public static func privateKey<Bytes: Collection<UInt8>>(fromPEM input: Bytes) throws(IdentityError) -> Ed25519.PrivateKey {
        var text = Array(input)
        defer { Sodium.zero(&text) }
        guard text.count <= maximumFileSize else {
            throw IdentityError(.invalidKeyFile, "key file is over \(maximumFileSize) bytes")
        }
        guard let begin = text.firstRange(of: Array(beginLine.utf8)) else {
            if text.firstRange(of: Array("-----BEGIN ENCRYPTED PRIVATE KEY-----".utf8)) != nil {
                throw IdentityError(.invalidKeyFile, "encrypted key files are not supported; store the key unencrypted with mode 0600")
            }
            throw IdentityError(.invalidKeyFile, "no \"\(beginLine)\" line: not a PKCS#8 PEM key file")
        }
        guard let end = text[begin.upperBound...].firstRange(of: Array(endLine.utf8)) else {
            throw IdentityError(.invalidKeyFile, "no \"\(endLine)\" line after the BEGIN line")
        }
        var base64 = Array(text[begin.upperBound..<end.lowerBound])
        defer { Sodium.zero(&base64) }
        var der = [UInt8](repeating: 0, count: base64.count)
        defer { Sodium.zero(&der) }
        var derLength = 0
        let result: Int32 = base64.withUnsafeBufferPointer { input in
            der.withUnsafeMutableBufferPointer { output in
                var emptyByte: UInt8 = 0
                return withUnsafeMutablePointer(to: &emptyByte) { fallback in
                    sodium_base642bin(
                        output.baseAddress ?? fallback, output.count,
                        UnsafeRawPointer(input.baseAddress ?? UnsafePointer(fallback)).assumingMemoryBound(to: CChar.self),
                        input.count, " \t\r\n", &derLength, nil, sodium_base64_VARIANT_ORIGINAL)
                }
            }
        }
        guard result == 0, derLength > 0 else {
            throw IdentityError(.invalidKeyFile, "key file body is not valid base64")
        }
        return try privateKey(fromDER: Array(der[0..<derLength]))
    }

    /// Parses a DER PKCS#8 `PrivateKeyInfo`/`OneAsymmetricKey` holding an Ed25519 key.
    static func privateKey(fromDER input: [UInt8]) throws(IdentityError) -> Ed25519.PrivateKey {
        var der = input
        defer { Sodium.zero(&der) }
        var reader = DERReader(der)
        var outer = try reader.read(tag: 0x30, "PrivateKeyInfo SEQUENCE")
        guard reader.isAtEnd else { throw IdentityError(.invalidKeyFile, "bytes follow the PrivateKeyInfo") }
        let version = try outer.read(tag: 0x02, "version INTEGER")
        guard version.remaining == [0x00] || version.remaining == [0x01] else {
            throw IdentityError(.invalidKeyFile, "unsupported PKCS#8 version")
        }
        var algorithm = try outer.read(tag: 0x30, "AlgorithmIdentifier SEQUENCE")
        let oid = try algorithm.read(tag: 0x06, "algorithm OID")
        guard oid.remaining == [0x2b, 0x65, 0x70] else {
            throw IdentityError(.invalidKeyFile, "key is not Ed25519 (OID 1.3.101.112); only Ed25519 identities are supported")
        }
        // RFC 8410 §3: "the parameters MUST be absent".
        guard algorithm.isAtEnd else { throw IdentityError(.invalidKeyFile, "Ed25519 algorithm parameters must be absent") }
        var privateKeyField = try outer.read(tag: 0x04, "privateKey OCTET STRING")
        var seedField = try privateKeyField.read(tag: 0x04, "CurvePrivateKey OCTET STRING")
        guard privateKeyField.isAtEnd, seedField.remaining.count == Ed25519.seedLength else {
            throw IdentityError(.invalidKeyFile, "Ed25519 private key must be a 32-byte seed")
        }
        var seed = seedField.remaining
        defer { Sodium.zero(&seed) }
        seedField.clear()
        let key = try Ed25519.PrivateKey(seed: seed)
        // Optional [0] attributes, then optional [1] public key (v2 only).
        if !outer.isAtEnd, outer.peekTag == 0xa0 {
            _ = try outer.read(tag: 0xa0, "attributes")
        }
        if !outer.isAtEnd {
            let publicKeyField = try outer.read(tag: 0x81, "publicKey [1]")
            guard publicKeyField.remaining.first == 0x00,
                Array(publicKeyField.remaining.dropFirst()) == key.publicKey.rawRepresentation
            else {
                throw IdentityError(.invalidKeyFile, "the public key in the key file does not match its private key")
            }
        }
        guard outer.isAtEnd else { throw IdentityError(.invalidKeyFile, "unexpected fields in PrivateKeyInfo") }
        return key
    }

    /// Reads the key file at `path`.
    /// - Throws: `.notFound`, `.insecureKeyFile` (group/other permission bits set), `.invalidKeyFile`,
    ///   `.fileSystem`.
    public static func read(from path: String) throws(IdentityError) -> Ed25519.PrivateKey {
        var bytes = try PrivateFile.read(path, limit: maximumFileSize, requirePrivate: true)
        defer { Sodium.zero(&bytes) }
        do {
            return try privateKey(fromPEM: bytes)
        } catch {
            throw IdentityError(error.kind, "\(path): \(error.message)")
        }
    }

    /// Writes `key` to `path` with mode 0600, atomically.
    /// - Throws: `.alreadyExists` when the file exists and `overwrite` is false; `.fileSystem`.
    public static func write(_ key: Ed25519.PrivateKey, to path: String, overwrite: Bool) throws(IdentityError) {
        var pem = pem(for: key)
        defer { Sodium.zero(&pem) }
        try PrivateFile.write(pem, to: path, mode: 0o600, overwrite: overwrite)
    }
}

/// A minimal DER reader for the few definite-length structures of a PKCS#8 key. Lengths are checked
/// against the remaining input before use; indefinite and over-long lengths are errors.
struct DERReader {
    private(set) var remaining: [UInt8]

    init(_ bytes: [UInt8]) { self.remaining = bytes }

    var isAtEnd: Bool { remaining.isEmpty }
    var peekTag: UInt8? { remaining.first }

    mutating func clear() { Sodium.zero(&remaining) }

    /// Reads one TLV with `tag` and returns a reader over its value.
    mutating func read(tag: UInt8, _ what: String) throws(IdentityError) -> DERReader {
        guard remaining.count >= 2 else { throw IdentityError(.invalidKeyFile, "key file ends before \(what)") }
        guard remaining[0] == tag else {
            throw IdentityError(.invalidKeyFile, "expected \(what) (tag 0x\(String(tag, radix: 16))), found tag 0x\(String(remaining[0], radix: 16))")
        }
        var index = 2
        var length = Int(remaining[1])
        if length & 0x80 != 0 {
            let lengthBytes = length & 0x7f
            // DER: long form only for lengths ≥ 128, at most 2 length bytes for anything we read.
            guard (1...2).contains(lengthBytes), remaining.count >= 2 + lengthBytes else {
                throw IdentityError(.invalidKeyFile, "bad length encoding for \(what)")
            }
            length = 0
            for byte in remaining[2..<(2 + lengthBytes)] { length = length << 8 | Int(byte) }
            guard length >= 128 else { throw IdentityError(.invalidKeyFile, "non-minimal length for \(what)") }
            index += lengthBytes
        }
        guard length <= remaining.count - index else {
            throw IdentityError(.invalidKeyFile, "\(what) claims \(length) bytes, only \(remaining.count - index) remain")
        }
        let value = DERReader(Array(remaining[index..<(index + length)]))
        remaining.removeFirst(index + length)
        return value
    }
}
