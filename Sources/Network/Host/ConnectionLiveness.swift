import NIOCore

/// When a connection counts as idle, for trimming and for the idle timeout (spec/session.md §5).
///
/// A connection is idle when it carries no stream, or when none of its streams moved a frame for
/// `streamQuietPeriod`: an open stream on which nothing happens (a ping or perf stream the peer
/// opened and never used, a handler's stream the peer never closes) must not keep a connection
/// "busy" for ever. Attack prevented: 512 peer ids, each holding one silent stream, would otherwise
/// keep every connection slot out of reach of trimming and of the idle timeout. A part of the node
/// that needs a quiet connection kept (a reservation, a conversation waiting for an answer)
/// protects its peer instead (`Host.protect`).
///
/// Pure rules over times passed in; the connection keeps `lastStreamTraffic` (the last frame on
/// any stream, either way, or the establishment of the connection).
struct ConnectionLiveness: Sendable {
    /// A connection with open streams counts as idle once none of them moved a frame for this long.
    var streamQuietPeriod: TimeAmount
    /// An idle connection is closed after this long without stream traffic (nil: never).
    var idleTimeout: TimeAmount?

    /// Whether the connection counts as idle now (a trimming candidate, once past its grace period).
    func isIdle(streams: Int, lastStreamTraffic: NIODeadline, now: NIODeadline) -> Bool {
        streams == 0 || now - lastStreamTraffic >= streamQuietPeriod
    }

    /// Whether the idle timeout closes the connection now (protection aside).
    func idleTimeoutExpired(streams: Int, lastStreamTraffic: NIODeadline, now: NIODeadline) -> Bool {
        guard let idleTimeout else { return false }
        // With streams open, the quiet period must pass too (a configured idle timeout shorter than
        // the quiet period does not close a connection whose stream is merely slow).
        let required = streams == 0 ? idleTimeout : max(idleTimeout, streamQuietPeriod)
        return now - lastStreamTraffic >= required
    }
}
