import Identity

/// The Noise XX handshake (Noise spec rev. 34, §7.5) for `Noise_XX_25519_ChaChaPoly_SHA256`,
/// with raw payloads: the pure Noise layer under `NoiseHandshake`, which adds libp2p's payload.
///
/// ```
/// XX:
///   -> e
///   <- e, ee, s, es
///   -> s, se
/// ```
///
/// Messages are written and read strictly in turn; an out-of-turn call is a caller bug.
public struct NoiseHandshakeState: Sendable {
    public static let protocolName = "Noise_XX_25519_ChaChaPoly_SHA256"
    static let dhLength = 32

    public enum Role: Sendable { case initiator, responder }

    public let role: Role
    private var symmetric: NoiseSymmetricState
    private let localStatic: X25519.PrivateKey
    private let localEphemeral: X25519.PrivateKey
    private var remoteEphemeral: X25519.PublicKey?
    /// The peer's static key, known after message 2 (initiator) or 3 (responder).
    public private(set) var remoteStatic: X25519.PublicKey?
    /// How many of the three messages have been processed.
    public private(set) var messageIndex = 0

    /// - Parameters:
    ///   - ephemeral: injected only by tests (vectors); a fresh key otherwise.
    public init(
        role: Role, localStatic: X25519.PrivateKey, ephemeral: X25519.PrivateKey = .ephemeral(),
        prologue: [UInt8] = []
    ) {
        self.role = role
        self.localStatic = localStatic
        self.localEphemeral = ephemeral
        self.symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    /// Whether it is our turn to write.
    public var isOurTurn: Bool {
        switch role {
        case .initiator: messageIndex == 0 || messageIndex == 2
        case .responder: messageIndex == 1
        }
    }

    public var isComplete: Bool { messageIndex == 3 }

    /// `h`, the handshake hash: channel binding, equal on both sides after the handshake.
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    private func dh(_ local: X25519.PrivateKey, _ remote: X25519.PublicKey?) throws(SessionError) -> SecretBytes {
        guard let remote else { preconditionFailure("DH before the remote key is known") }
        do {
            return try local.sharedSecret(with: remote)
        } catch {
            throw SessionError(.handshakeFailed, "Noise DH failed: \(error.message)")
        }
    }

    private static func publicKey(_ bytes: [UInt8]) throws(SessionError) -> X25519.PublicKey {
        do {
            return try X25519.PublicKey(rawRepresentation: bytes)
        } catch {
            throw SessionError(.handshakeFailed, "Noise key: \(error.message)")
        }
    }

    /// Writes the next handshake message carrying `payload`.
    public mutating func writeMessage(payload: [UInt8]) throws(SessionError) -> [UInt8] {
        precondition(isOurTurn && !isComplete, "Noise writeMessage out of turn (message \(messageIndex), \(role))")
        var message: [UInt8] = []
        switch messageIndex {
        case 0:  // -> e
            message += localEphemeral.publicKey.rawRepresentation
            symmetric.mixHash(localEphemeral.publicKey.rawRepresentation)
        case 1:  // <- e, ee, s, es
            message += localEphemeral.publicKey.rawRepresentation
            symmetric.mixHash(localEphemeral.publicKey.rawRepresentation)
            symmetric.mixKey(try dh(localEphemeral, remoteEphemeral))
            message += try symmetric.encryptAndHash(localStatic.publicKey.rawRepresentation)
            symmetric.mixKey(try dh(localStatic, remoteEphemeral))
        default:  // -> s, se
            message += try symmetric.encryptAndHash(localStatic.publicKey.rawRepresentation)
            symmetric.mixKey(try dh(localStatic, remoteEphemeral))
        }
        message += try symmetric.encryptAndHash(payload)
        guard message.count <= NoiseCipherState.maximumMessageLength else {
            throw SessionError(.messageTooLarge, "Noise handshake message of \(message.count) bytes is over 65535")
        }
        messageIndex += 1
        return message
    }

    /// Reads the peer's next handshake message and returns its payload.
    /// - Throws: `.protocolViolation` for a message too short for its keys, `.decryptionFailed` when
    ///   an encrypted part does not authenticate, `.handshakeFailed` for a low-order key.
    public mutating func readMessage(_ message: [UInt8]) throws(SessionError) -> [UInt8] {
        precondition(!isOurTurn && !isComplete, "Noise readMessage out of turn (message \(messageIndex), \(role))")
        var rest = message[...]
        func take(_ count: Int, _ what: String) throws(SessionError) -> [UInt8] {
            guard rest.count >= count else {
                throw SessionError(.protocolViolation, "Noise message \(messageIndex + 1) is too short for its \(what)")
            }
            defer { rest = rest.dropFirst(count) }
            return Array(rest.prefix(count))
        }
        let encryptedKeyLength = Self.dhLength + NoiseCipherState.tagLength
        switch messageIndex {
        case 0:  // -> e
            let e = try take(Self.dhLength, "ephemeral key")
            remoteEphemeral = try Self.publicKey(e)
            symmetric.mixHash(e)
        case 1:  // <- e, ee, s, es
            let e = try take(Self.dhLength, "ephemeral key")
            remoteEphemeral = try Self.publicKey(e)
            symmetric.mixHash(e)
            symmetric.mixKey(try dh(localEphemeral, remoteEphemeral))
            let s = try symmetric.decryptAndHash(try take(encryptedKeyLength, "static key"))
            remoteStatic = try Self.publicKey(s)
            symmetric.mixKey(try dh(localEphemeral, remoteStatic))
        default:  // -> s, se
            let s = try symmetric.decryptAndHash(try take(encryptedKeyLength, "static key"))
            remoteStatic = try Self.publicKey(s)
            symmetric.mixKey(try dh(localEphemeral, remoteStatic))
        }
        let payload = try symmetric.decryptAndHash(Array(rest))
        messageIndex += 1
        return payload
    }

    /// `Split()` after the third message: (our sending cipher, our receiving cipher).
    public mutating func split() -> (send: NoiseCipherState, receive: NoiseCipherState) {
        precondition(isComplete, "Noise split before the handshake completed")
        let (initiatorToResponder, responderToInitiator) = symmetric.split()
        switch role {
        case .initiator: return (initiatorToResponder, responderToInitiator)
        case .responder: return (responderToInitiator, initiatorToResponder)
        }
    }
}
