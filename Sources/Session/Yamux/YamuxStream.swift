import NIOCore

/// The state of one live stream inside a `YamuxSession`: both windows, the outbound queue, and how far
/// each half has got.
///
/// yamux spec, "Closing a stream": "either side sends a data or window update frame along with the
/// FIN flag. This does a half-close ... Once both sides have closed the connection, the stream is
/// closed. Alternatively, if an error occurs, the RST flag can be used to hard close a stream
/// immediately." A stream is freed when both FINs went (`isFinished`) or on either side's RST.
struct YamuxStream: Sendable {
    /// Our sending half.
    enum SendHalf: Hashable, Sendable {
        case open
        /// `closeWrite` was called: FIN goes out right after the queued bytes.
        case finQueued
        /// FIN sent.
        case closed
    }

    let id: YamuxStreamID
    /// Whether we opened it.
    let isOutbound: Bool
    var priority: YamuxPriority
    /// What the peer lets us send. yamux spec, "Flow Control": both sides start at 256 KiB; a SYN or
    /// ACK may carry a window update granting more.
    var sendWindow = YamuxWindow(size: YamuxConfiguration.specInitialWindow)
    var receiveWindow: YamuxReceiveWindow
    var sendQueue = YamuxSendQueue()
    var sendHalf = SendHalf.open
    /// The peer sent FIN.
    var remoteClosed = false
    /// Outbound: the peer's ACK arrived. Inbound: always true.
    var acknowledged: Bool
    /// Flags our next window update for this stream must carry: SYN (outbound, not yet announced) or
    /// ACK (inbound, not yet acknowledged).
    var pendingFlags: YamuxFrame.Flags
    /// Whether our SYN went out. An RST for a stream the peer never heard of would be a protocol
    /// error on its side, so a stream reset before its SYN left sends nothing.
    var synSent: Bool
    /// Whether the stream has an entry in the session's control queue (at most one).
    var hasControlEntry = false
    /// Whether the stream has an entry in the scheduler (at most one).
    var isScheduled = false
    /// Whether `.writable` is owed once the queue drains to half its cap.
    var owesWritable = false

    /// A stream we open: its SYN is owed.
    init(outbound id: YamuxStreamID, priority: YamuxPriority, initialReceiveWindow: UInt32) {
        self.id = id
        self.isOutbound = true
        self.priority = priority
        self.receiveWindow = YamuxReceiveWindow(initialSize: initialReceiveWindow)
        self.acknowledged = false
        self.pendingFlags = .syn
        self.synSent = false
    }

    /// A stream the peer opened: its ACK is owed.
    init(inbound id: YamuxStreamID, priority: YamuxPriority, initialReceiveWindow: UInt32) {
        self.id = id
        self.isOutbound = false
        self.priority = priority
        self.receiveWindow = YamuxReceiveWindow(initialSize: initialReceiveWindow)
        self.acknowledged = true
        self.pendingFlags = .ack
        self.synSent = true
    }

    /// Whether the stream may send a data frame now: bytes and window, or a FIN that waits for
    /// nothing (a FIN carries no bytes, so it needs no window).
    var hasDataToSend: Bool {
        sendQueue.isEmpty ? sendHalf == .finQueued : sendWindow.size > 0
    }

    /// Both halves closed with FIN: the stream can be freed.
    var isFinished: Bool { sendHalf == .closed && remoteClosed }

    /// The window update this stream owes: SYN or ACK, and the credit the application freed (none once
    /// the peer has closed its half: it sends nothing more). `nil` if it owes nothing.
    ///
    /// The SYN and ACK travel alone on a window update, never with FIN or RST: py-libp2p 0.8.1 ignores
    /// FIN and RST on a frame that carries ACK.
    mutating func takeControlFrame() -> YamuxFrame? {
        let delta = remoteClosed ? 0 : receiveWindow.takePendingCredit()
        guard delta > 0 || !pendingFlags.isEmpty else { return nil }
        let frame = YamuxFrame.windowUpdate(id, delta: delta, flags: pendingFlags)
        if pendingFlags.contains(.syn) { synSent = true }
        pendingFlags = []
        return frame
    }

    /// The next data frame: up to `maximumPayload` queued bytes within the send window, with FIN when
    /// it empties the queue after `closeWrite`. `nil` if the stream may send nothing now.
    mutating func takeDataFrame(maximumPayload: Int) -> YamuxFrame? {
        precondition(maximumPayload > 0)
        guard hasDataToSend else { return nil }
        var payload = ByteBuffer()
        if !sendQueue.isEmpty {
            payload = sendQueue.dequeue(upTo: min(maximumPayload, Int(sendWindow.size)))
            sendWindow.spend(UInt32(payload.readableBytes))
        }
        var flags: YamuxFrame.Flags = []
        if sendQueue.isEmpty && sendHalf == .finQueued {
            flags.insert(.fin)
            sendHalf = .closed
        }
        return YamuxFrame.data(id, payload, flags: flags)
    }
}
