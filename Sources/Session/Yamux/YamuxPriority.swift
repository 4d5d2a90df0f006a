/// The local scheduling priority of a stream's outbound data. yamux has no priorities on the wire;
/// these only decide, among our streams that have data and window, whose data goes out next.
///
/// The four levels share the link by weighted fair queueing (deficit round robin) with weights
/// 8 : 4 : 2 : 1, so a saturated higher level gets more, but a lower level is never starved.
/// Control frames (window updates, pings, SYN/ACK/RST) always go before any data.
public enum YamuxPriority: Int, CaseIterable, Hashable, Sendable, Comparable {
    /// Weight 8: interactive traffic (RPC requests and replies, pings, DHT queries).
    case highest = 0
    /// Weight 4.
    case high = 1
    /// Weight 2: the default for streams we open and accept.
    case normal = 2
    /// Weight 1: bulk transfers.
    case low = 3

    /// The share of the link a saturated level gets relative to the others.
    public var weight: Int {
        switch self {
        case .highest: 8
        case .high: 4
        case .normal: 2
        case .low: 1
        }
    }

    /// `highest` sorts first.
    public static func < (lhs: YamuxPriority, rhs: YamuxPriority) -> Bool { lhs.rawValue < rhs.rawValue }
}
