import NIOCore

/// The outbound bytes of one stream that wait for the socket or for window: the caller's buffers in
/// order, sliced (not copied) into frames; small buffers are gathered into one frame.
struct YamuxSendQueue: Sendable {
    /// A front buffer smaller than this is gathered with the following ones into one frame; a larger
    /// one goes out alone, uncopied. Below a few KiB the per-frame cost (header, scheduling, the
    /// peer's bookkeeping) outweighs copying; above it copying costs more than it saves.
    static let gatherBelow = 4096

    private var chunks = CircularBuffer<ByteBuffer>()
    /// Bytes queued.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Queues `bytes` (empty buffers are dropped).
    mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        count += bytes.readableBytes
        chunks.append(bytes)
    }

    /// Takes up to `maximum` bytes from the front, as one buffer.
    mutating func dequeue(upTo maximum: Int) -> ByteBuffer {
        precondition(maximum > 0 && !isEmpty, "yamux send queue: dequeue(upTo: \(maximum)) of \(count) bytes")
        var first = chunks.removeFirst()
        // The common case: the front buffer fills the frame, is large, or is all there is. No copy.
        if first.readableBytes >= maximum || first.readableBytes >= Self.gatherBelow || chunks.isEmpty {
            let taken = first.readSlice(length: min(maximum, first.readableBytes))!
            if first.readableBytes > 0 { chunks.prepend(first) }
            count -= taken.readableBytes
            return taken
        }
        // Several small writes: gather them into one frame rather than pay a header for each.
        var gathered = ByteBufferAllocator().buffer(capacity: min(maximum, count))
        gathered.writeBuffer(&first)
        while gathered.readableBytes < maximum, var next = chunks.popFirst() {
            var part = next.readSlice(length: min(next.readableBytes, maximum - gathered.readableBytes))!
            gathered.writeBuffer(&part)
            if next.readableBytes > 0 { chunks.prepend(next) }
        }
        count -= gathered.readableBytes
        return gathered
    }

    /// Drops everything queued (the stream was reset).
    mutating func removeAll() {
        chunks.removeAll()
        count = 0
    }
}
