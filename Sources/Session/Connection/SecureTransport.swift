import NIOCore

/// The Noise transport phase of an upgraded connection: the two cipher states after `Split()`,
/// the framing (`uint16 length ‖ message`) and rekeying. A value type without I/O or clock: the
/// caller passes the time in where the rekey policy needs it.
///
/// Made by `ConnectionUpgrade` when the handshake completes; `SecureConnectionHandler` owns it
/// from establishment on.
public struct SecureTransport: Sendable {
    private var send: NoiseCipherState
    private var receive: NoiseCipherState
    /// Our rekeying; `nil` when either peer did not announce it (then empty messages are ignored).
    private let rekeyPolicy: NoiseRekeyPolicy?
    private var sentSinceRekey = 0
    private var lastRekey: NIODeadline
    /// Rekeys of our sending direction, and of the peer's.
    public private(set) var rekeysSent = 0
    public private(set) var rekeysReceived = 0

    /// Both peers announced rekeying: empty transport messages are rekey signals.
    public var rekeyAgreed: Bool { rekeyPolicy != nil }

    /// - Parameters:
    ///   - rekeyPolicy: our policy when both peers announced rekeying, else `nil`.
    ///   - now: the time the handshake completed (the interval rule counts from it).
    init(send: NoiseCipherState, receive: NoiseCipherState, rekeyPolicy: NoiseRekeyPolicy?, now: NIODeadline) {
        self.send = send
        self.receive = receive
        self.rekeyPolicy = rekeyPolicy
        self.lastRekey = now
    }

    /// One Noise message: `uint16 length ‖ body`. A 2-byte length can never exceed 65535, the Noise
    /// limit, so the buffered amount per message is bounded by construction.
    public static func readFrame(_ buffer: inout ByteBuffer) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard buffer.readableBytes >= 2 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        return buffer.readSlice(length: Int(length))
    }

    /// Opens one transport message. With rekeying agreed an empty message is the peer's rekey
    /// signal: our receiving key follows and `nil` is returned; without, an empty message carries
    /// nothing and `nil` is returned too.
    /// - Throws: `SessionError(.decryptionFailed)` (or the cipher's error) on a forged or damaged
    ///   message; the connection must then be closed.
    public mutating func open(_ message: ByteBuffer, allocator: ByteBufferAllocator) throws(SessionError) -> ByteBuffer?
    {
        let opened = try receive.openFrame(message, allocator: allocator)
        guard opened.readableBytes == 0 else { return opened }
        if rekeyAgreed {
            receive.rekey()
            rekeysReceived += 1
        }
        return nil
    }

    /// Seals everything readable in `pending` into framed transport messages of at most 65519
    /// bytes of plaintext each, rekeying first where the policy says so.
    /// - Parameter now: read only when rekeying is agreed (the interval rule).
    public mutating func seal(
        _ pending: inout ByteBuffer, now: @autoclosure () -> NIODeadline, allocator: ByteBufferAllocator
    ) throws(SessionError) -> ByteBuffer {
        let maximum = NoiseCipherState.maximumPlaintextLength
        let messages = (pending.readableBytes + maximum - 1) / maximum
        var output = allocator.buffer(capacity: pending.readableBytes + messages * (2 + NoiseCipherState.tagLength))
        var time: NIODeadline?
        while pending.readableBytes > 0 {
            if let policy = rekeyPolicy {
                if time == nil { time = now() }
                if sentSinceRekey >= policy.messages || (sentSinceRekey > 0 && time! - lastRekey >= policy.interval) {
                    // The signal goes under the old key; everything after it under the new one.
                    try send.sealFrame(ByteBuffer(), into: &output)
                    send.rekey()
                    sentSinceRekey = 0
                    lastRekey = time!
                    rekeysSent += 1
                }
            }
            let chunk = pending.readSlice(length: min(pending.readableBytes, maximum))!
            try send.sealFrame(chunk, into: &output)
            sentSinceRekey += 1
        }
        return output
    }

    /// `seal(_:now:allocator:)` for plaintext given as pieces, taken from `pending` in order: what
    /// is sealed is their concatenation, cut into the same messages, but no piece is copied to join
    /// it to the next (see `NoiseCipherState.sealFrame(gathering:into:)`). `byteCount` is the
    /// readable bytes of all pieces; `pending` is empty afterwards.
    public mutating func seal(
        gathering pending: inout CircularBuffer<ByteBuffer>, byteCount: Int, now: @autoclosure () -> NIODeadline,
        allocator: ByteBufferAllocator
    ) throws(SessionError) -> ByteBuffer {
        let maximum = NoiseCipherState.maximumPlaintextLength
        let messages = (byteCount + maximum - 1) / maximum
        var output = allocator.buffer(capacity: byteCount + messages * (2 + NoiseCipherState.tagLength))
        var time: NIODeadline?
        var unsealed = byteCount
        var parts: [ByteBuffer] = []
        parts.reserveCapacity(4)
        while unsealed > 0 {
            if let policy = rekeyPolicy {
                if time == nil { time = now() }
                if sentSinceRekey >= policy.messages || (sentSinceRekey > 0 && time! - lastRekey >= policy.interval) {
                    try send.sealFrame(ByteBuffer(), into: &output)
                    send.rekey()
                    sentSinceRekey = 0
                    lastRekey = time!
                    rekeysSent += 1
                }
            }
            // The next message: whole pieces while they fit, then the head of the next one.
            var room = min(unsealed, maximum)
            unsealed -= room
            parts.removeAll(keepingCapacity: true)
            while room > 0 {
                let size = pending[pending.startIndex].readableBytes
                if size <= room {
                    parts.append(pending.removeFirst())
                    room -= size
                } else {
                    parts.append(pending[pending.startIndex].readSlice(length: room)!)
                    room = 0
                }
            }
            try send.sealFrame(gathering: parts, into: &output)
            sentSinceRekey += 1
        }
        pending.removeAll(keepingCapacity: true)
        return output
    }
}
