import NIOCore

/// What the session asks its caller (the glue) to do or tells it happened.
public enum YamuxAction: Hashable, Sendable {
    /// The peer opened a stream; it is accepted (our ACK is on its way).
    case streamOpened(YamuxStreamID)
    /// Bytes for the application. Once it has read them, the caller reports it with
    /// `consumed(_:on:now:)`: only then does the peer get the window back.
    case deliver(YamuxStreamID, ByteBuffer)
    /// The peer half-closed the stream (FIN): no more bytes will come.
    case remoteClosedWrite(YamuxStreamID)
    /// The peer reset the stream (RST). Its state is freed; queued outbound bytes are dropped.
    case streamReset(YamuxStreamID)
    /// Both sides sent FIN and our queued bytes are all sent: the stream's state is freed.
    case streamClosed(YamuxStreamID)
    /// The stream's outbound queue has drained to half its cap after a write was refused or filled
    /// it past half: the writer may write again.
    case writable(YamuxStreamID)
    /// A ping of ours was answered after `rtt`.
    case pingResult(rtt: TimeAmount)
    /// The peer sent GoAway: it accepts no new streams. Streams already open go on.
    case goAwayReceived(YamuxFrame.GoAwayCode)
    /// Frames wait to be sent: call `nextOutboundFrames(maximumBytes:)` when the socket is writable.
    case outboundReady
}
