import NIOCore

/// Spaces the starts of re-replication work (spec/dht.md §7.2): at most `rate` starts per second,
/// evenly spaced. No credit builds up while idle, so a round that waited (all slots busy on slow
/// peers) does not burst afterwards.
///
/// A value with time passed in: the caller reads the clock and sleeps until the returned deadline
/// (agentd's `DHT`), or schedules the start on its virtual clock (agent-sim).
package struct ReplicationPacer: Sendable {
    /// The gap between two starts: 1 s / rate.
    package let spacing: TimeAmount
    /// The earliest time of the next start; nil before the first.
    private var nextStart: NIODeadline?

    /// - Precondition: `rate` is at least 1 (a configuration bug of ours otherwise).
    package init(perSecond rate: Int) {
        precondition(rate >= 1, "re-replication rate \(rate) must be at least 1 per second")
        spacing = .nanoseconds(1_000_000_000 / Int64(rate))
    }

    /// Reserves the next start at `now` or later and returns when it may happen.
    package mutating func reserve(now: NIODeadline) -> NIODeadline {
        let start = max(now, nextStart ?? now)
        nextStart = start + spacing
        return start
    }
}
