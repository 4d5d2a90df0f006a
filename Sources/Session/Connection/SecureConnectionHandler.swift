import Identity
import Multiformats
import NIOCore

/// Upgrades a raw byte stream (a TCP connection) to an authenticated, encrypted libp2p connection,
/// as libp2p/specs `connections/README.md` describes: multistream-select `/noise`, the Noise XX
/// handshake, then multistream-select of the muxer inside the encrypted channel.
///
/// Thin NIO glue over `MultistreamNegotiation`, `NoiseHandshake` and `NoiseCipherState`. Once the
/// muxer is agreed it fires `SecureConnectionEvent.established` and from then on passes decrypted
/// bytes up and encrypts what is written down. Outbound plaintext is gathered until `flush` and
/// sealed in messages of up to 65519 bytes, so many small muxer frames cost one AEAD call.
///
/// Both peers list their muxers in the handshake payload; when both do, the first of the
/// initiator's that the responder supports is taken without multistream-select (libp2p/specs
/// `connections/inlined-muxer-negotiation.md`), a round trip saved. A peer that lists none (py-libp2p)
/// gets multistream-select. Rekeying (`NoiseRekeyPolicy`) runs only when both peers announce it.
///
/// Any failure (a peer that breaks a protocol, a bad signature, the wrong peer, a handshake that
/// outlives its deadline) closes the channel after firing the `SessionError`.
public final class SecureConnectionHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public struct Configuration: Sendable {
        public var role: NoiseHandshakeState.Role
        public var identity: Ed25519.PrivateKey
        public var staticKey: X25519.PrivateKey
        /// The peer being dialled (initiator only); another authenticated peer aborts.
        public var expectedPeer: PeerID?
        /// Muxers in order of preference.
        public var muxers: [String]
        /// The whole upgrade must finish within this time.
        public var handshakeTimeout: TimeAmount
        /// List `muxers` in the handshake payload (early muxer negotiation). Default true.
        public var announceMuxers: Bool
        /// Our rekeying, announced in the handshake; `nil` announces nothing and never rekeys.
        public var rekey: NoiseRekeyPolicy?
        /// `NoiseHandshake.staticKeySignature(identity:staticKey:)`, made once per static key;
        /// `nil` signs in every handshake.
        public var staticKeySignature: [UInt8]?
        /// Initiator only: stop once the responder has authenticated (Noise message 2, checked
        /// against `expectedPeer`), fire `.authenticated` and close, without sending message 3.
        /// The responder never completes the handshake, so the probe leaves no connection behind
        /// on either side: proof that the peer is reachable at the address dialled (the DHT's
        /// dial-back, spec/dht.md §4).
        public var authenticateOnly = false

        public init(
            role: NoiseHandshakeState.Role, identity: Ed25519.PrivateKey, staticKey: X25519.PrivateKey,
            expectedPeer: PeerID? = nil, muxers: [String] = ["/yamux/1.0.0"], handshakeTimeout: TimeAmount = .seconds(10),
            announceMuxers: Bool = true, rekey: NoiseRekeyPolicy? = NoiseRekeyPolicy(),
            staticKeySignature: [UInt8]? = nil
        ) {
            self.role = role
            self.identity = identity
            self.staticKey = staticKey
            self.expectedPeer = expectedPeer
            self.muxers = muxers
            self.handshakeTimeout = handshakeTimeout
            self.announceMuxers = announceMuxers
            self.rekey = rekey
            self.staticKeySignature = staticKeySignature
        }
    }

    /// Security protocol id (libp2p/specs `noise/README.md`).
    public static let noiseProtocolID = "/noise"

    private enum Phase {
        case idle
        case securityNegotiation(MultistreamNegotiation)
        case handshake(NoiseHandshake)
        case muxerNegotiation(MultistreamNegotiation)
        case established
        case failed
    }

    private let configuration: Configuration
    private var phase = Phase.idle
    private var inbound = ByteBuffer()
    /// Bytes that arrived re-entrantly, during `channelRead` (see there).
    private var deferredInbound = ByteBuffer()
    private var isReading = false
    private var plaintext = ByteBuffer()
    private var send: NoiseCipherState?
    private var receive: NoiseCipherState?
    private var pendingOutbound: ByteBuffer?
    private var pendingPromise: EventLoopPromise<Void>?
    private var timeout: Scheduled<Void>?
    private var result: SecureConnectionEvent.Established?
    /// The initiator's handshake, message 1 already sent with the `/noise` proposal.
    private var earlyHandshake: NoiseHandshake?
    /// Both peers announced rekeying: empty transport messages are rekey signals.
    public private(set) var rekeyAgreed = false
    private var sentSinceRekey = 0
    private var lastRekey = NIODeadline.uptimeNanoseconds(0)
    /// Rekeys of our sending direction, and of the peer's (read on the channel's event loop).
    public private(set) var rekeysSent = 0
    public private(set) var rekeysReceived = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    // MARK: Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        inbound = context.channel.allocator.buffer(capacity: 0)
        if context.channel.isActive { start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        pendingPromise?.fail(SessionError(.streamClosed, "connection handler removed"))
        pendingPromise = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if case .established = phase {} else if case .failed = phase {} else {
            phase = .failed
            context.fireErrorCaught(SessionError(.protocolViolation, "connection closed during the upgrade"))
        }
        pendingPromise?.fail(SessionError(.streamClosed, "connection closed"))
        pendingPromise = nil
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = phase else { return }
        var negotiation =
            configuration.role == .initiator
            ? MultistreamNegotiation(dialerProposing: [Self.noiseProtocolID])
            : MultistreamNegotiation(listenerSupporting: [Self.noiseProtocolID])
        let actions = negotiation.start(allocator: context.channel.allocator)
        phase = .securityNegotiation(negotiation)
        if configuration.role == .initiator {
            // `/noise` is our only proposal, so Noise message 1 rides with it (multistream-select's
            // lazy dialer, as go-libp2p does): a round trip saved. The listener reads the
            // proposal's exact length and finds message 1 behind it; one that refuses answers `na`
            // and the upgrade fails either way.
            var handshake = makeHandshake()
            var out = context.channel.allocator.buffer(capacity: 128)
            for case .send(var bytes) in actions { out.writeBuffer(&bytes) }
            do {
                let message = try handshake.writeMessage()
                out.writeInteger(UInt16(message.count))
                out.writeBytes(message)
            } catch {
                fail(error, context: context)
                return
            }
            earlyHandshake = handshake
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        } else {
            writeRaw(actions, context: context)
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let deadline = configuration.handshakeTimeout
        timeout = context.eventLoop.scheduleTask(in: deadline) {
            let (handler, context) = loopBound.value
            handler.fail(
                SessionError(.timeout, "connection upgrade did not finish within \(deadline.nanoseconds / 1_000_000) ms"),
                context: context)
        }
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if case .failed = phase { return }
        // A read can arrive while we are still delivering the previous one: a handler above writes
        // in response (a pong), the write fails (the peer reset), and NIO drains the socket inside
        // that call. Such bytes come after what is being processed, so they wait their turn; taking
        // them at once would decrypt a later message with the nonce of an earlier one.
        if isReading {
            deferredInbound.writeBuffer(&bytes)
            return
        }
        isReading = true
        defer { isReading = false }
        receive(&bytes, context: context)
        while deferredInbound.readableBytes > 0 {
            if case .failed = phase { return }
            var more = deferredInbound
            deferredInbound = context.channel.allocator.buffer(capacity: 0)
            receive(&more, context: context)
        }
    }

    private func receive(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        if case .established = phase, inbound.readableBytes == 0 {
            // Fast path: decrypt whole messages straight from the read buffer.
            process(&bytes, context: context)
            if bytes.readableBytes > 0 { inbound.writeBuffer(&bytes) }
            return
        }
        inbound.writeBuffer(&bytes)
        process(&inbound, context: context)
        inbound.discardReadBytes()
    }

    private func process(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        do {
            try drive(&buffer, context: context)
        } catch {
            fail(error, context: context)
        }
    }

    private func drive(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) throws(SessionError) {
        while true {
            switch phase {
            case .idle, .failed:
                return
            case .securityNegotiation(var negotiation):
                let actions = try negotiation.receive(&buffer)
                phase = .securityNegotiation(negotiation)
                writeRaw(actions, context: context)
                guard negotiation.negotiatedProtocol != nil else { return }
                if let handshake = earlyHandshake {
                    earlyHandshake = nil
                    phase = .handshake(handshake)
                    continue
                }
                var handshake = makeHandshake()
                if handshake.isOurTurn {
                    writeHandshakeMessage(try handshake.writeMessage(), context: context)
                }
                phase = .handshake(handshake)
            case .handshake(var handshake):
                guard let message = try Self.readFrame(&buffer) else { return }
                try handshake.readMessage(Array(message.readableBytesView))
                if configuration.authenticateOnly, configuration.role == .initiator, let peer = configuration.expectedPeer,
                    handshake.isOurTurn, !handshake.isComplete
                {
                    // Message 2 decrypted (the responder holds its static key) and its payload
                    // signed by `peer`'s identity key: authenticated. Message 3 is never sent.
                    phase = .failed
                    timeout?.cancel()
                    timeout = nil
                    context.fireUserInboundEventTriggered(SecureConnectionEvent.authenticated(peer))
                    context.close(promise: nil)
                    return
                }
                if handshake.isOurTurn && !handshake.isComplete {
                    writeHandshakeMessage(try handshake.writeMessage(), context: context)
                }
                guard handshake.isComplete else {
                    phase = .handshake(handshake)
                    continue
                }
                let outcome = handshake.finish()
                send = outcome.send
                receive = outcome.receive
                rekeyAgreed = configuration.rekey != nil && (outcome.remoteRekeyVersion ?? 0) >= NoiseRekeyPolicy.version
                lastRekey = .now()
                result = SecureConnectionEvent.Established(
                    remotePeer: outcome.remotePeer, remoteIdentity: outcome.remoteIdentity, muxer: "")
                if let muxer = try earlyMuxer(announcedByPeer: outcome.remoteMuxers) {
                    establish(muxer: muxer, context: context)
                    continue
                }
                var negotiation =
                    configuration.role == .initiator
                    ? MultistreamNegotiation(dialerProposing: configuration.muxers)
                    : MultistreamNegotiation(listenerSupporting: configuration.muxers)
                phase = .muxerNegotiation(negotiation)
                try writeEncrypted(negotiation.start(allocator: context.channel.allocator), context: context)
                phase = .muxerNegotiation(negotiation)
            case .muxerNegotiation(var negotiation):
                guard let message = try Self.readFrame(&buffer) else { return }
                guard var decrypted = try decrypt(message, context: context) else { continue }
                plaintext.writeBuffer(&decrypted)
                let actions = try negotiation.receive(&plaintext)
                phase = .muxerNegotiation(negotiation)
                try writeEncrypted(actions, context: context)
                guard let muxer = negotiation.negotiatedProtocol else { continue }
                establish(muxer: muxer, context: context)
            case .established:
                var delivered = false
                // What was delivered is completed even when a later message of the read fails.
                defer { if delivered { context.fireChannelReadComplete() } }
                while let message = try Self.readFrame(&buffer) {
                    guard let decrypted = try decrypt(message, context: context) else { continue }
                    context.fireChannelRead(wrapInboundOut(decrypted))
                    delivered = true
                }
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

    private func establish(muxer: String, context: ChannelHandlerContext) {
        phase = .established
        timeout?.cancel()
        timeout = nil
        let established = SecureConnectionEvent.Established(
            remotePeer: result!.remotePeer, remoteIdentity: result!.remoteIdentity, muxer: muxer)
        context.fireUserInboundEventTriggered(SecureConnectionEvent.established(established))
        if plaintext.readableBytes > 0 {
            let leftover = plaintext
            plaintext = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(leftover))
            context.fireChannelReadComplete()
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // Reads are forwarded as they are decrypted; read-complete is fired with them.
    }

    /// One Noise message: `uint16 length ‖ body`. A 2-byte length can never exceed 65535, the Noise
    /// limit, so the buffered amount per message is bounded by construction.
    static func readFrame(_ buffer: inout ByteBuffer) throws(SessionError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard buffer.readableBytes >= 2 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        return buffer.readSlice(length: Int(length))
    }

    /// Opens one transport message. With rekeying agreed an empty message is the peer's rekey
    /// signal: our receiving key follows and `nil` is returned; without, an empty message carries
    /// nothing and `nil` is returned too.
    private func decrypt(_ message: ByteBuffer, context: ChannelHandlerContext) throws(SessionError) -> ByteBuffer? {
        guard var cipher = receive else { preconditionFailure("decrypt before the handshake") }
        defer { receive = cipher }
        let opened = try cipher.openFrame(message, allocator: context.channel.allocator)
        guard opened.readableBytes == 0 else { return opened }
        if rekeyAgreed {
            cipher.rekey()
            rekeysReceived += 1
        }
        return nil
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .established = phase else {
            promise?.fail(SessionError(.streamClosed, "write before the secure connection was established"))
            return
        }
        var bytes = unwrapOutboundIn(data)
        if pendingOutbound == nil {
            pendingOutbound = bytes
        } else {
            pendingOutbound!.writeBuffer(&bytes)
        }
        if let promise {
            if let pendingPromise { pendingPromise.futureResult.cascade(to: promise) } else { pendingPromise = promise }
        }
    }

    public func flush(context: ChannelHandlerContext) {
        guard case .established = phase, var pending = pendingOutbound else {
            context.flush()
            return
        }
        pendingOutbound = nil
        let promise = pendingPromise
        pendingPromise = nil
        do {
            let sealed = try seal(&pending, context: context)
            context.writeAndFlush(wrapOutboundOut(sealed), promise: promise)
        } catch {
            promise?.fail(error)
            fail(error, context: context)
        }
    }

    private func seal(_ pending: inout ByteBuffer, context: ChannelHandlerContext) throws(SessionError) -> ByteBuffer {
        guard var cipher = send else { preconditionFailure("encrypt before the handshake") }
        defer { send = cipher }
        let messages = (pending.readableBytes + NoiseCipherState.maximumPlaintextLength - 1) / NoiseCipherState.maximumPlaintextLength
        var output = context.channel.allocator.buffer(
            capacity: pending.readableBytes + messages * (2 + NoiseCipherState.tagLength))
        var now: NIODeadline?
        while pending.readableBytes > 0 {
            if rekeyAgreed, let policy = configuration.rekey {
                if now == nil { now = .now() }
                if sentSinceRekey >= policy.messages || (sentSinceRekey > 0 && now! - lastRekey >= policy.interval) {
                    // The signal goes under the old key; everything after it under the new one.
                    try cipher.sealFrame(ByteBuffer(), into: &output)
                    cipher.rekey()
                    sentSinceRekey = 0
                    lastRekey = now!
                    rekeysSent += 1
                }
            }
            let chunk = pending.readSlice(length: min(pending.readableBytes, NoiseCipherState.maximumPlaintextLength))!
            try cipher.sealFrame(chunk, into: &output)
            sentSinceRekey += 1
        }
        return output
    }

    private func writeRaw(_ actions: [MultistreamNegotiation.Action], context: ChannelHandlerContext) {
        var wrote = false
        for case .send(let bytes) in actions {
            context.write(wrapOutboundOut(bytes), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
    }

    private func writeHandshakeMessage(_ message: [UInt8], context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: message.count + 2)
        buffer.writeInteger(UInt16(message.count))
        buffer.writeBytes(message)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func writeEncrypted(_ actions: [MultistreamNegotiation.Action], context: ChannelHandlerContext) throws(SessionError) {
        var plain = context.channel.allocator.buffer(capacity: 64)
        for case .send(var bytes) in actions { plain.writeBuffer(&bytes) }
        guard plain.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(try seal(&plain, context: context)), promise: nil)
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        if case .failed = phase { return }
        phase = .failed
        timeout?.cancel()
        timeout = nil
        pendingPromise?.fail(error)
        pendingPromise = nil
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}

/// Events `SecureConnectionHandler` fires up the pipeline.
public enum SecureConnectionEvent: Sendable {
    public struct Established: Sendable {
        /// The authenticated peer.
        public let remotePeer: PeerID
        public let remoteIdentity: Ed25519.PublicKey
        /// The agreed muxer protocol id.
        public let muxer: String
    }

    /// The connection is authenticated and encrypted, and the muxer agreed.
    case established(Established)
    /// `Configuration.authenticateOnly`: the responder proved to be this peer; the connection is
    /// closing.
    case authenticated(PeerID)
}
