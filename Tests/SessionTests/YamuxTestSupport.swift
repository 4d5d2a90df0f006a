import AgentTesting
import NIOCore

@testable import Session

/// Bytes from spaced hex ("00 01 00 02 …").
func yamuxBytes(_ hex: String) -> [UInt8] {
    try! Hex.decode(hex.filter { !$0.isWhitespace })
}

/// The wire bytes of `frames`.
func yamuxEncode(_ frames: [YamuxFrame]) -> [UInt8] {
    var buffer = ByteBuffer()
    for frame in frames { buffer.writeYamuxFrame(frame) }
    return Array(buffer.readableBytesView)
}

/// `count` bytes of a repeating pattern, so that reordering or loss shows in a comparison.
func yamuxPattern(_ count: Int, seed: UInt8 = 0) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(count)
    for index in 0..<count { buffer.writeInteger(UInt8(truncatingIfNeeded: index &* 31 &+ Int(seed))) }
    return buffer
}

/// The actions without `.outboundReady` (the pair pulls frames anyway).
func yamuxEvents(_ actions: [YamuxAction]) -> [YamuxAction] {
    actions.filter { $0 != .outboundReady }
}

/// A client and a server session wired back to back in memory. Frames cross as encoded bytes (so
/// the codec is exercised too), at a virtual time `now` that tests move by hand.
struct YamuxPair {
    enum Side: Int {
        case client = 0
        case server = 1
        var peer: Side { self == .client ? .server : .client }
    }

    var sessions: [YamuxSession]
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    /// Actions each side reported, in order, without `.outboundReady`.
    var events: [[YamuxAction]] = [[], []]
    /// Frames each side sent.
    var sent: [[YamuxFrame]] = [[], []]
    /// Bytes each side's application got, per stream.
    var received: [[YamuxStreamID: [UInt8]]] = [[:], [:]]
    /// Delivered and not yet consumed, per side and stream (when `autoConsume` is off).
    var unconsumed: [[YamuxStreamID: Int]] = [[:], [:]]
    /// Whether each side's application reads what is delivered at once.
    var autoConsume = [true, true]
    /// Whether `received` keeps the bytes (off for bulk transfers; `receivedCount` still counts).
    var keepsBytes = true
    /// Bytes each side's application got, per stream, counted.
    var receivedCount: [[YamuxStreamID: Int]] = [[:], [:]]

    init(client: YamuxConfiguration = YamuxConfiguration(), server: YamuxConfiguration = YamuxConfiguration()) {
        sessions = [
            YamuxSession(role: .client, configuration: client), YamuxSession(role: .server, configuration: server),
        ]
    }

    var client: YamuxSession {
        get { sessions[0] }
        set { sessions[0] = newValue }
    }
    var server: YamuxSession {
        get { sessions[1] }
        set { sessions[1] = newValue }
    }

    subscript(side: Side) -> YamuxSession {
        get { sessions[side.rawValue] }
        set { sessions[side.rawValue] = newValue }
    }

    func events(_ side: Side) -> [YamuxAction] { events[side.rawValue] }
    func sent(_ side: Side) -> [YamuxFrame] { sent[side.rawValue] }
    func received(_ side: Side, on stream: YamuxStreamID) -> [UInt8] { received[side.rawValue][stream] ?? [] }
    func receivedCount(_ side: Side, on stream: YamuxStreamID) -> Int { receivedCount[side.rawValue][stream] ?? 0 }
    func unconsumed(_ side: Side, on stream: YamuxStreamID) -> Int { unconsumed[side.rawValue][stream] ?? 0 }

    /// Sends everything `side` has to its peer (in batches of `maximumBytes`). Returns the frames sent.
    @discardableResult
    mutating func flush(_ side: Side, maximumBytes: Int = 256 * 1024) throws(SessionError) -> Int {
        var count = 0
        while true {
            let (frames, actions) = sessions[side.rawValue].nextOutboundFrames(maximumBytes: maximumBytes)
            handle(actions, on: side)
            guard !frames.isEmpty else { return count }
            count += frames.count
            sent[side.rawValue] += frames
            var bytes = ByteBuffer()
            for frame in frames { bytes.writeYamuxFrame(frame) }
            let peer = side.peer
            let result = try sessions[peer.rawValue].receive(bytes: &bytes, now: now)
            precondition(bytes.readableBytes == 0)
            handle(result, on: peer)
        }
    }

    /// Lets both sides talk until neither has anything to send.
    mutating func run() throws(SessionError) {
        while try flush(.client) + flush(.server) > 0 {}
    }

    /// `side`'s application reads `count` bytes of `stream`.
    mutating func consume(_ side: Side, _ count: Int, on stream: YamuxStreamID) {
        unconsumed[side.rawValue][stream, default: 0] -= count
        precondition(unconsumed[side.rawValue][stream]! >= 0)
        handle(sessions[side.rawValue].consumed(count, on: stream, now: now), on: side)
    }

    /// Writes as much of `bytes` as the stream takes now; returns how much.
    @discardableResult
    mutating func write(_ side: Side, _ bytes: ByteBuffer, on stream: YamuxStreamID) throws(SessionError) -> Int {
        let count = min(bytes.readableBytes, sessions[side.rawValue].writableBytes(on: stream))
        guard count > 0 else { return 0 }
        try sessions[side.rawValue].write(bytes.getSlice(at: bytes.readerIndex, length: count)!, to: stream)
        return count
    }

    /// A ping from `side` answered after `rtt` of virtual time.
    mutating func measureRTT(from side: Side, rtt: TimeAmount) throws(SessionError) {
        try sessions[side.rawValue].ping(now: now)
        try flush(side)
        now = now + rtt
        try flush(side.peer)
    }

    private mutating func handle(_ actions: [YamuxAction], on side: Side) {
        for action in actions where action != .outboundReady {
            events[side.rawValue].append(action)
            guard case .deliver(let stream, let bytes) = action else { continue }
            receivedCount[side.rawValue][stream, default: 0] += bytes.readableBytes
            if keepsBytes { received[side.rawValue][stream, default: []] += Array(bytes.readableBytesView) }
            if autoConsume[side.rawValue] {
                handle(sessions[side.rawValue].consumed(bytes.readableBytes, on: stream, now: now), on: side)
            } else {
                unconsumed[side.rawValue][stream, default: 0] += bytes.readableBytes
            }
        }
    }
}

/// Feeds `frames` to `session` as the peer; returns the actions without `.outboundReady`.
func yamuxFeed(_ session: inout YamuxSession, _ frames: [YamuxFrame], now: NIODeadline = .uptimeNanoseconds(0))
    throws(SessionError) -> [YamuxAction]
{
    var actions: [YamuxAction] = []
    for frame in frames { actions += try session.receive(frame, now: now) }
    return yamuxEvents(actions)
}

/// Everything `session` has to send, in one list.
func yamuxDrain(_ session: inout YamuxSession, maximumBytes: Int = 1 << 20) -> [YamuxFrame] {
    var all: [YamuxFrame] = []
    while true {
        let (frames, _) = session.nextOutboundFrames(maximumBytes: maximumBytes)
        if frames.isEmpty { return all }
        all += frames
    }
}
