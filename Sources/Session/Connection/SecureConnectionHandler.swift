import Identity
import Multiformats
import NIOCore

/// Upgrades a raw byte stream (a TCP connection) to an authenticated, encrypted libp2p connection,
/// as libp2p/specs `connections/README.md` describes: multistream-select `/noise`, the Noise XX
/// handshake, then multistream-select of the muxer inside the encrypted channel.
///
/// Thin NIO glue over two values without I/O: `ConnectionUpgrade` (the state machine of the upgrade;
/// this handler feeds it bytes and its deadline and performs its actions) and, once the muxer is
/// agreed, `SecureTransport` (the Noise transport phase). It fires
/// `SecureConnectionEvent.established` and from then on passes decrypted bytes up and encrypts what
/// is written down. Outbound plaintext is gathered until `flush` (as the written buffers, not
/// joined) and sealed in messages of up to 65519 bytes, so many small muxer frames cost one AEAD
/// call and a frame's payload is read once, by the cipher.
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
            expectedPeer: PeerID? = nil, muxers: [String] = ["/yamux/1.0.0"],
            handshakeTimeout: TimeAmount = .seconds(10),
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

    /// The upgrade until it ends, then the transport: one of the two at a time.
    private enum Phase {
        case upgrading(ConnectionUpgrade)
        case established(SecureTransport)
        case failed
    }

    private let configuration: Configuration
    private var phase: Phase
    private var started = false
    private var inbound = ByteBuffer()
    /// Bytes that arrived re-entrantly, during `channelRead` (see there).
    private var deferredInbound = ByteBuffer()
    private var isReading = false
    /// Messages passed up since the last read-complete: the read-complete goes up once per socket
    /// read loop (NIO reads up to `maxMessagesPerRead` times per readable event), so the handler
    /// above wakes its readers once per loop rather than once per read.
    private var readPending = false
    /// What was written since the last flush, as written: sealed at the flush without joining it
    /// first (a yamux header and the payload behind it arrive as two writes).
    private var pendingOutbound = CircularBuffer<ByteBuffer>(initialCapacity: 16)
    private var pendingOutboundBytes = 0
    private var pendingPromise: EventLoopPromise<Void>?
    private var timeout: Scheduled<Void>?
    /// Rekeys of our sending direction, and of the peer's, and whether both peers announced
    /// rekeying (read on the channel's event loop).
    public var rekeysSent: Int { transport?.rekeysSent ?? 0 }
    public var rekeysReceived: Int { transport?.rekeysReceived ?? 0 }
    public var rekeyAgreed: Bool { transport?.rekeyAgreed ?? false }

    private var transport: SecureTransport? {
        if case .established(let transport) = phase { return transport }
        return nil
    }

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.phase = .upgrading(ConnectionUpgrade(configuration: configuration))
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
        if case .upgrading(var upgrade) = phase {
            let actions = upgrade.connectionClosed()
            phase = .upgrading(upgrade)
            perform(actions, context: context)
        }
        pendingPromise?.fail(SessionError(.streamClosed, "connection closed"))
        pendingPromise = nil
        completeRead(context: context)
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !started, case .upgrading(var upgrade) = phase else { return }
        started = true
        let actions = upgrade.start(allocator: context.channel.allocator)
        phase = .upgrading(upgrade)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: configuration.handshakeTimeout) {
            let (handler, context) = loopBound.value
            guard case .upgrading(var upgrade) = handler.phase else { return }
            let actions = upgrade.deadlinePassed()
            handler.phase = .upgrading(upgrade)
            handler.perform(actions, context: context)
        }
        perform(actions, context: context)
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
            deliver(&bytes, context: context)
            if bytes.readableBytes > 0 { inbound.writeBuffer(&bytes) }
            return
        }
        inbound.writeBuffer(&bytes)
        if case .upgrading(var upgrade) = phase {
            let actions = upgrade.receive(&inbound, now: .now(), allocator: context.channel.allocator)
            phase = .upgrading(upgrade)
            perform(actions, context: context)
        }
        if case .established = phase { deliver(&inbound, context: context) }
        inbound.discardReadBytes()
    }

    /// Carries out the upgrade's actions: writes (flushed once), then the outcome.
    private func perform(_ actions: [ConnectionUpgrade.Action], context: ChannelHandlerContext) {
        var wrote = false
        for action in actions {
            switch action {
            case .send(let bytes):
                context.write(wrapOutboundOut(bytes), promise: nil)
                wrote = true
            case .established(let established, let transport, let leftover):
                if wrote {
                    context.flush()
                    wrote = false
                }
                phase = .established(transport)
                timeout?.cancel()
                timeout = nil
                context.fireUserInboundEventTriggered(SecureConnectionEvent.established(established))
                if let leftover {
                    context.fireChannelRead(wrapInboundOut(leftover))
                    context.fireChannelReadComplete()
                }
            case .authenticated(let peer):
                phase = .failed
                timeout?.cancel()
                timeout = nil
                context.fireUserInboundEventTriggered(SecureConnectionEvent.authenticated(peer))
                context.close(promise: nil)
                return
            case .failed(let error):
                if wrote { context.flush() }
                fail(error, context: context)
                return
            }
        }
        if wrote { context.flush() }
    }

    /// Decrypts whole transport messages from `buffer` and passes them up.
    private func deliver(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        guard case .established(var transport) = phase else { return }
        while let message = SecureTransport.readFrame(&buffer) {
            let decrypted: ByteBuffer?
            do {
                decrypted = try transport.open(message, allocator: context.channel.allocator)
            } catch {
                phase = .established(transport)
                fail(error, context: context)
                return
            }
            guard let decrypted else { continue }
            // A handler above may write and flush (seal) from inside `fireChannelRead`, or close:
            // the transport goes back in place first and is taken again afterwards.
            phase = .established(transport)
            context.fireChannelRead(wrapInboundOut(decrypted))
            readPending = true
            guard case .established(let current) = phase else { return }
            transport = current
        }
        phase = .established(transport)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        completeRead(context: context)
    }

    /// Fires the read-complete owed for messages passed up, if any. Also before an error and before
    /// the channel goes inactive: what was delivered is completed even when a later message of the
    /// read fails.
    private func completeRead(context: ChannelHandlerContext) {
        guard readPending else { return }
        readPending = false
        context.fireChannelReadComplete()
    }

    /// One Noise message: `uint16 length ‖ body` (see `SecureTransport.readFrame`).
    static func readFrame(_ buffer: inout ByteBuffer) -> ByteBuffer? {
        SecureTransport.readFrame(&buffer)
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .established = phase else {
            promise?.fail(SessionError(.streamClosed, "write before the secure connection was established"))
            return
        }
        let bytes = unwrapOutboundIn(data)
        if bytes.readableBytes > 0 {
            pendingOutbound.append(bytes)
            pendingOutboundBytes += bytes.readableBytes
        }
        if let promise {
            if let pendingPromise { pendingPromise.futureResult.cascade(to: promise) } else { pendingPromise = promise }
        }
    }

    public func flush(context: ChannelHandlerContext) {
        guard case .established(var transport) = phase, pendingOutboundBytes > 0 || pendingPromise != nil else {
            context.flush()
            return
        }
        let byteCount = pendingOutboundBytes
        pendingOutboundBytes = 0
        let promise = pendingPromise
        pendingPromise = nil
        do {
            let sealed = try transport.seal(
                gathering: &pendingOutbound, byteCount: byteCount, now: .now(), allocator: context.channel.allocator)
            phase = .established(transport)
            context.writeAndFlush(wrapOutboundOut(sealed), promise: promise)
        } catch {
            promise?.fail(error)
            fail(error, context: context)
        }
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        if case .failed = phase { return }
        phase = .failed
        timeout?.cancel()
        timeout = nil
        pendingPromise?.fail(error)
        pendingPromise = nil
        completeRead(context: context)
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
