/// Entries of the multicodec table (multiformats/multicodec `table.csv`) that agentd uses.
public enum Multicodec {
    /// `identity` multihash: the digest is the input itself.
    public static let identity: UInt64 = 0x00
    /// `cidv1`.
    public static let cidV1: UInt64 = 0x01
    /// `sha2-256` multihash.
    public static let sha2_256: UInt64 = 0x12
    /// `libp2p-key`: CID content type of a libp2p public key (peer ids as CIDs).
    public static let libp2pKey: UInt64 = 0x72
    /// `ed25519-pub`: a raw 32-byte Ed25519 public key (`did:key`).
    public static let ed25519Public: UInt64 = 0xed
    /// `x25519-pub`.
    public static let x25519Public: UInt64 = 0xec
}
