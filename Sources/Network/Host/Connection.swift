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
/// `@unchecked Sendable`: every mutable stored property is read and written only on `eventLoop`
/// (the handler callbacks run there, and every method hops there before touching state), except
/// those in lock boxes (`remote`, `closingFlag`), which any thread may read.
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

    public let id: Int
    public let direction: ConnectionDirection
    /// Direct, or through a relay (then `remoteAddress` is the circuit address).
    public let path: ConnectionPath
    public let eventLoop: EventLoop
    var logger: Logger
    private let configuration: YamuxConfiguration
    private let liveness: ConnectionLiveness
    /// The last frame on any stream, received or sent (or the establishment): idleness counts from
    /// it (`ConnectionLiveness`).
    private var lastStreamTraffic = NIODeadline.now()
    /// Past this after establishment without a completed identify, the connection is closed.
    private let identifyTimeout: TimeAmount?
    private var identifyDeadline: Scheduled<Void>?
    private weak var host: HostCore?

    private var context: ChannelHandlerContext?
    private var session: YamuxSession?
    private var inbound = ByteBuffer()
    private(set) var streams: [YamuxStreamID: StreamState] = [:]
    private var tickTask: RepeatedTask?
    private var closed = false {
        didSet { if closed { closingFlag.withLockedValue { $0 = true } } }
    }
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
    /// `closed`, readable from any thread (the host's registry consults it).
    private let closingFlag = NIOLockedValueBox(false)

    /// Whether the connection is closing or closed.
    public var isClosing: Bool { closingFlag.withLockedValue { $0 } }
    private let established: EventLoopPromise<Connection>
    private var establishedDone = false

    /// Who is at the other end and where: written on the event loop (the remote address when the
    /// handler is added, both at establishment), read from any thread (the host's registry, stream
    /// handlers), hence behind a lock of its own.
    private let remote: NIOLockedValueBox<(peer: PeerID?, address: Multiaddr?)>

    /// The authenticated peer; nil until the handshake completes.
    public var remotePeer: PeerID? { remote.withLockedValue { $0.peer } }
    /// The remote address: the socket's (TCP) or the circuit address (relayed).
    public var remoteAddress: Multiaddr? { remote.withLockedValue { $0.address } }
    /// When the handshake completed (on the event loop).
    private var establishedAt: NIODeadline?
    /// Completes when the connection is closed.
    public let closeFuture: EventLoopFuture<Void>
    private let closePromise: EventLoopPromise<Void>
    /// The channel went inactive: streams are failed, nothing more is read or accepted.
    private var finished = false
    /// An inbound connection's address scopes in the resource manager; set before the handshake
    /// starts, read by the host's registry afterwards.
    var addressKeys: ResourceManager.AddressKeys?
    /// Node memory reserved for this connection (see `reconcileMemory`).
    private var memory = ConnectionMemory()

    init(
        id: Int, direction: ConnectionDirection, transport: TransportChannelInfo, eventLoop: EventLoop, host: HostCore?,
        configuration: YamuxConfiguration, liveness: ConnectionLiveness, identifyTimeout: TimeAmount?, logger: Logger
    ) {
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

    // MARK: Pipeline events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // `close()` ran before the handler was in the pipeline: close now.
        if closed {
            context.close(promise: nil)
        }
        self.inbound = context.channel.allocator.buffer(capacity: 0)
        if path == .direct, let socketAddress = context.channel.remoteAddress.flatMap(TCPAddress.multiaddr(of:)) {
            remote.withLockedValue { $0.address = socketAddress }
        }
        // Failures before the peer is authenticated can only name the address: log it.
        if let remoteAddress { logger[metadataKey: "remote"] = "\(remoteAddress)" }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .established(let info)? = event as? SecureConnectionEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        remote.withLockedValue { $0.peer = info.remotePeer }
        establishedAt = .now()
        lastStreamTraffic = establishedAt!
        if path == .direct, let socketAddress = context.channel.remoteAddress.flatMap(TCPAddress.multiaddr(of:)) {
            remote.withLockedValue { $0.address = socketAddress }
        }
        logger.debug("connection established", metadata: ["peer": "\(info.remotePeer)", "muxer": "\(info.muxer.escapedForLog())"])
        session = YamuxSession(role: direction == .outbound ? .client : .server, configuration: configuration)
        reconcileMemory()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        tickTask = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            loopBound.value.tick()
        }
        if let identifyTimeout {
            identifyDeadline = context.eventLoop.scheduleTask(in: identifyTimeout) {
                loopBound.value.identifyDeadlinePassed(identifyTimeout)
            }
        }
        establishedDone = true
        established.succeed(self)
        pump()
        // A first keepalive ping at once: its RTT lets receive-window auto-tuning work from the
        // first bulk transfer instead of after the first periodic ping.
        tick()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard session != nil else { return }
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
            pump()
            close(error: error)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        receiving = false
        wakeReaders()
        context.fireChannelReadComplete()
    }

    private func receiveFrames(from buffer: inout ByteBuffer) throws {
        // `finished`: the channel can go inactive while frames are being handled (a write made in
        // response fails and NIO closes the channel on the spot); nothing after that is read.
        while session != nil, !finished {
            // Refuse a data frame from its header when it exceeds what the stream's window (or a
            // new stream's initial window) allows: never wait for, and buffer, such a payload.
            let window = session!.receiveWindowLimit(forNextFrameIn: buffer)
            let limit = min(window ?? Self.maximumInboundFramePayload, Self.maximumInboundFramePayload)
            let next: YamuxFrame?
            do {
                next = try buffer.readYamuxFrame(maximumPayload: limit)
            } catch {
                guard window != nil, error.kind == .messageTooLarge else { throw error }
                throw SessionError(.flowControlViolation, "\(error.message), beyond what the stream's window allows")
            }
            guard let frame = next else { return }
            let now = NIODeadline.now()
            if frame.streamID != .session { lastStreamTraffic = now }
            // Room for what the frame may take (a new stream's window) before the session decides.
            if memory.needsReservation(inUse: session!.memoryInUse) { reconcileMemory() }
            let refusedBefore = session!.refusedForStreamLimit &+ session!.refusedForMemory
            // `session!` mutates in place: a local copy would copy the stream table per frame.
            let actions = try session!.receive(frame, now: now)
            if session!.refusedForStreamLimit &+ session!.refusedForMemory != refusedBefore { reportRefusedStream() }
            perform(actions)
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump() }
        context.fireChannelWritabilityChanged()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.info("connection error: \(error)", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
        failEstablished(error)
        close(error: error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let error = NetworkError(.connectionClosed, "connection to \(remotePeer?.description ?? "peer") closed")
        failEstablished(error)
        finish(error: error)
        context.fireChannelInactive()
    }

    private func failEstablished(_ error: Error) {
        guard !establishedDone else { return }
        establishedDone = true
        established.fail(error)
    }

    private func tick() {
        guard session != nil else { return }
        let now = NIODeadline.now()
        // Idle timeout (`ConnectionLiveness`), unless a part of the node protects the peer.
        if liveness.idleTimeoutExpired(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now),
            !isProtected
        {
            logger.debug("closing idle connection", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
            close(error: nil)
            return
        }
        if liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now) {
            host?.trimIfCrowded()
        }
        // Memory: give back what is no longer needed, take what waiting writers need, and report
        // the usage peaks for `agentctl limits`.
        memory.starved = false
        reconcileMemory()
        if let resources = host?.resources {
            resources.reportConnectionUsage(.connectionStreams, session!.liveStreamCount)
            resources.reportConnectionUsage(.connectionReceiveWindowMemory, session!.totalReceiveWindow)
            resources.reportConnectionUsage(.connectionSendQueueMemory, session!.totalSendQueueCost)
        }
        perform(session!.retryWaitingWriters())
        do {
            let actions = try session!.tick(now: now)
            perform(actions)
        } catch {
            logger.info("connection keepalive failed: \(error)")
            pump()
            close(error: error)
        }
    }

    // MARK: Actions

    private func perform(_ actions: [YamuxAction]) {
        for action in actions {
            switch action {
            case .streamOpened(let id):
                // A stream opened by a frame handled after the channel went inactive would never
                // see its connection fail: it is not accepted.
                guard !finished else { continue }
                streams[id] = StreamState()
                let stream = RawStream(connection: self, id: id)
                host?.acceptStream(stream, on: self)
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
        guard session != nil, count > 0 else { return }
        let actions = session!.consumed(count, on: id, now: .now())
        if !actions.isEmpty { perform(actions) } else { pump() }
    }

    /// Writes what the session has to send while the socket accepts it.
    private func pump() {
        guard let context, session != nil, context.channel.isWritable || closed else { return }
        // One buffer per pump: the frames are copied once, here, to put each header next to its
        // payload (a Noise message must be contiguous); the security handler then seals this buffer
        // without another copy. At most `pumpBudget` per call: the next pump follows from the
        // socket's writability.
        let (frames, followUp) = session!.nextOutboundFrames(maximumBytes: Self.pumpBudget)
        let pulled = frames.reduce(0) { $0 + 12 + $1.payload.readableBytes }
        if frames.contains(where: { $0.streamID != .session }) { lastStreamTraffic = .now() }
        if !frames.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: pulled)
            for frame in frames { buffer.writeYamuxFrame(frame) }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
        // More to send and the socket still takes it: continue on the next loop turn (a write that
        // the kernel accepted at once fires no writability change to resume us).
        // (Only when the budget was used up: a short pull means nothing else can go now, e.g. the
        // rest waits for window, and rescheduling then would spin.)
        if pulled > Self.pumpBudget - Self.largestFrame, session?.hasOutboundFrames == true, context.channel.isWritable,
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
        guard session != nil, !closed else {
            return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "connection is closed"))
        }
        do {
            if memory.needsReservation(inUse: session!.memoryInUse) { reconcileMemory() }
            let id = try session!.openStream(priority: priority)
            streams[id] = StreamState()
            pump()
            return eventLoop.makeSucceededFuture(RawStream(connection: self, id: id))
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
        guard session != nil, streams[id] != nil else { return }
        session!.reset(id)
        fail(stream: id, with: SessionError(.streamReset, "stream \(id) was reset"))
        streams[id] = nil
        pump()
    }

    /// Moves queued application writes into the session as far as its per-stream queue allows;
    /// writers wait (their continuation is held) until `.writable`.
    private func drainWrites(_ id: YamuxStreamID) {
        guard let state = streams[id], session != nil else { return }
        defer { pump() }
        while let first = state.pendingWrites.first {
            switch first {
            case .data(var bytes, let continuation):
                if memory.needsReservation(inUse: session!.memoryInUse) { reconcileMemory() }
                let room = session!.writableBytesOrWait(on: id)
                if room <= 0 { return }
                let chunk = bytes.readSlice(length: min(room, bytes.readableBytes))!
                do {
                    try session!.write(chunk, to: id)
                } catch {
                    state.pendingWrites.removeFirst()
                    continuation.resume(throwing: error)
                    continue
                }
                if bytes.readableBytes == 0 {
                    state.pendingWrites.removeFirst()
                    continuation.resume()
                } else {
                    state.pendingWrites[state.pendingWrites.startIndex] = .data(bytes, continuation)
                }
            case .close(let continuation):
                state.pendingWrites.removeFirst()
                guard !state.writeClosed else {
                    continuation?.resume()
                    continue
                }
                do {
                    try session!.closeWrite(id)
                    state.writeClosed = true
                    continuation?.resume()
                } catch {
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
        eventLoop.execute { self.close(error: nil) }
    }

    /// Closes the socket at once, without GoAway (shutdown of a connection that did not close).
    func forceClose() {
        closingFlag.withLockedValue { $0 = true }
        eventLoop.execute {
            self.closed = true
            self.context?.channel.close(promise: nil)
        }
    }

    private func close(error: Error?) {
        guard !closed else { return }
        closed = true
        if session != nil {
            session!.goAway(code: error == nil ? .normal : .protocolError)
            pump()
        }
        context?.close(promise: nil)
    }

    /// Keeps node memory reserved for this connection one granule ahead of what its session holds
    /// (so a new stream's window or a write finds room without waiting), and gives back what is more
    /// than two granules ahead. The session's `memoryLimit` is what is reserved: when the node's
    /// budget is spent, SYNs are refused, writes wait and windows stop growing.
    private func reconcileMemory() {
        guard session != nil, let resources = host?.resources else { return }
        let change = memory.change(inUse: session!.memoryInUse)
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
        session!.memoryLimit = memory.reserved
    }

    private func reportRefusedStream() {
        guard let resources = host?.resources, session != nil else { return }
        let limit = session!.refusedForMemory > memory.reportedMemoryRefusals
        memory.reportedMemoryRefusals = session!.refusedForMemory
        if limit {
            resources.connectionRefused(
                .connectionReceiveWindowMemory,
                "a new stream's window does not fit (\(session!.totalReceiveWindow) bytes of windows, \(memory.reserved) reserved) from \(remotePeer?.description ?? "?")")
        } else {
            resources.connectionRefused(
                .connectionStreams, "\(session!.liveStreamCount) streams live on a connection of \(remotePeer?.description ?? "?")")
        }
    }

    private func finish(error: Error) {
        if memory.reserved > 0 {
            host?.resources.releaseMemory(memory.reserved)
            memory.reserved = 0
        }
        tickTask?.cancel()
        tickTask = nil
        identifyDeadline?.cancel()
        identifyDeadline = nil
        closed = true
        finished = true
        for id in Array(streams.keys) { fail(stream: id, with: error) }
        streams.removeAll()
        host?.connectionClosed(self)
        closePromise.succeed(())
        context = nil
    }

    /// A snapshot for status output; must be called on the event loop.
    func info() -> ConnectionInfo? {
        guard let remotePeer else { return nil }
        return ConnectionInfo(
            id: id, remotePeer: remotePeer, remoteAddress: remoteAddress, direction: direction, path: path, streams: streams.count,
            latency: session?.smoothedRTT)
    }

    /// Closes the connection (GoAway) if it is idle and its peer unprotected at this moment;
    /// whether it did. Trimming decides from a snapshot, and a stream may have moved since.
    func closeIfIdle() -> EventLoopFuture<Bool> {
        eventLoop.submit { [self] in
            guard !closed, liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: .now()),
                !isProtected
            else { return false }
            closingFlag.withLockedValue { $0 = true }
            close(error: nil)
            return true
        }
    }

    /// The connection's memory as its session counts it and as reserved from the node; must be
    /// called on the event loop (tests, status).
    func memoryUsage() -> (receiveWindows: Int, sendQueueCost: Int, reserved: Int) {
        (session?.totalReceiveWindow ?? 0, session?.totalSendQueueCost ?? 0, memory.reserved)
    }

    /// What trimming needs to know; must be called on the event loop.
    func activity(now: NIODeadline = .now()) -> (
        streams: Int, isIdle: Bool, establishedAt: NIODeadline?, lastStreamTraffic: NIODeadline
    ) {
        let isIdle = liveness.isIdle(streams: streams.count, lastStreamTraffic: lastStreamTraffic, now: now)
        return (streams.count, isIdle, establishedAt, lastStreamTraffic)
    }

    /// Whether a part of the node protects the peer (`Host.protect`).
    private var isProtected: Bool {
        guard let remotePeer, let host else { return false }
        return host.isProtected(remotePeer)
    }

    /// identify over this connection succeeded: the identify deadline no longer applies.
    func identifyCompleted() {
        eventLoop.execute { [self] in
            identifyDeadline?.cancel()
            identifyDeadline = nil
        }
    }

    /// A peer that upgraded the connection but did not complete identify within `timeout` does not
    /// speak libp2p as it must (or wants to hold a slot): closed (issue #10, finding 1).
    private func identifyDeadlinePassed(_ timeout: TimeAmount) {
        identifyDeadline = nil
        guard !closed else { return }
        logger.info(
            "closing connection: identify did not complete within \(timeout.nanoseconds / 1_000_000) ms",
            metadata: ["peer": "\(remotePeer?.description ?? "?")"])
        close(error: nil)
    }

    /// Rekeys of the connection's Noise session so far, ours and the peer's (tests, status).
    func rekeys() async throws -> (sent: Int, received: Int) {
        try await eventLoop.flatSubmit { [self] () -> EventLoopFuture<(sent: Int, received: Int)> in
            guard let pipeline = context?.pipeline else {
                return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "connection is closed"))
            }
            return pipeline.handler(type: SecureConnectionHandler.self).map { ($0.rekeysSent, $0.rekeysReceived) }
        }.get()
    }

    /// Sends a yamux ping now (measures RTT).
    func ping() {
        guard session != nil else { return }
        try? session!.ping(now: .now())
        pump()
    }
}

/// The application-facing state of one stream; lives on the connection's event loop.
final class StreamState {
    enum PendingWrite {
        case data(ByteBuffer, CheckedContinuation<Void, Error>)
        /// FIN after what is queued; no continuation when the stream was abandoned.
        case close(CheckedContinuation<Void, Error>?)
    }

    var inbound = CircularBuffer<ByteBuffer>()
    var reader: CheckedContinuation<[ByteBuffer]?, Error>?
    var pendingWrites = CircularBuffer<PendingWrite>()
    var remoteClosed = false
    var fullyClosed = false
    var writeClosed = false
    /// Its user is gone: inbound bytes are credited and dropped, the state is freed on close.
    var abandoned = false
    var error: Error?

    /// Queues bytes no reader waits for. Their count is bounded by the stream's receive window, but
    /// a `ByteBuffer` keeps its whole storage alive: a 1-byte frame left as a view of a 256 KiB
    /// socket read buffer pins 256 KiB. So a small chunk is gathered into the last queued one when
    /// that is small too, and a chunk whose storage is mostly other bytes is copied out: queued
    /// memory stays within about twice the bytes (plus one storage per 4 KiB).
    static let gatherBelow = 4096

    func queueUnread(_ bytes: ByteBuffer) {
        var bytes = bytes
        if bytes.readableBytes < Self.gatherBelow, let last = inbound.indices.last,
            inbound[last].readableBytes < Self.gatherBelow
        {
            inbound[last].writeBuffer(&bytes)
            return
        }
        if bytes.storageCapacity > 2 * bytes.readableBytes + Self.gatherBelow {
            var copy = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
            copy.writeBuffer(&bytes)
            bytes = copy
        }
        inbound.append(bytes)
    }
}

/// Node memory a connection holds reserved in the resource manager, in granules.
struct ConnectionMemory {
    var reserved = 0
    /// The node refused the last reservation; not asked again before the next tick.
    var starved = false
    /// The session's memory refusals already reported.
    var reportedMemoryRefusals = 0

    /// Whether the session is within a granule of what is reserved (cheap: checked per frame).
    func needsReservation(inUse: Int) -> Bool {
        !starved && inUse + ResourceManager.memoryGranule > reserved
    }

    /// How much to reserve (positive) or give back (negative): one granule of headroom, given back
    /// only beyond two (hysteresis, so a connection at a boundary does not take and give back on
    /// every frame). Multiples of the granule.
    func change(inUse: Int) -> Int {
        let granule = ResourceManager.memoryGranule
        let wanted = (inUse + granule + granule - 1) / granule * granule
        if wanted > reserved { return starved ? 0 : wanted - reserved }
        if reserved - wanted >= 2 * granule { return wanted + granule - reserved }
        return 0
    }
}
