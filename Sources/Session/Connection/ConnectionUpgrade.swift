import Identity
import Multiformats
import NIOCore

/// The connection upgrade as a pure state machine: multistream-select `/noise`, the Noise XX
/// handshake, then the muxer (from the handshake payloads, else multistream-select inside the
/// encrypted channel), as libp2p/specs `connections/README.md` describes.
///
/// No channel, no clock, no timers: bytes and the deadline come in (`receive`, `deadlinePassed`,
/// `connectionClosed`), actions come out (bytes to send, established, authenticated, failed). The
/// caller arms one timer for `Configuration.handshakeTimeout` when it calls `start` and reports it
/// with `deadlinePassed()`. `SecureConnectionHandler` is the NIO glue; tests drive two of these
/// against each other in memory.
///
/// After `.established` the upgrade is over: the caller owns the `SecureTransport` it carries and
/// feeds it the rest of the input (`receive` stops consuming at establishment).
public struct ConnectionUpgrade: Sendable {
    public typealias Configuration = SecureConnectionHandler.Configuration

    /// What the state machine asks its caller to do, in order.
    public enum Action: Sendable {
        /// Write these bytes to the peer (and flush).
        case send(ByteBuffer)
        /// Authenticated, encrypted, muxer agreed. `leftover` is plaintext that arrived behind the
        /// muxer negotiation: it belongs to the muxer and is delivered before anything else.
        case established(SecureConnectionEvent.Established, SecureTransport, leftover: ByteBuffer?)
        /// `Configuration.authenticateOnly`: the responder proved to be the expected peer. Close.
        case authenticated(PeerID)
        /// The upgrade failed (a broken protocol, a bad signature, the wrong peer, the deadline, a
        /// closed connection). Close.
        case failed(SessionError)
    }

    private enum State: Sendable {
        case idle
        case securityNegotiation(MultistreamNegotiation, early: NoiseHandshake?)
        case handshake(NoiseHandshake)
        case muxerNegotiation(MultistreamNegotiation, SecureTransport, SecureConnectionEvent.Established, plaintext: ByteBuffer)
        case established
        case failed
    }

    public let configuration: Configuration
    private var state = State.idle

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Whether the upgrade is over (established, authenticated or failed).
    public var isFinished: Bool {
        switch state {
        case .established, .failed: return true
        default: return false
        }
    }

    /// The bytes to send when the connection is up. The initiator sends its `/noise` proposal with
    /// Noise message 1 behind it (multistream-select's lazy dialer, as go-libp2p does: a round trip
    /// saved; a listener that refuses answers `na` and the upgrade fails either way).
    public mutating func start(allocator: ByteBufferAllocator) -> [Action] {
        guard case .idle = state else { return [] }
        let initiator = configuration.role == .initiator
        var negotiation =
            initiator
            ? MultistreamNegotiation(dialerProposing: [SecureConnectionHandler.noiseProtocolID])
            : MultistreamNegotiation(listenerSupporting: [SecureConnectionHandler.noiseProtocolID])
        let actions = negotiation.start(allocator: allocator)
        guard initiator else {
            state = .securityNegotiation(negotiation, early: nil)
            return actions.compactMap { if case .send(let bytes) = $0 { .send(bytes) } else { nil } }
        }
        var handshake = makeHandshake()
        var out = allocator.buffer(capacity: 128)
        for case .send(var bytes) in actions { out.writeBuffer(&bytes) }
        do {
            let message = try handshake.writeMessage()
            out.writeInteger(UInt16(message.count))
            out.writeBytes(message)
        } catch {
            return fail(error)
        }
        state = .securityNegotiation(negotiation, early: handshake)
        return [.send(out)]
    }

    /// Consumes input from `buffer` up to the establishment of the connection and returns what to
    /// do. Bytes behind the establishment stay in `buffer`: they are transport messages for the
    /// `SecureTransport` of `.established`.
    /// - Parameter now: when these bytes arrived (the rekey interval counts from establishment).
    public mutating func receive(_ buffer: inout ByteBuffer, now: NIODeadline, allocator: ByteBufferAllocator) -> [Action] {
        var actions: [Action] = []
        do {
            try drive(&buffer, now: now, allocator: allocator, into: &actions)
        } catch {
            actions += fail(error)
        }
        return actions
    }

    /// The caller's timer for `configuration.handshakeTimeout` fired.
    public mutating func deadlinePassed() -> [Action] {
        guard !isFinished else { return [] }
        let deadline = configuration.handshakeTimeout
        return fail(SessionError(.timeout, "connection upgrade did not finish within \(deadline.nanoseconds / 1_000_000) ms"))
    }

    /// The underlying connection closed.
    public mutating func connectionClosed() -> [Action] {
        guard !isFinished else { return [] }
        return fail(SessionError(.protocolViolation, "connection closed during the upgrade"))
    }

    // MARK: Driving

    private mutating func drive(
        _ buffer: inout ByteBuffer, now: NIODeadline, allocator: ByteBufferAllocator, into actions: inout [Action]
    ) throws(SessionError) {
        while true {
            switch state {
            case .idle, .established, .failed:
                return
            case .securityNegotiation(var negotiation, let early):
                let result = try negotiation.receive(&buffer)
                state = .securityNegotiation(negotiation, early: early)
                Self.appendSends(result, to: &actions)
                guard negotiation.negotiatedProtocol != nil else { return }
                if let early {
                    state = .handshake(early)
                    continue
                }
                var handshake = makeHandshake()
                if handshake.isOurTurn {
                    actions.append(.send(Self.handshakeFrame(try handshake.writeMessage(), allocator: allocator)))
                }
                state = .handshake(handshake)
            case .handshake(var handshake):
                guard let message = SecureTransport.readFrame(&buffer) else { return }
                try handshake.readMessage(Array(message.readableBytesView))
                if configuration.authenticateOnly, configuration.role == .initiator, let peer = configuration.expectedPeer,
                    handshake.isOurTurn, !handshake.isComplete
                {
                    // Message 2 decrypted (the responder holds its static key) and its payload
                    // signed by `peer`'s identity key: authenticated. Message 3 is never sent.
                    state = .failed
                    actions.append(.authenticated(peer))
                    return
                }
                if handshake.isOurTurn && !handshake.isComplete {
                    actions.append(.send(Self.handshakeFrame(try handshake.writeMessage(), allocator: allocator)))
                }
                guard handshake.isComplete else {
                    state = .handshake(handshake)
                    continue
                }
                let outcome = handshake.finish()
                let rekeyAgreed = configuration.rekey != nil && (outcome.remoteRekeyVersion ?? 0) >= NoiseRekeyPolicy.version
                var transport = SecureTransport(
                    send: outcome.send, receive: outcome.receive, rekeyPolicy: rekeyAgreed ? configuration.rekey : nil,
                    now: now)
                let authenticated = SecureConnectionEvent.Established(
                    remotePeer: outcome.remotePeer, remoteIdentity: outcome.remoteIdentity, muxer: "")
                if let muxer = try earlyMuxer(announcedByPeer: outcome.remoteMuxers) {
                    state = .established
                    actions.append(.established(authenticated.with(muxer: muxer), transport, leftover: nil))
                    return
                }
                var negotiation =
                    configuration.role == .initiator
                    ? MultistreamNegotiation(dialerProposing: configuration.muxers)
                    : MultistreamNegotiation(listenerSupporting: configuration.muxers)
                if let sealed = try Self.seal(negotiation.start(allocator: allocator), with: &transport, now: now, allocator: allocator) {
                    actions.append(.send(sealed))
                }
                state = .muxerNegotiation(negotiation, transport, authenticated, plaintext: allocator.buffer(capacity: 0))
            case .muxerNegotiation(var negotiation, var transport, let authenticated, var plaintext):
                guard let message = SecureTransport.readFrame(&buffer) else { return }
                guard var decrypted = try transport.open(message, allocator: allocator) else {
                    state = .muxerNegotiation(negotiation, transport, authenticated, plaintext: plaintext)
                    continue
                }
                plaintext.writeBuffer(&decrypted)
                let result = try negotiation.receive(&plaintext)
                if let sealed = try Self.seal(result, with: &transport, now: now, allocator: allocator) {
                    actions.append(.send(sealed))
                }
                guard let muxer = negotiation.negotiatedProtocol else {
                    state = .muxerNegotiation(negotiation, transport, authenticated, plaintext: plaintext)
                    continue
                }
                state = .established
                actions.append(
                    .established(
                        authenticated.with(muxer: muxer), transport,
                        leftover: plaintext.readableBytes > 0 ? plaintext : nil))
                return
            }
        }
    }

    private func makeHandshake() -> NoiseHandshake {
        NoiseHandshake(
            role: configuration.role, identity: configuration.identity, staticKey: configuration.staticKey,
            expectedPeer: configuration.expectedPeer, muxers: configuration.announceMuxers ? configuration.muxers : [],
            rekeyVersion: configuration.rekey == nil ? nil : NoiseRekeyPolicy.version,
            staticKeySignature: configuration.staticKeySignature)
    }

    /// The muxer both listed in the handshake: the first of the initiator's list that the responder
    /// supports. `nil` when either side listed none (multistream-select decides then).
    /// - Throws: `.negotiationFailed` when both listed muxers and none is common (the spec's MUST).
    private func earlyMuxer(announcedByPeer remote: [String]) throws(SessionError) -> String? {
        guard configuration.announceMuxers, !configuration.muxers.isEmpty, !remote.isEmpty else { return nil }
        let (initiator, responder) =
            configuration.role == .initiator ? (configuration.muxers, remote) : (remote, configuration.muxers)
        guard let chosen = initiator.first(where: responder.contains) else {
            throw SessionError(
                .negotiationFailed,
                "no common muxer: we support \(configuration.muxers.joined(separator: ", ")), the peer announced "
                    + remote.prefix(8).map { $0.escapedForLog(maximumLength: 64) }.joined(separator: ", "))
        }
        return chosen
    }

    private mutating func fail(_ error: Error) -> [Action] {
        guard !isFinished else { return [] }
        state = .failed
        let failure =
            (error as? SessionError) ?? SessionError(.protocolViolation, "connection upgrade failed: \(error)")
        return [.failed(failure)]
    }

    private static func appendSends(_ result: [MultistreamNegotiation.Action], to actions: inout [Action]) {
        for case .send(let bytes) in result { actions.append(.send(bytes)) }
    }

    private static func handshakeFrame(_ message: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: message.count + 2)
        buffer.writeInteger(UInt16(message.count))
        buffer.writeBytes(message)
        return buffer
    }

    /// Seals the bytes of negotiation `.send` actions into one write, or `nil` when there are none.
    private static func seal(
        _ result: [MultistreamNegotiation.Action], with transport: inout SecureTransport, now: NIODeadline,
        allocator: ByteBufferAllocator
    ) throws(SessionError) -> ByteBuffer? {
        var plain = allocator.buffer(capacity: 64)
        for case .send(var bytes) in result { plain.writeBuffer(&bytes) }
        guard plain.readableBytes > 0 else { return nil }
        return try transport.seal(&plain, now: now, allocator: allocator)
    }
}

extension SecureConnectionEvent.Established {
    func with(muxer: String) -> Self {
        Self(remotePeer: remotePeer, remoteIdentity: remoteIdentity, muxer: muxer)
    }
}
