import Multiformats
import NIOCore

/// One k-bucket: up to k entries ordered least recently seen first, a bounded cache of replacement
/// candidates (Kademlia paper §4.1: a node receiving a contact for a full bucket "places the new
/// contact in a replacement cache of nodes eligible to replace stale k-bucket entries"), the
/// liveness check in flight, and refresh bookkeeping.
///
/// Uniqueness of a key across the table is kept by `RoutingTable`; the bucket only keeps its own
/// lists consistent (a key is never both an entry and a replacement).
struct KBucket: Sendable {
    /// A ping the table asked the caller to run on the least recently seen entry.
    struct LivenessCheck: Hashable, Sendable {
        let key: KademliaKey
        let started: NIODeadline
    }

    /// Least recently seen first.
    private(set) var entries: [RoutingTableEntry] = []
    /// Least recently seen first; bounded by the table's `replacementCacheSize`.
    private(set) var replacements: [RoutingTableEntry] = []
    var livenessCheck: LivenessCheck?
    /// When a lookup for a key in this bucket last ran; `nil` for never.
    var lastRefreshed: NIODeadline?

    func index(of key: KademliaKey) -> Int? {
        entries.firstIndex { $0.peer.key == key }
    }

    func replacementIndex(of key: KademliaKey) -> Int? {
        replacements.firstIndex { $0.peer.key == key }
    }

    /// Marks entry `index` as seen at `now`: it becomes the most recently seen. A liveness check on
    /// it is answered by this very contact.
    mutating func touch(at index: Int, addresses: [Multiaddr]?, evidence: RoutingTable.Evidence?, now: NIODeadline) {
        var entry = entries.remove(at: index)
        if let addresses, !addresses.isEmpty { entry.peer.addresses = addresses }
        if let evidence { entry.evidence = evidence }
        entry.lastSeen = now
        entry.isConnected = true
        entries.append(entry)
        if livenessCheck?.key == entry.peer.key { livenessCheck = nil }
    }

    /// Appends a new most recently seen entry; the caller checked there is room.
    mutating func append(_ entry: RoutingTableEntry) {
        if let cached = replacementIndex(of: entry.peer.key) { replacements.remove(at: cached) }
        entries.append(entry)
    }

    /// Puts `entry` in the replacement cache as its most recently seen member, dropping the least
    /// recently seen one when the cache is over `capacity`.
    mutating func cacheReplacement(_ entry: RoutingTableEntry, capacity: Int) {
        var entry = entry
        if let cached = replacementIndex(of: entry.peer.key) {
            let old = replacements.remove(at: cached)
            entry = RoutingTableEntry(
                peer: entry.peer.addresses.isEmpty ? old.peer : entry.peer, lastSeen: entry.lastSeen,
                firstSeen: old.firstSeen, isConnected: entry.isConnected, evidence: entry.evidence)
        }
        guard capacity > 0 else { return }
        replacements.append(entry)
        if replacements.count > capacity { replacements.removeFirst(replacements.count - capacity) }
    }

    /// Removes entry `index`, clearing a liveness check on it, and moves the most recently seen
    /// replacement into the bucket.
    mutating func remove(at index: Int) -> (removed: RoutingTableEntry, promoted: RoutingTableEntry?) {
        let removed = entries.remove(at: index)
        if livenessCheck?.key == removed.peer.key { livenessCheck = nil }
        guard let promoted = replacements.popLast() else { return (removed, nil) }
        // Keep the bucket ordered by last contact: the replacement may be older than some entries.
        let position = entries.firstIndex { $0.lastSeen > promoted.lastSeen } ?? entries.endIndex
        entries.insert(promoted, at: position)
        return (removed, promoted)
    }

    mutating func removeReplacement(at index: Int) {
        replacements.remove(at: index)
    }

    mutating func setConnected(at index: Int, _ connected: Bool) {
        entries[index].isConnected = connected
    }
}
