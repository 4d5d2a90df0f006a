import Multiformats

/// The one error type of the `Identity` module: a stable `kind` for code and a `message` for people.
public struct IdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// libsodium could not be initialised or a primitive failed unexpectedly.
        case cryptoFailure = "crypto_failure"
        /// A key has the wrong length or is otherwise unusable (e.g. a low-order X25519 point).
        case invalidKey = "invalid_key"
        /// A signature did not verify.
        case invalidSignature = "invalid_signature"
        /// A peer id, did:key or public-key protobuf is malformed or of an unsupported type.
        case invalidPeerID = "invalid_peer_id"
        /// A key file is malformed (PEM armour, base64, PKCS#8 structure).
        case invalidKeyFile = "invalid_key_file"
        /// A key file is readable by group or others.
        case insecureKeyFile = "insecure_key_file"
        /// A file could not be read or written.
        case fileSystem = "file_system"
        /// The key file does not exist.
        case notFound = "not_found"
        /// The key file exists and overwriting it was not asked for.
        case alreadyExists = "already_exists"
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    init(wrapping error: MultiformatsError, kind: Kind, context: String) {
        self.init(kind, "\(context): \(error.message)")
    }

    public var description: String { message }
}
