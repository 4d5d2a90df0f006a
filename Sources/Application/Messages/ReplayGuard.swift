import Identity
import Resolution

/// The receiver's memory of accepted messages (spec/messages.md §5.2): a message whose sender and
/// id were accepted before is `replayed`. Memory is bounded: an entry is kept only while its
/// timestamp is inside the acceptance window (older ones are refused as `too_old` anyway), and at
/// most `capacity` entries are kept. When full, the entry with the oldest timestamp is dropped and
/// the *floor* rises to that timestamp: from then on every message dated at or before the floor is
/// refused as `too_old`, so dropping an entry never lets its message through again.
///
/// Entries are keyed by the sender and the id together, so one sender cannot burn another
/// sender's ids by sending them first. The key is 16 bytes of SHA-256 over
/// `uvarint(len sender) ‖ sender ‖ id`, so an entry costs the same whatever the name's length.
/// A pure value: time is passed in.
public struct ReplayGuard: Sendable {
    struct Key: Hashable, Sendable {
        let high: UInt64
        let low: UInt64

        init(sender: AgentName, id: MessageID) {
            var input: [UInt8] = []
            let name = Array(sender.value.utf8)
            ProtobufWriter.appendVarint(UInt64(name.count), to: &input)
            input.append(contentsOf: name)
            input.append(contentsOf: id.bytes)
            let digest = SHA256.hash(input)
            high = digest[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
            low = digest[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
        }
    }

    /// Entries at most (spec default 65,536: about 4 MiB).
    public let capacity: Int
    /// How long after its timestamp an entry matters, in ms: the acceptance window's maximum age.
    public let maximumAge: UInt64
    /// Accepted keys and their timestamps.
    private var seen: [Key: UInt64] = [:]
    /// The same entries as a min-heap on timestamp (with stale entries for removed keys, skipped
    /// when they surface and compacted when they pile up).
    private var heap: [(timestamp: UInt64, key: Key)] = []
    /// Messages dated at or before this (ms) are refused: their entries may have been dropped.
    public private(set) var floor: UInt64 = 0

    /// - Parameter floor: messages dated at or before it (ms) are refused from the start.
    public init(capacity: Int = 65_536, maximumAge: UInt64 = MessageAcceptance.Policy().maximumAge, floor: UInt64 = 0) {
        precondition(capacity > 0, "a replay guard needs room for at least one entry")
        self.capacity = capacity
        self.maximumAge = maximumAge
        self.floor = floor
    }

    /// Entries held.
    public var count: Int { seen.count }

    /// Checks `sender`/`id`/`timestamp` at `now` (ms) without recording it.
    /// - Throws: `.replayed` for an id seen from this sender, `.tooOld` for a timestamp at or below
    ///   the floor.
    public func check(sender: AgentName, id: MessageID, timestamp: UInt64) throws(MessageError) {
        if seen[Key(sender: sender, id: id)] != nil {
            throw MessageError(.replayed, "message \(id) from \(sender) was accepted before")
        }
        if timestamp <= floor {
            throw MessageError(
                .tooOld,
                "message \(id) from \(sender) is dated at or before \(MessageTime.rfc3339(floor)), the oldest time this receiver's replay window still covers; re-sign it with a fresh timestamp"
            )
        }
    }

    /// Checks and records the message at `now` (ms). Records nothing when it throws.
    public mutating func admit(sender: AgentName, id: MessageID, timestamp: UInt64, now: UInt64) throws(MessageError) {
        expire(now: now)
        try check(sender: sender, id: id, timestamp: timestamp)
        while seen.count >= capacity, let oldest = popOldest() {
            floor = max(floor, oldest.timestamp)
        }
        // The message itself may be the oldest one: then it is dated at or below the new floor.
        if timestamp <= floor {
            throw MessageError(.tooOld, "message \(id) from \(sender) is older than this receiver's full replay window")
        }
        let key = Key(sender: sender, id: id)
        seen[key] = timestamp
        push((timestamp, key))
    }

    /// Forgets an admitted message (its delivery failed, so the sender may send it again).
    public mutating func forget(sender: AgentName, id: MessageID) {
        seen[Key(sender: sender, id: id)] = nil
        if heap.count > 2 * capacity { compact() }
    }

    /// Drops entries too old to matter at `now`.
    public mutating func expire(now: UInt64) {
        while let top = heap.first {
            guard seen[top.key] == top.timestamp else {
                _ = popHeap()
                continue
            }
            guard now > top.timestamp, now - top.timestamp > maximumAge else { return }
            _ = popHeap()
            seen[top.key] = nil
        }
    }

    private mutating func popOldest() -> (timestamp: UInt64, key: Key)? {
        while let top = popHeap() {
            if seen[top.key] == top.timestamp {
                seen[top.key] = nil
                return top
            }
        }
        return nil
    }

    private mutating func compact() {
        heap = seen.map { ($0.value, $0.key) }
        for index in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }

    private mutating func push(_ entry: (timestamp: UInt64, key: Key)) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].timestamp < heap[parent].timestamp else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popHeap() -> (timestamp: UInt64, key: Key)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        if !heap.isEmpty { siftDown(0) }
        return top
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].timestamp < heap[smallest].timestamp { smallest = left }
            if right < heap.count, heap[right].timestamp < heap[smallest].timestamp { smallest = right }
            guard smallest != parent else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
