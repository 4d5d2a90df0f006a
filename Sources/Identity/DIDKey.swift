import Multiformats

/// The `did:key` form of an Ed25519 public key (W3C CCG did:key method):
/// `did:key:z` ‖ base58btc(varint(0xed) ‖ 32-byte key), which always starts `did:key:z6Mk`.
public enum DIDKey {
    public static let prefix = "did:key:"

    /// The did:key of `key`.
    public static func string(for key: Ed25519.PublicKey) -> String {
        var bytes = UVarint.encode(Multicodec.ed25519Public)
        bytes.append(contentsOf: key.rawRepresentation)
        return prefix + Multibase.base58btc.encode(bytes)
    }

    /// Parses a did:key naming an Ed25519 key.
    /// - Throws: `IdentityError.invalidPeerID` for other methods, encodings or key types.
    public static func publicKey(from did: String) throws(IdentityError) -> Ed25519.PublicKey {
        guard did.hasPrefix(prefix) else {
            throw IdentityError(.invalidPeerID, "\"\(did.prefix(80))\" is not a did:key")
        }
        let encoded = String(did.dropFirst(prefix.count))
        guard encoded.first == "z" else {
            throw IdentityError(.invalidPeerID, "did:key must use base58btc ('z'), got '\(encoded.prefix(1))'")
        }
        do {
            let (_, bytes) = try Multibase.decode(encoded)
            var index = 0
            let codec = try UVarint.read(bytes, at: &index)
            guard codec == Multicodec.ed25519Public else {
                throw IdentityError(
                    .invalidPeerID, "did:key holds key type 0x\(String(codec, radix: 16)), only ed25519-pub (0xed) is supported")
            }
            return try Ed25519.PublicKey(rawRepresentation: bytes[index...])
        } catch let error as MultiformatsError {
            throw IdentityError(wrapping: error, kind: .invalidPeerID, context: "malformed did:key")
        } catch let error as IdentityError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }
}
