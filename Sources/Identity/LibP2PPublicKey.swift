import Multiformats

/// The libp2p `PublicKey` protobuf (libp2p/specs `peer-ids/peer-ids.md`, "Keys"):
///
/// ```protobuf
/// enum KeyType { RSA = 0; Ed25519 = 1; Secp256k1 = 2; ECDSA = 3; }
/// message PublicKey { required KeyType Type = 1; required bytes Data = 2; }
/// ```
///
/// The spec requires the deterministic encoding (fields in order, minimal varints, no extras), since
/// the peer id is a hash of these exact bytes; `init(protobuf:)` therefore accepts only that form.
public struct LibP2PPublicKey: Hashable, Sendable {
    public enum KeyType: UInt64, Sendable {
        case rsa = 0
        case ed25519 = 1
        case secp256k1 = 2
        case ecdsa = 3
    }

    /// Largest key `Data` accepted (an 8192-bit RSA key in PKIX form is about 1.1 KB).
    public static let maximumDataLength = 2048

    public let type: KeyType
    public let data: [UInt8]

    public init(type: KeyType, data: [UInt8]) {
        self.type = type
        self.data = data
    }

    /// The protobuf of an Ed25519 key.
    public init(_ key: Ed25519.PublicKey) {
        self.init(type: .ed25519, data: key.rawRepresentation)
    }

    /// Parses the deterministic protobuf encoding.
    /// - Throws: `IdentityError.invalidPeerID` for anything else.
    public init<Bytes: Collection<UInt8>>(protobuf input: Bytes) throws(IdentityError) {
        let bytes = Array(input)
        var index = 0
        do {
            guard try UVarint.read(bytes, at: &index) == 0x08 else {
                throw IdentityError(.invalidPeerID, "public key protobuf must start with field 1 (Type)")
            }
            let rawType = try UVarint.read(bytes, at: &index)
            guard let type = KeyType(rawValue: rawType) else {
                throw IdentityError(.invalidPeerID, "unknown public key type \(rawType)")
            }
            guard try UVarint.read(bytes, at: &index) == 0x12 else {
                throw IdentityError(.invalidPeerID, "public key protobuf must continue with field 2 (Data)")
            }
            let length = try UVarint.read(bytes, at: &index)
            guard length <= UInt64(Self.maximumDataLength) else {
                throw IdentityError(.invalidPeerID, "public key data of \(length) bytes is over the limit")
            }
            guard length == UInt64(bytes.count - index) else {
                throw IdentityError(
                    .invalidPeerID,
                    "public key data claims \(length) bytes but \(bytes.count - index) follow")
            }
            self.type = type
            self.data = Array(bytes[index...])
        } catch let error as MultiformatsError {
            throw IdentityError(wrapping: error, kind: .invalidPeerID, context: "malformed public key protobuf")
        } catch let error as IdentityError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }

    /// The deterministic protobuf encoding.
    public var protobuf: [UInt8] {
        var bytes: [UInt8] = [0x08]
        UVarint.encode(type.rawValue, into: &bytes)
        bytes.append(0x12)
        UVarint.encode(UInt64(data.count), into: &bytes)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// The key as an Ed25519 key.
    /// - Throws: `IdentityError.invalidKey` for other key types or a malformed Ed25519 key.
    public func ed25519() throws(IdentityError) -> Ed25519.PublicKey {
        guard type == .ed25519 else {
            throw IdentityError(.invalidKey, "public key is of type \(type), only Ed25519 is supported")
        }
        return try Ed25519.PublicKey(rawRepresentation: data)
    }
}
