/// The two text forms of a libp2p peer id (libp2p/specs `peer-ids/peer-ids.md`, "String
/// representation"), shared by `Multiaddr` (`/p2p/…`) and `Identity.PeerID`.
///
/// - legacy: the multihash in base58btc without a multibase prefix (`12D3KooW…`, `Qm…`);
/// - CIDv1 with content type `libp2p-key` (0x72) in any multibase we read (`bafz…`, `k51…`).
public enum PeerIDText {
    /// Longest peer id text accepted (an RSA sha2-256 id is 46 characters; an inlined Ed25519 key 52).
    public static let maximumLength = 256

    /// Decodes either text form to the peer id's multihash.
    /// - Throws: `MultiformatsError` naming what is wrong with the text.
    public static func decode(_ text: Substring) throws(MultiformatsError) -> Multihash {
        guard !text.isEmpty else { throw MultiformatsError(.invalidEncoding, "empty peer id") }
        guard text.utf8.count <= maximumLength else {
            throw MultiformatsError(.tooLarge, "peer id text of \(text.utf8.count) characters is over the limit")
        }
        // Spec: "If it starts with 1 or Qm, it's a bare base58btc encoded multihash. Otherwise,
        // decode it as a multibase-encoded CID."
        if text.hasPrefix("1") || text.hasPrefix("Qm") {
            return try Multihash(bytes: base58btc.decode(text))
        }
        let (_, bytes) = try Multibase.decode(String(text))
        var index = 0
        let version = try UVarint.read(bytes, at: &index)
        guard version == Multicodec.cidV1 else {
            throw MultiformatsError(.invalidEncoding, "peer id CID has version \(version), expected 1")
        }
        let codec = try UVarint.read(bytes, at: &index)
        guard codec == Multicodec.libp2pKey else {
            throw MultiformatsError(
                .invalidEncoding, "peer id CID has content type 0x\(String(codec, radix: 16)), expected libp2p-key (0x72)")
        }
        return try Multihash(bytes: bytes[index...])
    }

    /// The legacy base58btc text of a peer id multihash.
    public static func base58(_ multihash: Multihash) -> String {
        base58btc.encode(multihash.bytes)
    }

    /// The CIDv1 `libp2p-key` text of a peer id multihash in `base` (base32 `b…` by default).
    public static func cid(_ multihash: Multihash, base: Multibase = .base32) -> String {
        var bytes: [UInt8] = []
        UVarint.encode(Multicodec.cidV1, into: &bytes)
        UVarint.encode(Multicodec.libp2pKey, into: &bytes)
        bytes.append(contentsOf: multihash.bytes)
        return base.encode(bytes)
    }
}
