import Multiformats

/// A libp2p peer id (libp2p/specs `peer-ids/peer-ids.md`): the multihash of the peer's public key
/// protobuf — `identity` when the protobuf is at most 42 bytes (so Ed25519 keys are inlined and a
/// peer id alone verifies signatures), `sha2-256` otherwise.
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    /// Spec, "Peer Ids": keys whose protobuf is at most 42 bytes are inlined with `identity`.
    public static let maximumInlineKeyLength = 42

    /// The multihash that is the peer id.
    public let multihash: Multihash

    /// Wraps a multihash after checking it is a plausible peer id: `sha2-256`, or `identity` over a
    /// well-formed public key protobuf of at most 42 bytes.
    /// - Throws: `IdentityError.invalidPeerID`.
    public init(multihash: Multihash) throws(IdentityError) {
        if multihash.code == Multicodec.identity {
            guard multihash.digest.count <= Self.maximumInlineKeyLength else {
                throw IdentityError(.invalidPeerID, "identity peer id inlines \(multihash.digest.count) bytes, over 42")
            }
            _ = try LibP2PPublicKey(protobuf: multihash.digest)
        }
        self.multihash = multihash
    }

    /// The peer id of a public key protobuf.
    public init(publicKey: LibP2PPublicKey) {
        let protobuf = publicKey.protobuf
        if protobuf.count <= Self.maximumInlineKeyLength {
            self.multihash = try! Multihash(code: Multicodec.identity, digest: protobuf)
        } else {
            self.multihash = try! Multihash(code: Multicodec.sha2_256, digest: SHA256.hash(protobuf))
        }
    }

    /// The peer id of an Ed25519 key.
    public init(publicKey: Ed25519.PublicKey) {
        self.init(publicKey: LibP2PPublicKey(publicKey))
    }

    /// Parses either text form: legacy base58btc (`12D3KooW…`) or a CIDv1 `libp2p-key` in base32
    /// (`bafz…`) or base36 (`k51…`).
    /// - Throws: `IdentityError.invalidPeerID` naming the problem.
    public init(_ text: String) throws(IdentityError) {
        let multihash: Multihash
        do {
            multihash = try PeerIDText.decode(text[...])
        } catch {
            throw IdentityError(.invalidPeerID, "\"\(text.prefix(80))\" is not a peer id: \(error.message)")
        }
        try self.init(multihash: multihash)
    }

    /// Parses the binary form (the multihash bytes).
    public init<Bytes: Collection<UInt8>>(bytes: Bytes) throws(IdentityError) {
        let multihash: Multihash
        do {
            multihash = try Multihash(bytes: bytes)
        } catch {
            throw IdentityError(.invalidPeerID, "not a peer id multihash: \(error.message)")
        }
        try self.init(multihash: multihash)
    }

    /// The binary form (multihash bytes).
    public var bytes: [UInt8] { multihash.bytes }

    /// The legacy base58btc text form, the one libp2p implementations print.
    public var description: String { PeerIDText.base58(multihash) }

    /// The CIDv1 `libp2p-key` text form in `base` (`.base32` gives `bafz…`, `.base36` gives `k51…`).
    public func cidString(base: Multibase = .base32) -> String { PeerIDText.cid(multihash, base: base) }

    /// The inlined public key, if this is an `identity` peer id.
    public var publicKey: LibP2PPublicKey? {
        guard multihash.code == Multicodec.identity else { return nil }
        return try? LibP2PPublicKey(protobuf: multihash.digest)
    }

    /// The inlined Ed25519 public key, if this peer id inlines one.
    public var ed25519PublicKey: Ed25519.PublicKey? {
        try? publicKey?.ed25519()
    }

    /// Whether this peer id is the id of `key`.
    public func matches(_ key: Ed25519.PublicKey) -> Bool {
        self == PeerID(publicKey: key)
    }
}
