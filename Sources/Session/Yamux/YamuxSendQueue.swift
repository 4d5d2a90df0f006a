import NIOCore

/// The outbound bytes of one stream that wait for the socket or for window: the caller's buffers in
/// order, sliced (not copied) into frames; small buffers are gathered into one frame.
///
/// Memory is counted at what the buffers cost, not only their payload (`memoryCost`): a `ByteBuffer`
/// keeps its whole storage alive, so a 32-byte ping echo sliced from a 256 KiB socket read buffer
/// would pin 256 KiB. Two rules keep the cost within about twice the payload: small buffers are
/// gathered into the last queued one when it is small too (one storage per ~4 KiB, not one per
/// write), and a buffer whose storage is mostly not its own bytes is copied out when queued.
struct YamuxSendQueue: Sendable {
    /// A front buffer smaller than this is gathered with the following ones into one frame; a larger
    /// one goes out alone, uncopied. Below a few KiB the per-frame cost (header, scheduling, the
    /// peer's bookkeeping) outweighs copying; above it copying costs more than it saves.
    static let gatherBelow = 4096
    /// What one queued buffer costs beside its storage: the storage object, its allocation header and
    /// the queue slot (measured as about 100 bytes on 64-bit Linux; rounded up).
    static let bufferOverhead = 128

    private var chunks = CircularBuffer<ByteBuffer>()
    /// Bytes queued.
    private(set) var count = 0
    /// What the queued buffers cost in memory: their storage capacities plus `bufferOverhead` each.
    /// (Storage shared by several queued slices is counted once per slice: an overestimate.)
    private(set) var memoryCost = 0

    var isEmpty: Bool { count == 0 }

    static func cost(of buffer: ByteBuffer) -> Int { buffer.storageCapacity + bufferOverhead }

    /// Queues `bytes` (empty buffers are dropped).
    mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        var bytes = bytes
        count += bytes.readableBytes
        if bytes.readableBytes < Self.gatherBelow, let last = chunks.indices.last,
            chunks[last].readableBytes < Self.gatherBelow
        {
            // Gathered into the last small buffer (copy-on-write makes it a storage of our own).
            memoryCost -= Self.cost(of: chunks[last])
            chunks[last].writeBuffer(&bytes)
            memoryCost += Self.cost(of: chunks[last])
            return
        }
        if bytes.storageCapacity > 2 * bytes.readableBytes + Self.gatherBelow {
            // Mostly someone else's bytes (a slice of a read buffer, the tail of a large chunk):
            // queue a copy instead of pinning the whole storage.
            var copy = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
            copy.writeBuffer(&bytes)
            bytes = copy
        }
        memoryCost += Self.cost(of: bytes)
        chunks.append(bytes)
    }

    /// Takes up to `maximum` bytes from the front, as one buffer.
    mutating func dequeue(upTo maximum: Int) -> ByteBuffer {
        precondition(maximum > 0 && !isEmpty, "yamux send queue: dequeue(upTo: \(maximum)) of \(count) bytes")
        var first = chunks.removeFirst()
        // The common case: the front buffer fills the frame, is large, or is all there is. No copy.
        if first.readableBytes >= maximum || first.readableBytes >= Self.gatherBelow || chunks.isEmpty {
            let taken = first.readSlice(length: min(maximum, first.readableBytes))!
            if first.readableBytes > 0 { chunks.prepend(first) } else { memoryCost -= Self.cost(of: first) }
            count -= taken.readableBytes
            return taken
        }
        // Several small writes: gather them into one frame rather than pay a header for each.
        var gathered = ByteBufferAllocator().buffer(capacity: min(maximum, count))
        memoryCost -= Self.cost(of: first)
        gathered.writeBuffer(&first)
        while gathered.readableBytes < maximum, var next = chunks.popFirst() {
            var part = next.readSlice(length: min(next.readableBytes, maximum - gathered.readableBytes))!
            gathered.writeBuffer(&part)
            if next.readableBytes > 0 { chunks.prepend(next) } else { memoryCost -= Self.cost(of: next) }
        }
        count -= gathered.readableBytes
        return gathered
    }

    /// Drops everything queued (the stream was reset).
    mutating func removeAll() {
        chunks.removeAll()
        count = 0
        memoryCost = 0
    }
}
