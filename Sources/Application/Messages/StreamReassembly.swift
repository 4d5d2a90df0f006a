import Resolution

/// Puts STREAM parts back in order (spec/messages.md §5.3): per (sender, stream id) the next
/// expected sequence, and the parts that came early, held up to a bound. A pure state machine:
/// parts and time in, parts ready for delivery out. `Part` is what is held and handed back (the
/// service holds the signed message; tests the bare one).
public struct StreamReassembly<Part: Sendable>: Sendable {
    public typealias Configuration = StreamReassemblyConfiguration

    struct Key: Hashable, Sendable {
        let sender: AgentName
        let streamID: MessageID
    }

    struct Stream: Sendable {
        var next: UInt64 = 0
        var held: [UInt64: Part] = [:]
        /// The sequence of the part marked `stream_end`, once seen.
        var end: UInt64?
        var lastActivity: UInt64
    }

    public let configuration: Configuration
    private var streams: [Key: Stream] = [:]
    private var perSender: [AgentName: Int] = [:]

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Open streams.
    public var openStreams: Int { streams.count }

    /// Takes a verified STREAM part (`message` is its content) at `now` (ms) and returns the parts
    /// now deliverable, in order (empty when the part is held for later).
    /// - Throws: `.badStream` or `.busy`; nothing changes then.
    public mutating func receive(_ held: Part, message: AgentMessage, now: UInt64) throws(MessageError) -> [Part] {
        guard case .stream(let part) = message.kind else {
            preconditionFailure("StreamReassembly.receive takes STREAM parts only")
        }
        let key = Key(sender: message.sender, streamID: part.streamID)
        var stream: Stream
        if let existing = streams[key] {
            stream = existing
        } else {
            guard perSender[message.sender, default: 0] < configuration.maximumStreamsPerSender else {
                throw MessageError(
                    .busy, "\(message.sender) has \(configuration.maximumStreamsPerSender) streams open here")
            }
            guard streams.count < configuration.maximumStreams else {
                throw MessageError(.busy, "\(configuration.maximumStreams) streams are open here")
            }
            stream = Stream(lastActivity: now)
        }
        let label = "stream \(part.streamID) part \(part.sequence)"
        guard part.sequence >= stream.next, stream.held[part.sequence] == nil else {
            throw MessageError(.badStream, "\(label) was received already")
        }
        if let end = stream.end, part.sequence > end {
            throw MessageError(.badStream, "\(label) comes after the part \(end) that ended the stream")
        }
        if part.isEnd, let highest = stream.held.keys.max(), highest > part.sequence {
            throw MessageError(.badStream, "\(label) ends the stream, but part \(highest) was received")
        }
        guard part.sequence - stream.next < configuration.window else {
            throw MessageError(
                .badStream, "\(label) is \(part.sequence - stream.next) ahead of the next expected part \(stream.next)")
        }
        if part.sequence != stream.next, stream.held.count >= configuration.maximumHeldPerStream {
            throw MessageError(.busy, "\(label): \(stream.held.count) parts are held waiting for part \(stream.next)")
        }
        if streams[key] == nil { perSender[message.sender, default: 0] += 1 }
        if part.isEnd { stream.end = part.sequence }
        stream.lastActivity = now
        stream.held[part.sequence] = held
        var ready: [Part] = []
        while let next = stream.held.removeValue(forKey: stream.next) {
            ready.append(next)
            stream.next += 1
        }
        if let end = stream.end, stream.next > end {
            remove(key)
        } else {
            streams[key] = stream
        }
        return ready
    }

    /// Drops streams idle for longer than the timeout at `now` (ms); returns how many.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int {
        let idle = streams.filter {
            now > $0.value.lastActivity && now - $0.value.lastActivity > configuration.idleTimeout
        }
        for key in idle.keys { remove(key) }
        return idle.count
    }

    private mutating func remove(_ key: Key) {
        guard streams.removeValue(forKey: key) != nil else { return }
        let remaining = perSender[key.sender, default: 1] - 1
        perSender[key.sender] = remaining == 0 ? nil : remaining
    }
}

/// The limits of `StreamReassembly` (spec/messages.md §5.3).
public struct StreamReassemblyConfiguration: Hashable, Sendable {
    /// A part this many or more ahead of the next expected one is `bad_stream`.
    public var window: UInt64 = 16
    /// Parts held per stream.
    public var maximumHeldPerStream = 16
    /// Open streams per sender, and per node.
    public var maximumStreamsPerSender = 16
    public var maximumStreams = 256
    /// A stream with no new part for this long (ms) is dropped.
    public var idleTimeout: UInt64 = 60_000

    public init() {}
}
