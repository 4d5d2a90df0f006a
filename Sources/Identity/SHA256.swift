import CSodium

/// SHA-256 (FIPS 180-4) through libsodium's `crypto_hash_sha256`.
public enum SHA256 {
    public static let digestLength = 32

    /// The SHA-256 digest of `bytes`.
    public static func hash<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> [UInt8] {
        Sodium.ensureInitialized()
        var digest = [UInt8](repeating: 0, count: digestLength)
        withBytePointer(bytes) { input, count in
            withMutableBytePointer(&digest) { output in
                _ = crypto_hash_sha256(output, input, UInt64(count))
            }
        }
        return digest
    }
}
