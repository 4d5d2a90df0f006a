import Foundation
import Identity
import SwiftProtobuf

/// The libp2p Noise handshake (libp2p/specs `noise/README.md`): Noise XX whose second and third
/// messages carry a `NoiseHandshakePayload` that binds the Noise static key to the peer's libp2p
/// identity key:
///
/// - `identity_key`: the libp2p `PublicKey` protobuf of the identity key;
/// - `identity_sig`: its signature over `"noise-libp2p-static-key:" ‖ Noise static public key`;
/// - `extensions.stream_muxers`: muxers for early negotiation (we announce, and read, but still
///   negotiate yamux with multistream-select, as py-libp2p does);
/// - `extensions.agentd_rekey` (field 8475, ours, spec/session.md §3.1): the rekey scheme we
///   follow; rekeying happens only when both sides announce it.
///
/// The first message carries an empty payload. After message 2 the initiator knows, and checks,
/// the responder's identity (and the peer id it dialled); after message 3 the responder knows the
/// initiator's.
public struct NoiseHandshake: Sendable {
    /// The signature prefix fixed by the spec.
    public static let signaturePrefix = Array("noise-libp2p-static-key:".utf8)
    /// Largest payload we decode: an Ed25519 payload is about 110 bytes; RSA keys reach ~1.2 KB.
    public static let maximumPayloadLength = 4096

    /// The authenticated outcome of a completed handshake.
    public struct Result: Sendable {
        public var send: NoiseCipherState
        public var receive: NoiseCipherState
        public let remotePeer: PeerID
        public let remoteIdentity: Ed25519.PublicKey
        public let remoteMuxers: [String]
        /// The rekey scheme the peer announced (`agentd_rekey`), if any.
        public let remoteRekeyVersion: UInt32?
        public let handshakeHash: [UInt8]
    }

    private var state: NoiseHandshakeState
    private let identity: Ed25519.PrivateKey
    private let localPayload: [UInt8]
    private let expectedPeer: PeerID?
    private var remote: RemoteIdentity?
    /// Set by the first error: a failed handshake stays failed, whatever the caller tries next.
    private var failure: SessionError?

    /// - Parameters:
    ///   - identity: our libp2p identity key.
    ///   - staticKey: our Noise static key (fresh per node start; any X25519 key).
    ///   - expectedPeer: for the initiator, the peer id being dialled (`/p2p/…`); a different
    ///     authenticated peer aborts the handshake.
    ///   - muxers: stream muxers announced in the payload extensions.
    ///   - rekeyVersion: the rekey scheme announced in the payload extensions; `nil` announces none.
    ///   - staticKeySignature: `staticKeySignature(identity:staticKey:)` made beforehand; without
    ///     it the handshake signs (an Ed25519 signature, a sixth of one side's crypto).
    ///   - ephemeral: injected only by tests.
    public init(
        role: NoiseHandshakeState.Role, identity: Ed25519.PrivateKey, staticKey: X25519.PrivateKey,
        expectedPeer: PeerID? = nil, muxers: [String] = [], rekeyVersion: UInt32? = nil,
        staticKeySignature: [UInt8]? = nil, ephemeral: X25519.PrivateKey = .ephemeral()
    ) {
        self.state = NoiseHandshakeState(role: role, localStatic: staticKey, ephemeral: ephemeral)
        self.identity = identity
        self.expectedPeer = expectedPeer
        var payload = Agentd_Noise_NoiseHandshakePayload()
        payload.identityKey = Data(LibP2PPublicKey(identity.publicKey).protobuf)
        payload.identitySig = Data(staticKeySignature ?? Self.staticKeySignature(identity: identity, staticKey: staticKey))
        if !muxers.isEmpty || rekeyVersion != nil {
            var extensions = Agentd_Noise_NoiseExtensions()
            extensions.streamMuxers = muxers
            if let rekeyVersion { extensions.agentdRekey = rekeyVersion }
            payload.extensions = extensions
        }
        self.localPayload = Array(try! payload.serializedBytes() as [UInt8])
    }

    /// The payload's `identity_sig`: the identity's signature over `"noise-libp2p-static-key:" ‖
    /// static public key`. The same for every handshake with one static key, so a host makes it
    /// once at start (Ed25519 signatures are deterministic: it is the very signature a handshake
    /// would make).
    public static func staticKeySignature(identity: Ed25519.PrivateKey, staticKey: X25519.PrivateKey) -> [UInt8] {
        identity.signature(for: signaturePrefix + staticKey.publicKey.rawRepresentation)
    }

    public var isOurTurn: Bool { state.isOurTurn }
    public var isComplete: Bool { failure == nil && state.isComplete }

    /// The next message to send (without the 2-byte length prefix).
    public mutating func writeMessage() throws(SessionError) -> [UInt8] {
        if let failure { throw failure }
        do {
            // XX: message 1 (index 0) has an empty payload; 2 and 3 carry ours.
            return try state.writeMessage(payload: state.messageIndex == 0 ? [] : localPayload)
        } catch {
            failure = error
            throw error
        }
    }

    /// Reads the peer's next message (without the length prefix), checking its payload.
    /// - Throws: `SessionError` — `.handshakeFailed` for a bad payload or signature,
    ///   `.peerIDMismatch` when the responder is not the peer that was dialled.
    public mutating func readMessage(_ message: [UInt8]) throws(SessionError) {
        if let failure { throw failure }
        do {
            try read(message)
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func read(_ message: [UInt8]) throws(SessionError) {
        let index = state.messageIndex
        let payload = try state.readMessage(message)
        if index == 0 {
            // libp2p: the first message's payload is empty; a non-empty one is tolerated and ignored
            // (it would be unauthenticated early data).
            return
        }
        guard let remoteStatic = state.remoteStatic else { preconditionFailure("no remote static key after message \(index + 1)") }
        remote = try Self.verify(payload: payload, remoteStatic: remoteStatic)
        if let expectedPeer, let remote, remote.peer != expectedPeer {
            throw SessionError(
                .peerIDMismatch,
                "dialled peer \(expectedPeer), but the remote authenticated as \(remote.peer)")
        }
    }

    /// The session keys and the authenticated peer, once the handshake is complete.
    public mutating func finish() -> Result {
        precondition(isComplete, "finish() before the Noise handshake completed")
        guard let remote else { preconditionFailure("handshake complete without a verified remote identity") }
        let hash = state.handshakeHash
        let (send, receive) = state.split()
        return Result(
            send: send, receive: receive, remotePeer: remote.peer, remoteIdentity: remote.identity,
            remoteMuxers: remote.muxers, remoteRekeyVersion: remote.rekeyVersion, handshakeHash: hash)
    }

    /// What a verified handshake payload tells about the peer.
    struct RemoteIdentity {
        let peer: PeerID
        let identity: Ed25519.PublicKey
        let muxers: [String]
        let rekeyVersion: UInt32?
    }

    static func verify(payload bytes: [UInt8], remoteStatic: X25519.PublicKey) throws(SessionError) -> RemoteIdentity {
        guard bytes.count <= maximumPayloadLength else {
            throw SessionError(.handshakeFailed, "Noise handshake payload of \(bytes.count) bytes is over the limit")
        }
        let payload: Agentd_Noise_NoiseHandshakePayload
        do {
            payload = try Agentd_Noise_NoiseHandshakePayload(serializedBytes: bytes)
        } catch {
            throw SessionError(.handshakeFailed, "Noise handshake payload is not a valid protobuf: \(error)")
        }
        guard payload.hasIdentityKey, payload.hasIdentitySig else {
            throw SessionError(.handshakeFailed, "Noise handshake payload lacks identity_key or identity_sig")
        }
        let key: LibP2PPublicKey
        let identity: Ed25519.PublicKey
        do {
            key = try LibP2PPublicKey(protobuf: Array(payload.identityKey))
            identity = try key.ed25519()
        } catch {
            throw SessionError(.handshakeFailed, "Noise handshake identity key: \(error.message)")
        }
        let peer = PeerID(publicKey: key)
        guard identity.isValidSignature(Array(payload.identitySig), for: signaturePrefix + remoteStatic.rawRepresentation) else {
            throw SessionError(
                .handshakeFailed,
                "peer \(peer) did not sign its Noise static key: the static key is not bound to that identity")
        }
        let extensions = payload.extensions
        return RemoteIdentity(
            peer: peer, identity: identity, muxers: extensions.streamMuxers,
            rekeyVersion: extensions.hasAgentdRekey ? extensions.agentdRekey : nil)
    }
}
