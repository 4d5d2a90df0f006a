import NIOCore

/// A bounded memory of the peer's stream ids that were closed, reset or refused. The oldest id is
/// forgotten first, so a peer that churns through streams costs at most `capacity` ids.
///
/// It lets the session tell a late frame for a stream that just ended (a race the spec allows for:
/// both sides may reset or close at once) from a frame for a stream that never existed, and catch a
/// SYN that reuses a recent id.
struct YamuxClosedStreams: Sendable {
    private var members = Set<YamuxStreamID>()
    private var order = CircularBuffer<YamuxStreamID>()
    let capacity: Int
    /// Whether an id was ever forgotten. Until then the memory is exact.
    private(set) var hasForgotten = false

    init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
    }

    var count: Int { order.count }

    func contains(_ id: YamuxStreamID) -> Bool { members.contains(id) }

    mutating func insert(_ id: YamuxStreamID) {
        guard members.insert(id).inserted else { return }
        order.append(id)
        if order.count > capacity {
            members.remove(order.removeFirst())
            hasForgotten = true
        }
    }
}
