import NIOCore

/// A yamux/1.0.0 session as a pure state machine: frames and application events in, actions and
/// frames out. No sockets, no clocks (`now` is passed in), no randomness.
///
/// How a caller (the glue) drives it:
/// - Parse inbound bytes with `receive(bytes:now:)` (or `readYamuxFrame` + `receive(_:now:)`) and
///   perform the returned actions. A thrown error ends the session: pull the GoAway that the session
///   queued for the peer with `nextOutboundFrames`, write it, close the connection.
/// - Local operations (`openStream`, `write`, `closeWrite`, `reset`, `goAway`, `ping`) queue frames;
///   `consumed` and `tick` may too. Whenever `.outboundReady` comes back or after a local operation,
///   and while the socket is writable, call `nextOutboundFrames(maximumBytes:)` and write the frames.
/// - Call `tick(now:)` at `nextTimerDeadline` (keepalive pings and their timeout).
///
/// Outbound order: control frames first (SYN, ACK, window updates, pings, RST, GoAway), then data of
/// the streams that have both bytes and window, shared by priority with weighted fair queueing (see
/// `YamuxPriority`, `YamuxScheduler`).
///
/// Memory is bounded: at most `maximumStreams` live streams; per stream at most
/// `maximumQueuedBytesPerStream` outbound and at most its receive window inbound (see
/// `YamuxReceiveWindow`); `closedStreamMemory` remembered ids; `maximumPendingControlFrames` answers
/// owed to the peer; `maximumOutstandingPings` pings.
public struct YamuxSession: Sendable {
    /// Which side of the connection we are. yamux spec, "StreamID Field": "The client side should use
    /// odd ID's, and the server even." In libp2p the dialer is the client.
    public enum Role: Hashable, Sendable {
        case client
        case server
    }

    enum State: Sendable {
        case active
        /// The session ended on this error; only the GoAway telling the peer may still go out.
        case failed(SessionError)
    }

    /// An entry of the control queue.
    enum ControlEntry: Sendable {
        /// A frame ready to go; `owed` when the peer provoked it (counted against the flood limit).
        case frame(YamuxFrame, owed: Bool)
        /// The stream's window update (SYN, ACK, credit), built when it is pulled so that credit
        /// freed in the meantime rides along.
        case stream(YamuxStreamID)
    }

    struct OutstandingPing: Sendable {
        let opaque: UInt32
        let sentAt: NIODeadline
    }

    public let role: Role
    public let configuration: YamuxConfiguration

    // Internal rather than private: the inbound and outbound halves live in extensions in
    // YamuxSession+Inbound.swift and YamuxSession+Outbound.swift.
    var state = State.active
    var streams: [YamuxStreamID: YamuxStream] = [:]
    /// The next id we open; UInt64 so that exhausting the 32-bit space is noticed, not wrapped.
    var nextOutboundID: UInt64
    /// The highest id the peer opened so far.
    var highestInboundID: UInt32 = 0
    var unacknowledgedOutbound = 0
    var closedInbound: YamuxClosedStreams
    var control = CircularBuffer<ControlEntry>()
    /// `.frame(_, owed: true)` entries in `control`.
    var owedControlFrames = 0
    var scheduler: YamuxScheduler
    /// The receive windows of all live streams added up (for `sessionReceiveWindowBudget`).
    public internal(set) var totalReceiveWindow = 0
    /// The memory cost of all streams' send queues (for `sessionSendQueueBudget`).
    public internal(set) var totalSendQueueCost = 0
    /// Streams owed `.writable` once the session's queues drain (they found no room for the session,
    /// not for themselves).
    var waitingForBudget: [YamuxStreamID] = []
    /// Inbound SYNs refused with RST, by cause: the stream limit, and the memory budgets.
    public internal(set) var refusedForStreamLimit = 0
    public internal(set) var refusedForMemory = 0

    /// A ceiling on `memoryInUse` that the caller sets from a budget beyond this session (the node's,
    /// reserved in granules through the resource manager). A SYN, a write or window growth that does
    /// not fit under it is refused as at the session's own budgets. Default: no ceiling.
    public var memoryLimit = Int.max

    /// What the session holds or has promised to hold: the receive windows granted (initial ones
    /// included) and the memory cost of the queued outbound bytes.
    public var memoryInUse: Int { totalReceiveWindow + totalSendQueueCost }
    var sentGoAway = false
    var receivedGoAway = false
    var outstandingPings = CircularBuffer<OutstandingPing>()
    var nextPingOpaque: UInt32 = 1
    var lastPingSentAt: NIODeadline?
    /// Set when a call queued something to send; turned into `.outboundReady`.
    var queuedOutbound = false
    /// Control and scheduler entries left behind by freed streams since the last compaction.
    var staleEntries = 0

    /// The smoothed round-trip time from our pings (RFC 6298 style, 7/8 old + 1/8 new), or `nil`
    /// before the first answer. Auto-tuning needs it.
    public internal(set) var smoothedRTT: TimeAmount?

    public init(role: Role, configuration: YamuxConfiguration = YamuxConfiguration()) {
        configuration.validate()
        self.role = role
        self.configuration = configuration
        self.nextOutboundID = role == .client ? 1 : 2
        self.closedInbound = YamuxClosedStreams(capacity: configuration.closedStreamMemory)
        self.scheduler = YamuxScheduler(quantumUnit: configuration.maximumFramePayload + YamuxFrame.headerSize)
    }

    // MARK: - State for the caller

    /// The error the session ended on, or `nil` while it runs.
    public var failure: SessionError? {
        if case .failed(let error) = state { return error }
        return nil
    }

    /// Streams open in at least one direction.
    public var liveStreamCount: Int { streams.count }

    /// Whether we sent or received GoAway: no new streams of ours. The connection may close once
    /// `liveStreamCount` is 0.
    public var isGoingAway: Bool { sentGoAway || receivedGoAway }

    /// Whether `nextOutboundFrames` may have something (it may still return nothing).
    public var hasOutboundFrames: Bool { !control.isEmpty || !scheduler.isEmpty }

    /// When `tick(now:)` is due next, or `nil` if no timer is needed.
    public var nextTimerDeadline: NIODeadline? {
        guard case .active = state else { return nil }
        var deadlines: [NIODeadline] = []
        if let oldest = outstandingPings.first { deadlines.append(oldest.sentAt + configuration.pingTimeout) }
        if let interval = configuration.keepaliveInterval, outstandingPings.isEmpty {
            // No ping yet: the first is due at once.
            deadlines.append(lastPingSentAt.map { $0 + interval } ?? .uptimeNanoseconds(0))
        }
        return deadlines.min()
    }

    /// The largest data payload the peer may send (pass it to `readYamuxFrame(maximumPayload:)`): a
    /// larger frame overflows any window we grant.
    public var maximumInboundFramePayload: Int { Int(configuration.maximumReceiveWindow) }

    /// What the peer lets us send on `stream` now, or `nil` if it is not live.
    public func sendWindow(of stream: YamuxStreamID) -> UInt32? { streams[stream]?.sendWindow.size }

    /// The current (auto-tuned) receive window of `stream`, or `nil` if it is not live.
    public func receiveWindow(of stream: YamuxStreamID) -> UInt32? { streams[stream]?.receiveWindow.size }

    /// Outbound bytes queued on `stream`, or `nil` if it is not live.
    public func queuedBytes(on stream: YamuxStreamID) -> Int? { streams[stream]?.sendQueue.count }

    /// How many bytes `write(_:to:)` accepts on `stream` now: the room in its queue, or 0 if it is not
    /// writable or the session's queues are at `sessionSendQueueBudget` (or `memoryLimit`). A write
    /// within it may take the session a little past its budget (by at most that write); further ones
    /// then wait.
    public func writableBytes(on stream: YamuxStreamID) -> Int {
        guard case .active = state, let stream = streams[stream], stream.sendHalf == .open else { return 0 }
        guard !sendBudgetExhausted else { return 0 }
        return configuration.maximumQueuedBytesPerStream - stream.sendQueue.count
    }

    var sendBudgetExhausted: Bool {
        totalSendQueueCost >= configuration.sessionSendQueueBudget || memoryInUse >= memoryLimit
    }

    /// Like `writableBytes(on:)`; when it is 0 because of the session's budgets, `stream` is owed a
    /// `.writable` once the queues drained to half the budget (or at the next `retryWaitingWriters`).
    public mutating func writableBytesOrWait(on stream: YamuxStreamID) -> Int {
        let room = writableBytes(on: stream)
        if room == 0, sendBudgetExhausted, streams[stream] != nil, !waitingForBudget.contains(stream) {
            waitingForBudget.append(stream)
        }
        return room
    }

    /// `.writable` for every stream waiting for the session's budgets (call it when `memoryLimit`
    /// grew, or now and then: a writer must not wait for a drain that never comes).
    public mutating func retryWaitingWriters() -> [YamuxAction] {
        guard !waitingForBudget.isEmpty else { return [] }
        let waiting = waitingForBudget
        waitingForBudget.removeAll()
        return waiting.filter { streams[$0] != nil }.map { .writable($0) }
    }

    // MARK: - Local operations

    /// Opens a stream. Its SYN (a window update with no extra credit unless `initialReceiveWindow`
    /// exceeds 256 KiB) goes out through `nextOutboundFrames`; data may follow at once, before the
    /// peer's ACK (spec, "Opening a stream").
    ///
    /// - Throws: `.goingAway` after GoAway either way; `.resourceLimit` at `maximumStreams` live
    ///   streams, at `maximumAckBacklog` unacknowledged ones, or when the 32-bit ids are used up; the
    ///   session's error if it failed.
    public mutating func openStream(priority: YamuxPriority = .normal) throws(SessionError) -> YamuxStreamID {
        try checkActive()
        guard !sentGoAway && !receivedGoAway else {
            throw SessionError(
                .goingAway,
                sentGoAway
                    ? "yamux session is going away: we sent GoAway" : "the peer sent GoAway; it takes no new streams")
        }
        guard streams.count < configuration.maximumStreams else {
            throw SessionError(.resourceLimit, "yamux session has \(streams.count) streams, the most it allows")
        }
        guard hasRoomForNewStream else {
            throw SessionError(
                .resourceLimit,
                "yamux session's receive windows (\(totalReceiveWindow) bytes) leave no room for another stream's")
        }
        guard unacknowledgedOutbound < configuration.maximumAckBacklog else {
            throw SessionError(
                .resourceLimit,
                "the peer has not acknowledged \(unacknowledgedOutbound) of our streams yet; wait for it to catch up")
        }
        guard nextOutboundID <= UInt64(UInt32.max) else {
            throw SessionError(.resourceLimit, "yamux session used up its stream ids; open a new connection")
        }
        let id = YamuxStreamID(UInt32(nextOutboundID))
        nextOutboundID += 2
        streams[id] = YamuxStream(
            outbound: id, priority: priority, initialReceiveWindow: configuration.initialReceiveWindow)
        totalReceiveWindow += Int(configuration.initialReceiveWindow)
        unacknowledgedOutbound += 1
        enqueueControl(for: id)
        return id
    }

    /// Changes the scheduling priority of `stream` (takes effect from its next frame).
    ///
    /// - Throws: `.streamClosed` if the stream is not live.
    public mutating func setPriority(_ priority: YamuxPriority, for stream: YamuxStreamID) throws(SessionError) {
        try checkActive()
        guard streams[stream] != nil else { throw Self.notLive(stream) }
        // A scheduler entry at the old level is moved when it comes up (see `nextOutboundFrames`).
        streams[stream]!.priority = priority
    }

    /// Queues `bytes` on `stream`. They go out through `nextOutboundFrames` as window and priority
    /// allow.
    ///
    /// Backpressure: the queue holds at most `maximumQueuedBytesPerStream`. A write that does not fit
    /// throws `.resourceLimit` and queues nothing; once the queue has drained to half the cap, the
    /// session emits `.writable(stream)`. `.writable` also follows a write that left the queue more
    /// than half full. It promises half the cap of room: write at most `writableBytes(on:)`.
    ///
    /// - Throws: `.resourceLimit` as above; `.streamClosed` if the stream is not live or `closeWrite`
    ///   was called; the session's error if it failed.
    public mutating func write(_ bytes: ByteBuffer, to stream: YamuxStreamID) throws(SessionError) {
        try checkActive()
        guard let current = streams[stream] else { throw Self.notLive(stream) }
        guard current.sendHalf == .open else {
            throw SessionError(.streamClosed, "yamux stream \(stream) is closed for writing")
        }
        guard bytes.readableBytes > 0 else { return }
        let cap = configuration.maximumQueuedBytesPerStream
        guard bytes.readableBytes <= cap - current.sendQueue.count else {
            streams[stream]!.owesWritable = true
            throw SessionError(
                .resourceLimit,
                "yamux stream \(stream) has \(current.sendQueue.count) bytes queued; \(bytes.readableBytes) more exceed its cap of \(cap): wait for .writable"
            )
        }
        let costBefore = streams[stream]!.sendQueue.memoryCost
        streams[stream]!.sendQueue.append(bytes)
        totalSendQueueCost += streams[stream]!.sendQueue.memoryCost - costBefore
        if streams[stream]!.sendQueue.count > cap / 2 { streams[stream]!.owesWritable = true }
        schedule(stream)
    }

    /// The application has read `byteCount` of the bytes delivered on `stream`. Once half the window
    /// waits to be given back, a window update is queued, and the window may grow (auto-tuning, see
    /// `YamuxReceiveWindow.autoTune`). Bytes of a stream that is gone are ignored (it may have been
    /// reset while the application still read). More than was delivered is a bug in the caller.
    public mutating func consumed(_ byteCount: Int, on stream: YamuxStreamID, now: NIODeadline) -> [YamuxAction] {
        precondition(byteCount >= 0, "consumed a negative byte count")
        guard case .active = state, streams[stream] != nil, byteCount > 0 else { return [] }
        guard let count = UInt32(exactly: byteCount) else {
            preconditionFailure("yamux: consumed \(byteCount) bytes, more than any window")
        }
        queuedOutbound = false
        streams[stream]!.receiveWindow.consume(count)
        let current = streams[stream]!
        if !current.remoteClosed && !current.hasControlEntry && current.receiveWindow.updateIsDue {
            // Growth stops at three quarters of the budget (the rest stays for new streams' initial
            // windows) and within the caller's memory ceiling.
            let room = max(
                0,
                min(
                    configuration.sessionReceiveWindowBudget / 4 * 3 - totalReceiveWindow,
                    memoryLimit == .max ? Int.max : memoryLimit - memoryInUse))
            let limit = min(Int(configuration.maximumReceiveWindow), Int(current.receiveWindow.size) + room)
            let growth = streams[stream]!.receiveWindow.autoTune(now: now, rtt: smoothedRTT, limit: UInt32(limit))
            totalReceiveWindow += Int(growth)
            enqueueControl(for: stream)
            // An RTT probe rides with the update unless one is in flight. Its answer queues behind
            // the data the peer has already sent, so it measures the round trip of the feedback
            // loop under load, which is what auto-tuning must compare the drain time with; an idle
            // ping (the keepalive) would understate it and stop the window short of the link.
            if outstandingPings.isEmpty { sendPing(now: now) }
        }
        return queuedOutbound ? [.outboundReady] : []
    }

    /// Half-closes `stream`: FIN goes out after the bytes already queued. Closing twice does nothing.
    ///
    /// - Throws: `.streamClosed` if the stream is not live; the session's error if it failed.
    public mutating func closeWrite(_ stream: YamuxStreamID) throws(SessionError) {
        try checkActive()
        guard streams[stream] != nil else { throw Self.notLive(stream) }
        guard streams[stream]!.sendHalf == .open else { return }
        streams[stream]!.sendHalf = .finQueued
        schedule(stream)
    }

    /// Resets `stream`: queued bytes are dropped, RST goes out, the state is freed at once (no action
    /// follows). Resetting a stream that is not live does nothing.
    ///
    /// The RST for a stream the peer opened counts as owed to the peer (see
    /// `maximumPendingControlFrames`): a peer that opens streams we reset, and never reads our
    /// answers, would otherwise grow the queue without bound. Past the limit the session fails with
    /// `.resourceLimit`, reported by the next `receive` or `tick`.
    public mutating func reset(_ stream: YamuxStreamID) {
        guard case .active = state, let current = streams[stream] else { return }
        free(stream)
        if !current.isOutbound {
            do {
                try enqueueOwed(.windowUpdate(stream, delta: 0, flags: .rst))
            } catch {
                fail(error)
            }
        } else if current.synSent {
            enqueue(.windowUpdate(stream, delta: 0, flags: .rst))
        }
    }

    /// Sends GoAway: no new streams either way from now on (an inbound SYN is refused with RST); open
    /// streams go on. Only the first call sends.
    public mutating func goAway(code: YamuxFrame.GoAwayCode = .normal) {
        guard case .active = state, !sentGoAway else { return }
        sentGoAway = true
        enqueue(.goAway(code))
    }

    /// Sends a ping; its answer comes back as `.pingResult(rtt:)`.
    ///
    /// - Throws: `.resourceLimit` with `maximumOutstandingPings` unanswered; the session's error if it
    ///   failed.
    public mutating func ping(now: NIODeadline) throws(SessionError) {
        try checkActive()
        guard outstandingPings.count < configuration.maximumOutstandingPings else {
            throw SessionError(.resourceLimit, "\(outstandingPings.count) yamux pings are still unanswered")
        }
        sendPing(now: now)
    }

    /// Timers: fails the session when the oldest ping is unanswered for `pingTimeout`; sends a
    /// keepalive ping when `keepaliveInterval` has passed since the last one (the first at once).
    ///
    /// - Throws: `.timeout` when a ping went unanswered (the session has failed); the session's error
    ///   if it failed before.
    public mutating func tick(now: NIODeadline) throws(SessionError) -> [YamuxAction] {
        try checkActive()
        queuedOutbound = false
        if let oldest = outstandingPings.first, now - oldest.sentAt >= configuration.pingTimeout {
            let error = SessionError(
                .timeout,
                "yamux ping \(oldest.opaque) unanswered after \(configuration.pingTimeout.nanoseconds / 1_000_000) ms")
            fail(error)
            throw error
        }
        if let interval = configuration.keepaliveInterval, outstandingPings.isEmpty,
            lastPingSentAt.map({ now - $0 >= interval }) ?? true
        {
            sendPing(now: now)
        }
        return queuedOutbound ? [.outboundReady] : []
    }

    // MARK: - Helpers shared by the extensions

    func checkActive() throws(SessionError) {
        if case .failed(let error) = state { throw error }
    }

    static func notLive(_ stream: YamuxStreamID) -> SessionError {
        SessionError(.streamClosed, "yamux stream \(stream) is closed or was reset")
    }

    /// Ends the session: every stream and queued frame is dropped; a GoAway tells the peer why.
    mutating func fail(_ error: SessionError) {
        guard case .active = state else { return }
        state = .failed(error)
        streams.removeAll()
        totalReceiveWindow = 0
        totalSendQueueCost = 0
        waitingForBudget.removeAll()
        control.removeAll()
        owedControlFrames = 0
        staleEntries = 0
        scheduler = YamuxScheduler(quantumUnit: configuration.maximumFramePayload + YamuxFrame.headerSize)
        outstandingPings.removeAll()
        let code: YamuxFrame.GoAwayCode =
            switch error.kind {
            case .protocolViolation, .flowControlViolation, .messageTooLarge, .resourceLimit: .protocolError
            default: .internalError
            }
        control.append(.frame(.goAway(code), owed: false))
    }

    /// Frees a stream's state (both FINs, or RST either way).
    mutating func free(_ stream: YamuxStreamID) {
        guard let removed = streams.removeValue(forKey: stream) else { return }
        totalReceiveWindow -= Int(removed.receiveWindow.size)
        totalSendQueueCost -= removed.sendQueue.memoryCost
        if removed.isOutbound && !removed.acknowledged { unacknowledgedOutbound -= 1 }
        if !removed.isOutbound { closedInbound.insert(stream) }
        // Its control and scheduler entries, if any, are skipped when they come up. A peer that
        // opens and resets streams while not reading could pile them up, so once they make up half
        // the queues they are swept out: the queues stay within twice their live entries.
        if removed.hasControlEntry { staleEntries += 1 }
        if removed.isScheduled { staleEntries += 1 }
        if staleEntries > 64 && 2 * staleEntries > control.count + scheduler.count {
            control = CircularBuffer(
                control.filter { entry in
                    guard case .stream(let id) = entry else { return true }
                    return streams[id] != nil
                })
            scheduler.removeAll { streams[$0] == nil }
            staleEntries = 0
        }
    }

    /// Whether a new stream's initial window fits the session's receive budget and `memoryLimit`.
    var hasRoomForNewStream: Bool {
        let initial = Int(configuration.initialReceiveWindow)
        return totalReceiveWindow + initial <= configuration.sessionReceiveWindowBudget
            && (memoryLimit == .max || memoryInUse + initial <= memoryLimit)
    }

    mutating func sendPing(now: NIODeadline) {
        let opaque = nextPingOpaque
        nextPingOpaque &+= 1
        outstandingPings.append(OutstandingPing(opaque: opaque, sentAt: now))
        lastPingSentAt = now
        enqueue(.ping(opaque: opaque, ack: false))
    }
}
