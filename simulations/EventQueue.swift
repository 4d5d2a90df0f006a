/// The agenda of the discrete-event simulator: actions ordered by virtual time, actions at the same
/// time in the order they were scheduled (so a run is deterministic). A binary min-heap.
struct EventQueue<Action> {
    private struct Entry {
        let time: UInt64
        let sequence: UInt64
        let action: Action

        func precedes(_ other: Entry) -> Bool {
            time != other.time ? time < other.time : sequence < other.sequence
        }
    }

    private var heap: [Entry] = []
    private var sequence: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    /// When the earliest action is due.
    var nextTime: UInt64? { heap.first?.time }

    /// Adds `action`, due at `time` (virtual nanoseconds).
    mutating func schedule(at time: UInt64, _ action: Action) {
        heap.append(Entry(time: time, sequence: sequence, action: action))
        sequence &+= 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest action.
    mutating func popFirst() -> (time: UInt64, action: Action)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let first = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { break }
            let right = left + 1
            var smallest = left
            if right < heap.count, heap[right].precedes(heap[left]) { smallest = right }
            guard heap[smallest].precedes(heap[parent]) else { break }
            heap.swapAt(smallest, parent)
            parent = smallest
        }
        return (first.time, first.action)
    }
}
