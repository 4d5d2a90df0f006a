import NIOCore

/// The application-facing state of one stream; lives on the connection's event loop.
final class StreamState {
    enum PendingWrite {
        case data(ByteBuffer, CheckedContinuation<Void, Error>)
        /// FIN after what is queued; no continuation when the stream was abandoned.
        case close(CheckedContinuation<Void, Error>?)
    }

    var inbound = CircularBuffer<ByteBuffer>()
    var reader: CheckedContinuation<[ByteBuffer]?, Error>?
    var pendingWrites = CircularBuffer<PendingWrite>()
    var remoteClosed = false
    var fullyClosed = false
    var writeClosed = false
    /// Its user is gone: inbound bytes are credited and dropped, the state is freed on close.
    var abandoned = false
    var error: Error?

    /// Queues bytes no reader waits for. Their count is bounded by the stream's receive window, but
    /// a `ByteBuffer` keeps its whole storage alive: a 1-byte frame left as a view of a 256 KiB
    /// socket read buffer pins 256 KiB. So a small chunk is gathered into the last queued one when
    /// that is small too, and a chunk whose storage is mostly other bytes is copied out: queued
    /// memory stays within about twice the bytes (plus one storage per 4 KiB).
    static let gatherBelow = 4096

    func queueUnread(_ bytes: ByteBuffer) {
        var bytes = bytes
        if bytes.readableBytes < Self.gatherBelow, let last = inbound.indices.last,
            inbound[last].readableBytes < Self.gatherBelow
        {
            inbound[last].writeBuffer(&bytes)
            return
        }
        if bytes.storageCapacity > 2 * bytes.readableBytes + Self.gatherBelow {
            var copy = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
            copy.writeBuffer(&bytes)
            bytes = copy
        }
        inbound.append(bytes)
    }
}

/// Node memory a connection holds reserved in the resource manager, in granules.
struct ConnectionMemory {
    var reserved = 0
    /// The node refused the last reservation; not asked again before the next tick.
    var starved = false
    /// The session's memory refusals already reported.
    var reportedMemoryRefusals = 0

    /// Whether the session is within a granule of what is reserved (cheap: checked per frame).
    func needsReservation(inUse: Int) -> Bool {
        !starved && inUse + ResourceManager.memoryGranule > reserved
    }

    /// How much to reserve (positive) or give back (negative): one granule of headroom, given back
    /// only beyond two (hysteresis, so a connection at a boundary does not take and give back on
    /// every frame). Multiples of the granule.
    func change(inUse: Int) -> Int {
        let granule = ResourceManager.memoryGranule
        let wanted = (inUse + granule + granule - 1) / granule * granule
        if wanted > reserved { return starved ? 0 : wanted - reserved }
        if reserved - wanted >= 2 * granule { return wanted + granule - reserved }
        return 0
    }
}
