import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Session

/// Which side opened a connection.
public enum ConnectionDirection: String, Sendable {
    case inbound
    case outbound
}

/// A snapshot of a connection, for `agentctl peers` and tests.
public struct ConnectionInfo: Sendable {
    public let id: Int
    public let remotePeer: PeerID
    public let remoteAddress: Multiaddr?
    public let direction: ConnectionDirection
    /// Direct, or through a relay.
    public let path: ConnectionPath
    public let streams: Int
    /// Smoothed RTT from yamux pings, once measured.
    public let latency: TimeAmount?
}

/// One upgraded libp2p connection: the yamux session over a `SecureConnectionHandler`, as the
/// pipeline handler that performs the session's actions, plus the streams' application-facing state.
///
/// Its life cycle is one `State` (detached → handshaking → established → closing → closed), changed
/// only by the transitions under "Transitions"; the yamux session exists only inside `.established`.
///
/// `@unchecked Sendable`: every mutable stored property is read and written only on `eventLoop`
/// (the handler callbacks run there, and every method that touches state asserts it or hops there
/// first), except those in lock boxes (`remote`, `closingFlag`), which any thread may read. The
/// `let`s are immutable after `init`.
public final class Connection: ChannelDuplexHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = Never
    public typealias OutboundOut = ByteBuffer

    /// Largest yamux frame payload accepted: py-libp2p and go send at most 64 KiB frames.
    static let maximumInboundFramePayload = 1 << 20
    /// Most bytes one `read()` returns when several frames are queued.
    static let maximumReadBatch = 1024 * 1024
    /// Bytes of frames pulled from the session per pump before checking socket writability.
    static let pumpBudget = 1024 * 1024
    /// The wire size of the largest frame we send (header + one Noise message of payload).
    static let largestFrame = 65519

    /// The life cycle. Each case holds what exists in it and nothing else.
    private enum State {
        /// Not in a pipeline yet. `closeRequested`: `close()` came first; the channel is closed as
        /// soon as the handler is added.
        case detached(closeRequested: Bool)
        /// In the pipeline; the security handler below runs the upgrade (multistream, Noise, muxer).
        case handshaking(ChannelHandlerContext)
        /// Upgraded: the yamux session runs.
        case established(Established)
        /// Closing asked of the channel (after a last GoAway when it was established): nothing is
        /// read, opened or sent any more; the streams fail when the channel goes inactive.
        case closing(Closing)
        /// The channel went inactive: streams failed, memory given back, the host told.
        case closed
        /// Transient: `withEstablished` has moved the payload out to mutate it in place.
        case modifying
    }

    private struct Established {
        let context: ChannelHandlerContext
        var session: YamuxSession
        let peer: PeerID
        /// When the handshake completed.
        let establishedAt: NIODeadline
        /// Runs the session's timers and the idle and memory checks every second.
        let ticker: ConnectionTicker
        /// Past it without a completed identify, the connection is closed; nil once identify
        /// completed (or without an identify timeout).
        var identifyDeadline: Scheduled<Void>?
    }

    private struct Closing {
        let context: ChannelHandlerContext
        /// When it had been established, and with whom; nil when it closed during the handshake.
        let established: (peer: PeerID, at: NIODeadline)?
    }

    public let id: Int
    public let direction: ConnectionDirection
    /// Direct, or through a relay (then `remoteAddress` is the circuit address).
    public let path: ConnectionPath
    public let eventLoop: EventLoop
    var logger: Logger
    private let configuration: YamuxConfiguration
    let liveness: ConnectionLiveness
    /// Past this after establishment without a completed identify, the connection is closed.
    let identifyTimeout: TimeAmount?
    weak var host: HostCore?

    private var state = State.detached(closeRequested: false)
    /// The last frame on any stream, received or sent (or the establishment): idleness counts from
    /// it (`ConnectionLiveness`).
    private var lastStreamTraffic = NIODeadline.now()
    /// The incomplete tail of the last socket read (a frame split between reads).
    private var inbound = ByteBuffer()
    private(set) var streams: [YamuxStreamID: StreamState] = [:]
    /// A pump is queued on the event loop (see `pump`).
    private var pumpScheduled = false
    /// Streams the peer reset, most recent last (at most `resetMemory`): a read after the state
    /// is gone still reports the reset rather than a clean end.
    private var resetByPeer = Set<YamuxStreamID>()
    private var resetOrder = CircularBuffer<YamuxStreamID>()
    static let resetMemory = 1024
    /// Streams whose waiting reader gets what the current socket read delivers, at its end.
    private var readersToWake: [YamuxStreamID] = []
    /// Between a `channelRead` and its `channelReadComplete`: delivered bytes wait for the end of
    /// the socket read (several Noise messages) to wake their readers.
    private var receiving = false
    /// Closing or closed (or the peer sent GoAway), readable from any thread: the host's registry
    /// stops handing the connection out.
    let closingFlag = NIOLockedValueBox(false)

    /// Whether the connection is closing or closed, or the peer is going away.
    public var isClosing: Bool { closingFlag.withLockedValue { $0 } }
    /// Completed when the handshaking state is left: succeeded on establishment, failed otherwise.
    let established: EventLoopPromise<Connection>

    /// Who is at the other end and where: written on the event loop (the remote address when the
    /// handler is added, both at establishment), read from any thread (the host's registry, stream
    /// handlers), hence behind a lock of its own.
    let remote: NIOLockedValueBox<(peer: PeerID?, address: Multiaddr?)>

    /// The authenticated peer; nil until the handshake completes.
    public var remotePeer: PeerID? { remote.withLockedValue { $0.peer } }
    /// The remote address: the socket's (TCP) or the circuit address (relayed).
    public var remoteAddress: Multiaddr? { remote.withLockedValue { $0.address } }
    /// Completes when the connection is closed.
    public let closeFuture: EventLoopFuture<Void>
    let closePromise: EventLoopPromise<Void>
    /// An inbound connection's address scopes in the resource manager; set before the handshake
    /// starts, read by the host's registry afterwards.
    var addressKeys: ResourceManager.AddressKeys?
    /// Node memory reserved for this connection (see `reconcileMemory`).
    private var memory = ConnectionMemory()

    /// The QUIC connection this one runs over, if it does (spec/network.md, "QUIC"): then there is
    /// no pipeline and no yamux session (`state` stays `.detached`); streams are QUIC streams and
    /// the QUIC hooks below (`Connection+QUIC.swift`) run its life cycle.
    let quic: QUICConnectionCore?

    init(
        id: Int, direction: ConnectionDirection, transport: TransportChannelInfo, eventLoop: EventLoop, host: HostCore?,
        configuration: YamuxConfiguration, liveness: ConnectionLiveness, identifyTimeout: TimeAmount?, logger: Logger,
        quic: QUICConnectionCore? = nil
    ) {
        self.quic = quic
        self.id = id
        self.path = transport.path
        self.remote = NIOLockedValueBox((nil, transport.remoteAddress))
        self.liveness = liveness
        self.identifyTimeout = identifyTimeout
        self.direction = direction
        self.eventLoop = eventLoop
        self.host = host
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "conn"] = "\(id)"
        self.logger = logger
        self.established = eventLoop.makePromise()
        self.closePromise = eventLoop.makePromise()
        self.closeFuture = closePromise.futureResult
    }

    /// Completes with the connection once it is authenticated and the muxer runs, or fails.
    var establishedFuture: EventLoopFuture<Connection> { established.futureResult }

    // MARK: State access

    /// The pipeline context, from `handlerAdded` until the channel went inactive.
    private var context: ChannelHandlerContext? {
        switch state {
        case .handshaking(let context): context
        case .established(let established): established.context
        case .closing(let closing): closing.context
        case .detached, .closed: nil
        case .modifying: preconditionFailure("the connection's state was read while it is being modified")
        }
    }

    private var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    /// Runs `body` on the established state in place, or returns nil in any other state. The
    /// payload is moved out (`.modifying` holds its place) and stored back afterwards, so mutating
    /// the session does not copy its tables (copy-on-write would, per frame, if the enum still held
    /// a reference). `body` must not re-enter the connection: it calls the session (a pure state
    /// machine) and the resource manager, never the pipeline or a stream's user.
    @inline(__always)
    private func withEstablished<Result, Failure: Error>(
        _ body: (inout Established) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        guard case .established(var established) = state else { return nil }
        state = .modifying
        defer { state = .established(established) }
        return try body(&established)
    }

    /// `withEstablished` for the session alone.
    @inline(__always)
    private func withSession<Result, Failure: Error>(
        _ body: (inout YamuxSession) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        try withEstablished { (established: inout Established) throws(Failure) -> Result in
            try body(&established.session)
        }
    }

    // MARK: Transitions

    /// detached → handshaking (→ closing at once when `close()` came first).
    public func handlerAdded(context: ChannelHandlerContext) {
        guard case .detached(let closeRequested) = state else {
            preconditionFailure("a Connection is added to one pipeline, once")
        }
        inbound = context.channel.allocator.buffer(capacity: 0)
        if path == .direct, let socketAddress = context.channel.remoteAddress.flatMap(TCPAddress.multiaddr(of:)) {
            remote.withLockedValue { $0.address = socketAddress }
        }
        // Failures before the peer is authenticated can only name the address: log it.
        if let remoteAddress { logger[metadataKey: "remote"] = "\(remoteAddress)" }
        state = .handshaking(context)
        if closeRequested { close(error: nil, goAway: false) }
    }

    /// handshaking → established, when the security handler below reports the upgrade done.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .established(let info)? = event as? SecureConnectionEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // Closing already (asked during the handshake): the promise has failed; stay closing.
        guard case .handshaking = state else { return }
        remote.withLockedValue { $0.peer = info.remotePeer }
        let now = NIODeadline.now()
        lastStreamTraffic = now
        if path == .direct, let socketAddress = context.channel.remoteAddress.flatMap(TCPAddress.multiaddr(of:)) {
            remote.withLockedValue { $0.address = socketAddress }
        }
        logger.debug(
            "connection established",
            metadata: ["peer": "\(info.remotePeer)", "muxer": "\(info.muxer.escapedForLog())"])
        var session = YamuxSession(role: direction == .outbound ? .client : .server, configuration: configuration)
        reconcileMemory(&session)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let ticker = ConnectionTicker.on(context.eventLoop)
        ticker.add(self)
        let identifyDeadline = identifyTimeout.map { timeout in
            context.eventLoop.scheduleTask(in: timeout) { loopBound.value.identifyDeadlinePassed(timeout) }
        }
        state = .established(
            Established(
                context: context, session: session, peer: info.remotePeer, establishedAt: now, ticker: ticker,
                identifyDeadline: identifyDeadline))
        established.succeed(self)
        pump()
        // A first keepalive ping at once: its RTT lets receive-window auto-tuning work from the
        // first bulk transfer instead of after the first periodic ping.
        tick()
    }

    /// handshaking → closing (the promise fails with `error`, or a plain "closed"); established →
    /// closing after a GoAway (with `goAway`) and the session's last frames; otherwise nothing.
    private func close(error: Error?, goAway: Bool = true) {
        switch state {
        case .detached:
            closingFlag.withLockedValue { $0 = true }
            state = .detached(closeRequested: true)
        case .handshaking(let context):
            closingFlag.withLockedValue { $0 = true }
            state = .closing(Closing(context: context, established: nil))
            established.fail(error ?? NetworkError(.connectionClosed, "connection closed during the handshake"))
            context.close(promise: nil)
        case .established:
            closingFlag.withLockedValue { $0 = true }
            if goAway {
                withSession { $0.goAway(code: error == nil ? .normal : .protocolError) }
                pump(force: true)
            }
            // The last write can close the channel on the spot (then it is closed already).
            guard case .established(let established) = state else { return }
            established.ticker.remove(self)
            established.identifyDeadline?.cancel()
            state = .closing(
                Closing(context: established.context, established: (established.peer, established.establishedAt)))
            established.context.close(promise: nil)
        case .closing, .closed:
            return
        case .modifying:
            preconditionFailure("close re-entered while the connection's state is being modified")
        }
    }

    /// Any state → closed, when the channel goes inactive (once; a second call does nothing):
    /// streams fail with `error`, memory goes back to the node, the host forgets the connection.
    private func finish(error: Error) {
        switch state {
        case .closed:
            return
        case .modifying:
            preconditionFailure("the channel went inactive while the connection's state is being modified")
        case .detached, .handshaking:
            state = .closed
            established.fail(error)
        case .established(let established):
            established.ticker.remove(self)
            established.identifyDeadline?.cancel()
            state = .closed
        case .closing:
            state = .closed
        }
        closingFlag.withLockedValue { $0 = true }
        if memory.reserved > 0 {
            host?.resources.releaseMemory(memory.reserved)
            memory.reserved = 0
        }
        for id in Array(streams.keys) { fail(stream: id, with: error) }
        streams.removeAll()
        readersToWake.removeAll()
        host?.connectionClosed(self)
        closePromise.succeed(())
    }

    // MARK: Pipeline events

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard isEstablished else { return }
        receiving = true
        do {
            if inbound.readableBytes == 0 {
                // Fast path: frames are parsed straight from the decrypted message, and only an
                // incomplete tail is kept; their payloads stay views of it, with no copy.
                try receiveFrames(from: &bytes)
                if bytes.readableBytes > 0 { inbound.writeBuffer(&bytes) }
            } else {
                inbound.writeBuffer(&bytes)
                try receiveFrames(from: &inbound)
                inbound.discardReadBytes()
            }
        } catch {
            logger.warning("closing connection: \(error)", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
            close(error: error)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        receiving = false
        wakeReaders()
        context.fireChannelReadComplete()
    }

    /// Handles the whole frames in `buffer`, while established: a frame can end the connection (a
    /// write made in response fails and NIO closes the channel on the spot), and nothing after
    /// that is read.
    private func receiveFrames(from buffer: inout ByteBuffer) throws {
        while true {
            let step = try withEstablished { (established: inout Established) throws(SessionError) -> [YamuxAction]? in
                // Refuse a data frame from its header when it exceeds what the stream's window (or
                // a new stream's initial window) allows: never wait for, and buffer, such a payload.
                let window = established.session.receiveWindowLimit(forNextFrameIn: buffer)
                let limit = min(window ?? Self.maximumInboundFramePayload, Self.maximumInboundFramePayload)
                let next: YamuxFrame?
                do throws(SessionError) {
                    next = try buffer.readYamuxFrame(maximumPayload: limit)
                } catch {
                    guard window != nil, error.kind == .messageTooLarge else { throw error }
                    throw SessionError(
                        .flowControlViolation, "\(error.message), beyond what the stream's window allows")
                }
                guard let frame = next else { return nil }
                let now = NIODeadline.now()
                if frame.streamID != .session { lastStreamTraffic = now }
                // Room for what the frame may take (a new stream's window) before the session decides.
                if memory.needsReservation(inUse: established.session.memoryInUse) {
                    reconcileMemory(&established.session)
                }
                let refusedBefore = established.session.refusedForStreamLimit &+ established.session.refusedForMemory
                let actions = try established.session.receive(frame, now: now)
                if established.session.refusedForStreamLimit &+ established.session.refusedForMemory != refusedBefore {
                    reportRefusedStream(established.session, peer: established.peer)
                }
                return actions
            }
            guard let step, let actions = step else { return }
            perform(actions)
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump() }
        context.fireChannelWritabilityChanged()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.info("connection error: \(error)", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
        close(error: error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        finish(error: NetworkError(.connectionClosed, "connection to \(remotePeer?.description ?? "peer") closed"))
        context.fireChannelInactive()
    }

    /// The ticker's call, every second while established.
    func periodicTick() { tick() }

    private func tick() {
        guard let peer = establishedPeer else { return }
        let now = NIODeadline.now()
        // Idle timeout (`ConnectionLiveness`), unless a part of the node protects the peer.
        if liveness.idleTimeoutExpired(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now),
            !isProtected(peer)
        {
            logger.debug("closing idle connection", metadata: ["peer": "\(peer)"])
            close(error: nil)
            return
        }
        if liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now) {
            host?.trimIfCrowded()
        }
        let result = withSession { session -> Result<[YamuxAction], SessionError> in
            // Memory: give back what is no longer needed, take what waiting writers need, and
            // report the usage peaks for `agentctl limits`.
            memory.starved = false
            reconcileMemory(&session)
            if let resources = host?.resources {
                resources.reportConnectionUsage(.connectionStreams, session.liveStreamCount)
                resources.reportConnectionUsage(.connectionReceiveWindowMemory, session.totalReceiveWindow)
                resources.reportConnectionUsage(.connectionSendQueueMemory, session.totalSendQueueCost)
            }
            let retried = session.retryWaitingWriters()
            do throws(SessionError) {
                return .success(retried + (try session.tick(now: now)))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let actions): perform(actions)
        case .failure(let error):
            logger.info("connection keepalive failed: \(error)")
            close(error: error)
        case nil:
            return
        }
    }

    // MARK: Actions

    private func perform(_ actions: [YamuxAction]) {
        for action in actions {
            switch action {
            case .streamOpened(let id):
                // A stream opened by a frame handled after the connection began closing would
                // never see its connection fail: it is not accepted.
                guard let peer = establishedPeer else { continue }
                streams[id] = StreamState()
                host?.acceptStream(RawStream(connection: self, id: id, peer: peer), on: self)
            case .deliver(let id, let bytes):
                guard let state = streams[id] else { continue }
                if state.abandoned {
                    // Nobody will read: credit it back and drop it.
                    consumed(bytes.readableBytes, on: id)
                } else if state.reader == nil {
                    // The bytes will wait for a reader: kept compact, not as views that pin whole
                    // socket read buffers (see `StreamState.queueUnread`).
                    state.queueUnread(bytes)
                } else {
                    state.inbound.append(bytes)
                    if state.reader != nil {
                        // A waiting reader is woken once per socket read, with everything the read
                        // brought, rather than once per frame: thread hand-offs cost more than bytes.
                        readersToWake.append(id)
                        if !receiving { wakeReaders() }
                    }
                }
            case .remoteClosedWrite(let id):
                guard let state = streams[id] else { continue }
                state.remoteClosed = true
                if let reader = state.reader, state.inbound.isEmpty {
                    state.reader = nil
                    reader.resume(returning: nil)
                }
            case .streamReset(let id):
                guard let state = streams[id] else { continue }
                let error = SessionError(.streamReset, "stream \(id) was reset by the peer")
                rememberReset(id)
                if !state.abandoned, !state.inbound.isEmpty {
                    // What arrived before the reset is still the reader's; the error comes after
                    // it, and the state goes once it is read.
                    state.fullyClosed = true
                    fail(stream: id, with: error, deliveringQueued: true)
                } else {
                    fail(stream: id, with: error)
                    streams[id] = nil
                }
            case .streamClosed(let id):
                if let state = streams[id],
                    state.abandoned
                        || (state.inbound.isEmpty && state.reader == nil && state.pendingWrites.isEmpty)
                {
                    streams[id] = nil
                } else {
                    streams[id]?.fullyClosed = true
                }
            case .writable(let id):
                drainWrites(id)
            case .pingResult:
                break
            case .goAwayReceived(let code):
                // No new stream can open on it: the registry stops handing it out, and a dial to
                // the peer makes a new connection.
                closingFlag.withLockedValue { $0 = true }
                logger.debug("peer sent GoAway \(code)")
            case .outboundReady:
                break
            }
        }
        pump()
    }

    private func consumed(_ count: Int, on id: YamuxStreamID) {
        guard count > 0, let actions = withSession({ $0.consumed(count, on: id, now: .now()) }) else { return }
        if !actions.isEmpty { perform(actions) } else { pump() }
    }

    /// Writes what the session has to send while the socket accepts it (`force`: even when it does
    /// not, the last frames before closing).
    private func pump(force: Bool = false) {
        // Only the context is taken from the state: a copy of the whole payload would share the
        // session's storage while `withSession` mutates it, which would then copy it.
        guard isEstablished, let context, force || context.channel.isWritable else { return }
        // At most `pumpBudget` per call: the next pump follows from the socket's writability.
        guard
            let (frames, followUp, more) = withSession({ session in
                let (frames, followUp) = session.nextOutboundFrames(maximumBytes: Self.pumpBudget)
                return (frames, followUp, session.hasOutboundFrames)
            })
        else { return }
        let pulled = frames.reduce(0) { $0 + 12 + $1.payload.readableBytes }
        if frames.contains(where: { $0.streamID != .session }) { lastStreamTraffic = .now() }
        if !frames.isEmpty {
            // The headers in one buffer, each written as a view of it just before its payload: the
            // security handler seals the pieces as one stream without joining them (no copy of a
            // payload on the way to the cipher).
            var headers = context.channel.allocator.buffer(capacity: frames.count * YamuxFrame.headerSize)
            for frame in frames { headers.writeYamuxHeader(frame) }
            for frame in frames {
                context.write(wrapOutboundOut(headers.readSlice(length: YamuxFrame.headerSize)!), promise: nil)
                if frame.payload.readableBytes > 0 { context.write(wrapOutboundOut(frame.payload), promise: nil) }
            }
            context.flush()
        }
        // More to send and the socket still takes it: continue on the next loop turn (a write that
        // the kernel accepted at once fires no writability change to resume us).
        // (Only when the budget was used up: a short pull means nothing else can go now, e.g. the
        // rest waits for window, and rescheduling then would spin.)
        if pulled > Self.pumpBudget - Self.largestFrame, more, isEstablished, context.channel.isWritable,
            !pumpScheduled
        {
            pumpScheduled = true
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                loopBound.value.pumpScheduled = false
                loopBound.value.pump()
            }
        }
        // Sending frees queue space (.writable) and may finish streams (.streamClosed).
        let pending = followUp.filter { if case .outboundReady = $0 { return false } else { return true } }
        if !pending.isEmpty { perform(pending) }
    }

    // MARK: Streams (all on the event loop)

    func openStream(priority: YamuxPriority = .normal) -> EventLoopFuture<RawStream> {
        eventLoop.assertInEventLoop()
        if quic != nil { return openQUICStream() }
        do {
            guard
                let (id, peer) = try withEstablished({ established in
                    if memory.needsReservation(inUse: established.session.memoryInUse) {
                        reconcileMemory(&established.session)
                    }
                    return (try established.session.openStream(priority: priority), established.peer)
                })
            else {
                return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "connection is closed"))
            }
            streams[id] = StreamState()
            pump()
            return eventLoop.makeSucceededFuture(RawStream(connection: self, id: id, peer: peer))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// Hands the reader what is queued (see `takeBatch`), or parks it until something arrives.
    func read(_ id: YamuxStreamID, continuation: CheckedContinuation<[ByteBuffer]?, Error>) {
        eventLoop.assertInEventLoop()
        guard let state = streams[id] else {
            if resetByPeer.contains(id) {
                continuation.resume(throwing: SessionError(.streamReset, "stream \(id) was reset by the peer"))
            } else {
                continuation.resume(returning: nil)
            }
            return
        }
        if state.reader == nil, let batch = takeBatch(from: state, id: id) {
            continuation.resume(returning: batch)
            freeIfDone(id)
        } else if let error = state.error {
            continuation.resume(throwing: error)
            freeIfDone(id)
        } else if state.remoteClosed || state.fullyClosed {
            continuation.resume(returning: nil)
            freeIfDone(id)
        } else if state.reader != nil {
            continuation.resume(throwing: NetworkError(.protocolViolation, "concurrent reads on one stream"))
        } else {
            state.reader = continuation
        }
    }

    /// Takes the stream's queued chunks, oldest first, up to `maximumReadBatch` bytes (at least one
    /// chunk), and credits them back to the peer. The chunks are handed over as they are, views of
    /// the decrypted messages: one wake-up of the reader per batch rather than per frame, and no
    /// copy to join them. `nil` when nothing is queued.
    private func takeBatch(from state: StreamState, id: YamuxStreamID) -> [ByteBuffer]? {
        var batch: [ByteBuffer] = []
        var size = 0
        while let next = state.inbound.first, batch.isEmpty || size + next.readableBytes <= Self.maximumReadBatch {
            state.inbound.removeFirst()
            size += next.readableBytes
            batch.append(next)
        }
        guard !batch.isEmpty else { return nil }
        consumed(size, on: id)
        return batch
    }

    private func wakeReaders() {
        guard !readersToWake.isEmpty else { return }
        let ids = readersToWake
        readersToWake.removeAll(keepingCapacity: true)
        for id in ids {
            guard let state = streams[id], let reader = state.reader else { continue }
            state.reader = nil
            guard let batch = takeBatch(from: state, id: id) else {
                state.reader = reader
                continue
            }
            reader.resume(returning: batch)
            freeIfDone(id)
        }
    }

    /// Frees a stream yamux has closed both ways (`.streamClosed` came while its user still had
    /// bytes to take or was waiting) once nothing is left for the user: what it has not read is the
    /// only thing that kept the state.
    private func freeIfDone(_ id: YamuxStreamID) {
        guard let state = streams[id], state.fullyClosed, state.reader == nil, state.inbound.isEmpty,
            state.pendingWrites.isEmpty
        else { return }
        streams[id] = nil
    }

    func write(_ bytes: ByteBuffer, on id: YamuxStreamID, continuation: CheckedContinuation<Void, Error>) {
        eventLoop.assertInEventLoop()
        guard let state = streams[id] else {
            continuation.resume(throwing: SessionError(.streamClosed, "stream \(id) is closed"))
            return
        }
        if let error = state.error {
            continuation.resume(throwing: error)
            return
        }
        state.pendingWrites.append(.data(bytes, continuation))
        drainWrites(id)
    }

    func closeWrite(_ id: YamuxStreamID, continuation: CheckedContinuation<Void, Error>) {
        eventLoop.assertInEventLoop()
        guard let state = streams[id] else {
            continuation.resume()
            return
        }
        state.pendingWrites.append(.close(continuation))
        drainWrites(id)
    }

    /// The stream's user is done with it (a handler returned): drop what it did not read, close our
    /// side gracefully after queued writes, and free the state when the peer closes too.
    func abandon(_ id: YamuxStreamID) {
        eventLoop.assertInEventLoop()
        guard let state = streams[id] else { return }
        state.abandoned = true
        var unread = 0
        while let bytes = state.inbound.popFirst() { unread += bytes.readableBytes }
        consumed(unread, on: id)
        if !state.writeClosed {
            state.pendingWrites.append(.close(nil))
            drainWrites(id)
        }
        freeIfDone(id)
    }

    func reset(_ id: YamuxStreamID) {
        eventLoop.assertInEventLoop()
        guard streams[id] != nil else { return }
        withSession { $0.reset(id) }
        fail(stream: id, with: SessionError(.streamReset, "stream \(id) was reset"))
        streams[id] = nil
        pump()
    }

    /// Moves queued application writes into the session as far as its per-stream queue allows;
    /// writers wait (their continuation is held) until `.writable`.
    private func drainWrites(_ id: YamuxStreamID) {
        guard let state = streams[id], isEstablished else { return }
        defer { pump() }
        while let first = state.pendingWrites.first {
            switch first {
            case .data(var bytes, let continuation):
                let outcome = withSession { session -> Result<Void, SessionError>? in
                    if memory.needsReservation(inUse: session.memoryInUse) { reconcileMemory(&session) }
                    let room = session.writableBytesOrWait(on: id)
                    if room <= 0 { return nil }
                    let chunk = bytes.readSlice(length: min(room, bytes.readableBytes))!
                    do throws(SessionError) {
                        try session.write(chunk, to: id)
                        return .success(())
                    } catch {
                        return .failure(error)
                    }
                }
                // Not established any more, or no room: the writer waits for `.writable` (or fails
                // with the connection).
                guard case .some(.some(let written)) = outcome else { return }
                if case .failure(let error) = written {
                    state.pendingWrites.removeFirst()
                    continuation.resume(throwing: error)
                } else if bytes.readableBytes == 0 {
                    state.pendingWrites.removeFirst()
                    continuation.resume()
                } else {
                    state.pendingWrites[state.pendingWrites.startIndex] = .data(bytes, continuation)
                }
            case .close(let continuation):
                guard !state.writeClosed else {
                    state.pendingWrites.removeFirst()
                    continuation?.resume()
                    continue
                }
                let outcome = withSession { session -> Result<Void, SessionError> in
                    do throws(SessionError) {
                        try session.closeWrite(id)
                        return .success(())
                    } catch {
                        return .failure(error)
                    }
                }
                guard let outcome else { return }
                state.pendingWrites.removeFirst()
                switch outcome {
                case .success:
                    state.writeClosed = true
                    continuation?.resume()
                case .failure(let error):
                    continuation?.resume(throwing: error)
                }
            }
        }
    }

    private func rememberReset(_ id: YamuxStreamID) {
        guard resetByPeer.insert(id).inserted else { return }
        resetOrder.append(id)
        if resetOrder.count > Self.resetMemory { resetByPeer.remove(resetOrder.removeFirst()) }
    }

    /// Fails the stream's reader and writers with `error`; with `deliveringQueued`, a waiting
    /// reader first gets what is queued, and later reads the error.
    private func fail(stream id: YamuxStreamID, with error: Error, deliveringQueued: Bool = false) {
        guard let state = streams[id] else { return }
        state.error = error
        if let reader = state.reader {
            state.reader = nil
            if deliveringQueued, let batch = takeBatch(from: state, id: id) {
                reader.resume(returning: batch)
            } else {
                reader.resume(throwing: error)
            }
        }
        while let pending = state.pendingWrites.popFirst() {
            switch pending {
            case .data(_, let continuation): continuation.resume(throwing: error)
            case .close(let continuation): continuation?.resume(throwing: error)
            }
        }
    }

    // MARK: Closing

    /// Sends GoAway and closes the connection.
    public func close() {
        // Marked at once, so that a connect right after this call does not reuse this connection.
        closingFlag.withLockedValue { $0 = true }
        if let quic {
            eventLoop.execute { quic.close() }
            return
        }
        eventLoop.execute { self.close(error: nil) }
    }

    /// Closes the socket at once, without GoAway (shutdown of a connection that did not close).
    func forceClose() {
        closingFlag.withLockedValue { $0 = true }
        if let quic {
            eventLoop.execute { quic.close() }
            return
        }
        eventLoop.execute { self.close(error: nil, goAway: false) }
    }

    /// Keeps node memory reserved for this connection one granule ahead of what its session holds
    /// (so a new stream's window or a write finds room without waiting), and gives back what is more
    /// than two granules ahead. The session's `memoryLimit` is what is reserved: when the node's
    /// budget is spent, SYNs are refused, writes wait and windows stop growing.
    private func reconcileMemory(_ session: inout YamuxSession) {
        guard let resources = host?.resources else { return }
        let change = memory.change(inUse: session.memoryInUse)
        if change > 0 {
            if resources.reserveMemory(change) {
                memory.reserved += change
            } else {
                memory.starved = true  // asked again at the next tick, not on every frame
            }
        } else if change < 0 {
            resources.releaseMemory(-change)
            memory.reserved += change
        }
        session.memoryLimit = memory.reserved
    }

    private func reportRefusedStream(_ session: YamuxSession, peer: PeerID) {
        guard let resources = host?.resources else { return }
        let limit = session.refusedForMemory > memory.reportedMemoryRefusals
        memory.reportedMemoryRefusals = session.refusedForMemory
        if limit {
            resources.connectionRefused(
                .connectionReceiveWindowMemory,
                "a new stream's window does not fit (\(session.totalReceiveWindow) bytes of windows, \(memory.reserved) reserved) from \(peer)"
            )
        } else {
            resources.connectionRefused(
                .connectionStreams, "\(session.liveStreamCount) streams live on a connection of \(peer)")
        }
    }

    // MARK: Status

    /// The authenticated peer while established; nil in any other state (on the event loop).
    private var establishedPeer: PeerID? {
        if case .established(let established) = state { return established.peer }
        return nil
    }

    /// A snapshot for status output; must be called on the event loop.
    func info() -> ConnectionInfo? {
        guard let remotePeer else { return nil }
        if let quic {
            return ConnectionInfo(
                id: id, remotePeer: remotePeer, remoteAddress: remoteAddress, direction: direction, path: path,
                streams: quic.streams.count, latency: nil)
        }
        var latency: TimeAmount?
        if case .established(let established) = state { latency = established.session.smoothedRTT }
        return ConnectionInfo(
            id: id, remotePeer: remotePeer, remoteAddress: remoteAddress, direction: direction, path: path,
            streams: streams.count,
            latency: latency)
    }

    /// Closes the connection (GoAway) if it is established, idle and its peer unprotected at this
    /// moment; whether it did. Trimming decides from a snapshot, and a stream may have moved since.
    func closeIfIdle() -> EventLoopFuture<Bool> {
        eventLoop.submit { [self] in
            if let quic {
                guard let peer = remotePeer, !quic.isClosed,
                    liveness.isIdle(streams: quic.streams.count, lastStreamTraffic: quic.lastStreamTraffic, now: .now()),
                    !isProtected(peer)
                else { return false }
                quic.close()
                return true
            }
            guard let peer = establishedPeer,
                liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: .now()),
                !isProtected(peer)
            else { return false }
            close(error: nil)
            return true
        }
    }

    /// The connection's memory as its session counts it and as reserved from the node; must be
    /// called on the event loop (tests, status).
    func memoryUsage() -> (receiveWindows: Int, sendQueueCost: Int, reserved: Int) {
        guard case .established(let established) = state else { return (0, 0, memory.reserved) }
        return (established.session.totalReceiveWindow, established.session.totalSendQueueCost, memory.reserved)
    }

    /// What trimming needs to know; must be called on the event loop.
    func activity(now: NIODeadline = .now()) -> (
        streams: Int, isIdle: Bool, establishedAt: NIODeadline?, lastStreamTraffic: NIODeadline
    ) {
        if let quic { return quicActivity(quic, now: now) }
        let isIdle = liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now)
        let establishedAt: NIODeadline? =
            switch state {
            case .established(let established): established.establishedAt
            case .closing(let closing): closing.established?.at
            case .detached, .handshaking, .closed, .modifying: nil
            }
        return (streams.count, isIdle, establishedAt, lastStreamTraffic)
    }

    /// Whether a part of the node protects `peer` (`Host.protect`).
    func isProtected(_ peer: PeerID) -> Bool {
        host?.isProtected(peer) ?? false
    }

    /// identify over this connection succeeded: the identify deadline no longer applies.
    func identifyCompleted() {
        eventLoop.execute { [self] in
            if let quic {
                quic.identifyDeadline?.cancel()
                quic.identifyDeadline = nil
            }
            withEstablished { established in
                established.identifyDeadline?.cancel()
                established.identifyDeadline = nil
            }
        }
    }

    /// A peer that upgraded the connection but did not complete identify within `timeout` does not
    /// speak libp2p as it must (or wants to hold a slot): closed (issue #10, finding 1).
    private func identifyDeadlinePassed(_ timeout: TimeAmount) {
        guard
            let peer = withEstablished({ established in
                established.identifyDeadline = nil
                return established.peer
            })
        else { return }
        logger.info(
            "closing connection: identify did not complete within \(timeout.nanoseconds / 1_000_000) ms",
            metadata: ["peer": "\(peer)"])
        close(error: nil)
    }

    /// Rekeys of the connection's Noise session so far, ours and the peer's (tests, status).
    func rekeys() async throws -> (sent: Int, received: Int) {
        try await eventLoop.flatSubmit { [self] () -> EventLoopFuture<(sent: Int, received: Int)> in
            guard isEstablished, let pipeline = context?.pipeline else {
                return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "connection is closed"))
            }
            return pipeline.handler(type: SecureConnectionHandler.self).map { ($0.rekeysSent, $0.rekeysReceived) }
        }.get()
    }

    /// Sends a yamux ping now (measures RTT). Nothing is sent when `maximumOutstandingPings` are
    /// unanswered or the session failed: the measurement then waits for the answers, or ends.
    func ping() {
        withSession { session in
            do {
                try session.ping(now: .now())
            } catch {
                return
            }
        }
        pump()
    }
}
