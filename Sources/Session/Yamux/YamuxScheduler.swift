import NIOCore

/// Picks which stream sends the next data frame: deficit round robin across the four priority levels
/// (weights 8 : 4 : 2 : 1), plain round robin among the streams of one level.
///
/// Each visit to a level with waiting streams adds `weight × quantumUnit` bytes to its deficit; the
/// level sends while its deficit is positive, each frame charged at its wire size (header included).
/// A frame may overdraw the deficit; the debt is paid from the next quantum, so over many rounds each
/// saturated level gets exactly its weight's share of the bytes. A level that runs dry forfeits its
/// deficit, so idle time cannot be saved up for a burst later.
///
/// Entries are stream ids; the session checks on each pick whether the stream still exists, is still
/// at that level and still has something to send, and drops or moves stale entries. Each stream has at
/// most one entry (the session keeps an `isScheduled` flag), so the rings hold at most one id per live
/// stream.
struct YamuxScheduler: Sendable {
    private var rings = [CircularBuffer<YamuxStreamID>](
        repeating: CircularBuffer(), count: YamuxPriority.allCases.count)
    private var deficits = [Int](repeating: 0, count: YamuxPriority.allCases.count)
    private var current = 0
    /// Whether the current level already got its quantum for this visit.
    private var visiting = false
    private let quantumUnit: Int

    /// - Parameter quantumUnit: bytes per weight unit and round: the wire size of the largest data
    ///   frame, so a level of weight 1 sends one full frame per round.
    init(quantumUnit: Int) {
        precondition(quantumUnit > 0)
        self.quantumUnit = quantumUnit
    }

    /// Whether no stream waits (stale entries count as waiting until they are picked).
    var isEmpty: Bool { rings.allSatisfy(\.isEmpty) }

    /// Entries waiting, stale ones included.
    var count: Int { rings.reduce(0) { $0 + $1.count } }

    /// Appends `stream` to the ring of `priority`.
    mutating func enqueue(_ stream: YamuxStreamID, at priority: YamuxPriority) {
        rings[priority.rawValue].append(stream)
    }

    /// Removes and returns the entry whose turn it is, or `nil` when no stream waits. The caller sends
    /// at most one frame for it, `charge`s the frame, and `enqueue`s the stream again if it still has
    /// something to send.
    mutating func next() -> (stream: YamuxStreamID, priority: YamuxPriority)? {
        // Each pass either returns or leaves a level. A debt is less than one frame, which is at most
        // one quantum, so a level with entries has a positive deficit again within two rounds.
        while !isEmpty {
            if rings[current].isEmpty {
                deficits[current] = 0
                advance()
                continue
            }
            if !visiting {
                deficits[current] += YamuxPriority(rawValue: current)!.weight * quantumUnit
                visiting = true
            }
            guard deficits[current] > 0 else {
                advance()
                continue
            }
            return (rings[current].removeFirst(), YamuxPriority(rawValue: current)!)
        }
        visiting = false
        return nil
    }

    /// Drops the entries of streams for which `isGone` is true (stale entries of freed streams).
    mutating func removeAll(where isGone: (YamuxStreamID) -> Bool) {
        for level in rings.indices {
            rings[level] = CircularBuffer(rings[level].filter { !isGone($0) })
        }
    }

    /// Charges `bytes` sent on the wire to the deficit of `priority`.
    mutating func charge(_ bytes: Int, to priority: YamuxPriority) {
        deficits[priority.rawValue] -= bytes
    }

    private mutating func advance() {
        current = (current + 1) % rings.count
        visiting = false
    }
}
