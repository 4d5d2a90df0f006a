import NIOCore

/// Limits and defaults of a yamux session. Every default is named here with where it comes from.
public struct YamuxConfiguration: Hashable, Sendable {
    /// yamux spec, "Flow Control": "When Yamux is initially starts each stream with a 256KiB window
    /// size." Both sides assume it; more is announced with a window update on the SYN or ACK.
    public static let specInitialWindow: UInt32 = 256 * 1024

    /// yamux spec, "ACK backlog & backpressure": implementations "SHOULD at most allow an ACK backlog
    /// of 256 streams".
    public static let specMaximumAckBacklog = 256

    /// The largest frame, header included, that py-libp2p 0.8.1 and go-yamux send (64 KiB). We never
    /// send a larger one.
    public static let largestInteroperableFrame = 64 * 1024

    /// Auto-tuning doubles a stream's receive window when consecutive window updates of that stream
    /// are less than this many smoothed RTTs apart (see `YamuxReceiveWindow.autoTune`).
    public static let autoTuneRTTFactor = 2

    /// The receive window each stream starts with. At least `specInitialWindow` (the peer assumes
    /// that much); anything above it is granted in our SYN or ACK. Default: the spec's 256 KiB.
    public var initialReceiveWindow: UInt32 = specInitialWindow

    /// Auto-tuning grows a stream's receive window up to this. Default 16 MiB, as py-libp2p and
    /// go-yamux. It also bounds the payload of an inbound data frame.
    public var maximumReceiveWindow: UInt32 = 16 * 1024 * 1024

    /// The receive windows of all live streams added up, the initial window of each included, stay
    /// within this. The windows bound what the peer may make us hold for the application, so this
    /// bounds the session's inbound memory: an inbound SYN that would exceed it is answered with RST,
    /// and opening a stream beyond it throws `.resourceLimit`. Auto-tuning grows windows only up to
    /// three quarters of it, so that a bulk stream leaves room for new streams. Default 32 MiB: 128
    /// fresh streams, or one stream at the 16 MiB maximum window and 64 fresh ones.
    public var sessionReceiveWindowBudget: Int = 32 * 1024 * 1024

    /// The memory cost of all streams' queued outbound bytes (see `YamuxSendQueue.memoryCost`) stays
    /// about within this: once it is reached, `writableBytes(on:)` is 0 for every stream until the
    /// queues drained to half of it. Default 16 MiB.
    public var sessionSendQueueBudget: Int = 16 * 1024 * 1024

    /// Live streams (both directions). An inbound SYN over the limit is answered with RST; opening
    /// one over it throws `.resourceLimit`. Default 1024.
    public var maximumStreams: Int = 1024

    /// Outbound streams the peer has not acknowledged yet; opening more throws `.resourceLimit`.
    /// Default: the spec's 256.
    public var maximumAckBacklog: Int = specMaximumAckBacklog

    /// The largest payload of a data frame we send. Default 16 KiB: frames stay far below the 64 KiB
    /// py-libp2p uses, so each fits one Noise message (≤ 65519 bytes of plaintext) with room to spare;
    /// the 12-byte header costs 0.07%; and the scheduler switches between streams every 16 KiB, which
    /// keeps a bulk stream from delaying an interactive one by more than 16 KiB of wire time.
    public var maximumFramePayload: Int = 16 * 1024

    /// Outbound bytes queued per stream and not yet sent (waiting for the socket or for window).
    /// A write that would exceed it throws `.resourceLimit`; the writer waits for `.writable`.
    /// Default 1 MiB.
    public var maximumQueuedBytesPerStream: Int = 1024 * 1024

    /// A keepalive ping goes out this long after the previous one (the first at the first `tick`, so
    /// that an RTT is known early for auto-tuning). `nil` disables keepalive. Default 30 s, as
    /// py-libp2p and go-yamux.
    public var keepaliveInterval: TimeAmount? = .seconds(30)

    /// A ping not answered within this fails the session with `.timeout`. Default 10 s, as py-libp2p.
    public var pingTimeout: TimeAmount = .seconds(10)

    /// Pings of ours awaiting an answer at once; `ping(now:)` beyond it throws `.resourceLimit`.
    public var maximumOutstandingPings: Int = 16

    /// Frames the peer made us owe (ping answers, RSTs for refused streams) and that the glue has not
    /// pulled yet. A peer that provokes more without reading ours fails the session with
    /// `.resourceLimit` (the ping-flood / reset-flood attacks). Default 4096.
    public var maximumPendingControlFrames: Int = 4096

    /// How many closed or refused inbound stream ids are remembered, so that the peer's frames still in
    /// flight for them are ignored rather than taken for frames on streams that never existed.
    /// Default 4096.
    public var closedStreamMemory: Int = 4096

    public init() {}

    /// Traps on a configuration that cannot work: a bug in the caller, not in the peer.
    func validate() {
        precondition(
            initialReceiveWindow >= Self.specInitialWindow,
            "yamux initialReceiveWindow must be at least the spec's 256 KiB, which the peer assumes")
        precondition(maximumReceiveWindow >= initialReceiveWindow, "maximumReceiveWindow below initialReceiveWindow")
        precondition(
            sessionReceiveWindowBudget >= Int(initialReceiveWindow),
            "sessionReceiveWindowBudget must hold at least one stream's initial window")
        precondition(sessionSendQueueBudget > 0, "sessionSendQueueBudget must be positive")
        precondition(maximumStreams > 0, "maximumStreams must be positive")
        precondition(maximumAckBacklog > 0, "maximumAckBacklog must be positive")
        precondition(
            maximumFramePayload > 0 && maximumFramePayload + YamuxFrame.headerSize <= Self.largestInteroperableFrame,
            "maximumFramePayload must be in 1...\(Self.largestInteroperableFrame - YamuxFrame.headerSize)")
        precondition(maximumQueuedBytesPerStream > 0, "maximumQueuedBytesPerStream must be positive")
        precondition(keepaliveInterval.map { $0 > .zero } ?? true, "keepaliveInterval must be positive")
        precondition(pingTimeout > .zero, "pingTimeout must be positive")
        precondition(maximumOutstandingPings > 0, "maximumOutstandingPings must be positive")
        precondition(maximumPendingControlFrames > 0, "maximumPendingControlFrames must be positive")
        precondition(closedStreamMemory >= 0, "closedStreamMemory must not be negative")
    }
}
