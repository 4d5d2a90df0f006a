import NIOCore

/// Receive-side flow control of one stream: the credit the peer still has, the bytes the application
/// holds, the bytes it has read that we have not yet given back, and the auto-tuned window size.
///
/// Invariant: `credit.size + unconsumed + pendingCredit == size`. Credit is only ever given back for
/// bytes the application consumed, so the bytes delivered and not yet consumed never exceed `size`,
/// which never exceeds the configured maximum: the inbound memory a peer can make us hold per stream
/// is bounded by construction (the session itself buffers nothing; it delivers each payload at once).
struct YamuxReceiveWindow: Hashable, Sendable {
    /// The window: what the peer may have in flight plus what the application holds.
    private(set) var size: UInt32
    /// What the peer may still send, as it sees it once our updates reached it.
    private(set) var credit: YamuxWindow
    /// Delivered to the application, not yet consumed.
    private(set) var unconsumed: UInt32 = 0
    /// Consumed (or added by growth) and not yet announced in a window update.
    private(set) var pendingCredit: UInt32
    /// Start of the current auto-tuning epoch: the last window update, or the first byte received.
    private(set) var epochStart: NIODeadline?

    /// - Parameter initialSize: at least the spec's 256 KiB; the rest is owed to the peer at once and
    ///   goes out with our SYN or ACK.
    init(initialSize: UInt32) {
        precondition(initialSize >= YamuxConfiguration.specInitialWindow)
        self.size = initialSize
        self.credit = YamuxWindow(size: YamuxConfiguration.specInitialWindow)
        self.pendingCredit = initialSize - YamuxConfiguration.specInitialWindow
    }

    /// Accounts `count` bytes of an inbound data frame.
    ///
    /// - Throws: `.flowControlViolation` if the peer sent more than its credit.
    mutating func receive(_ count: UInt32, now: NIODeadline) throws(SessionError) {
        try credit.consume(count)
        unconsumed += count  // cannot overflow: unconsumed ≤ size by the invariant
        if epochStart == nil { epochStart = now }
    }

    /// The application read `count` of the delivered bytes. More than it holds is a bug in the caller.
    mutating func consume(_ count: UInt32) {
        precondition(count <= unconsumed, "yamux: consumed \(count) bytes but only \(unconsumed) were delivered")
        unconsumed -= count
        pendingCredit += count
    }

    /// Whether a window update is worth sending: at least half the window waits to be given back.
    ///
    /// The spec leaves the moment to implementations ("window update frames should be sent
    /// regularly"). Updating at half a window keeps the peer from ever running dry while the
    /// application keeps up (its credit stays above half a window), and costs one 12-byte frame per
    /// half window instead of one per read.
    var updateIsDue: Bool { pendingCredit > 0 && pendingCredit >= size / 2 }

    /// Auto-tuning, decided each time a window update falls due; starts a new epoch.
    ///
    /// Rule: when the previous update of this stream (or its first byte) is less than
    /// `autoTuneRTTFactor` (2) smoothed RTTs ago, the application drained half a window in about a
    /// round trip: the window, not the reader, limits the stream. Then the window doubles, up to
    /// `limit`, and the new room goes out with the update. A slow reader has long epochs and keeps its
    /// window. Without an RTT (no ping answered yet) nothing grows.
    ///
    /// - Returns: by how much the window grew.
    mutating func autoTune(now: NIODeadline, rtt: TimeAmount?, limit: UInt32) -> UInt32 {
        defer { epochStart = now }
        guard let rtt, let start = epochStart, size < limit,
            now - start < rtt * YamuxConfiguration.autoTuneRTTFactor
        else { return 0 }
        let doubled = size > UInt32.max / 2 ? UInt32.max : size * 2
        let growth = min(doubled, limit) - size
        size += growth
        pendingCredit += growth  // credit + unconsumed + pendingCredit == size still holds
        return growth
    }

    /// Takes everything owed to the peer for a window update, and counts it as the peer's credit.
    mutating func takePendingCredit() -> UInt32 {
        let delta = pendingCredit
        pendingCredit = 0
        credit.grant(delta)  // credit ≤ size ≤ 2^32-1 by the invariant
        return delta
    }
}
