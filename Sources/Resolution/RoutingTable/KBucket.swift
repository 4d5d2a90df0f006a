import Multiformats
import NIOCore

/// One k-bucket: up to k entries ordered least recently seen first, a bounded cache of replacement
/// candidates (Kademlia paper §4.1: a node receiving a contact for a full bucket "places the new
/// contact in a replacement cache of nodes eligible to replace stale k-bucket entries"), the
/// liveness check in flight, and refresh bookkeeping.
///
/// Uniqueness of a key across the table is kept by `RoutingTable`; the bucket only keeps its own
/// lists consistent (a key is never both an entry and a replacement).
struct KBucket<Peer: RoutingTablePeer>: Sendable {
    /// A ping the table asked the caller to run on the least recently seen entry.
    struct LivenessCheck: Hashable, Sendable {
        let peer: Peer
        let started: NIODeadline
    }

    /// Least recently seen first.
    private(set) var entries: [KBucketEntry<Peer>] = []
    /// Least recently seen first; bounded by the table's `replacementCacheSize`.
    private(set) var replacements: [KBucketEntry<Peer>] = []
    var livenessCheck: LivenessCheck?
    /// When a lookup for a key in this bucket last ran; `nil` for never.
    var lastRefreshed: NIODeadline?

    func index(of key: KademliaKey, in keys: Peer.KeySpace) -> Int? {
        entries.firstIndex { $0.peer.key(in: keys) == key }
    }

    func replacementIndex(of key: KademliaKey, in keys: Peer.KeySpace) -> Int? {
        replacements.firstIndex { $0.peer.key(in: keys) == key }
    }

    /// Whether the liveness check in flight is on `key`.
    func isChecking(_ key: KademliaKey, in keys: Peer.KeySpace) -> Bool {
        livenessCheck.map { $0.peer.key(in: keys) == key } ?? false
    }

    /// Marks entry `index` as seen at `now`: it becomes the most recently seen. A liveness check on
    /// it is answered by this very contact.
    mutating func touch(
        at index: Int, addresses: [Multiaddr]?, evidence: RoutingTableEvidence?, now: NIODeadline, keys: Peer.KeySpace
    ) {
        var entry = entries.remove(at: index)
        if let addresses, !addresses.isEmpty { entry.peer = entry.peer.withAddresses(addresses) }
        if let evidence { entry.evidence = evidence }
        entry.lastSeen = now
        entry.isConnected = true
        entries.append(entry)
        if isChecking(entry.peer.key(in: keys), in: keys) { livenessCheck = nil }
    }

    /// Appends a new most recently seen entry; the caller checked there is room (`capacity` is the
    /// bucket size). The entry array grows by doubling up to `capacity` and never beyond, so a full
    /// bucket holds no spare slots (a table in a large simulated network is mostly full buckets).
    mutating func append(_ entry: KBucketEntry<Peer>, capacity: Int, keys: Peer.KeySpace) {
        if let cached = replacementIndex(of: entry.peer.key(in: keys), in: keys) { replacements.remove(at: cached) }
        if entries.count == entries.capacity {
            entries.reserveCapacity(Swift.min(Swift.max(2 * entries.count, 2), Swift.max(capacity, entries.count + 1)))
        }
        entries.append(entry)
    }

    /// Puts `entry` in the replacement cache as its most recently seen member, dropping the least
    /// recently seen one when the cache is over `capacity`, and the least recently seen one of
    /// entry's subnet when more than `perSubnet` candidates share it (`sameSubnet` says which do),
    /// so that one subnet cannot push every other candidate out.
    mutating func cacheReplacement(
        _ entry: KBucketEntry<Peer>, capacity: Int, perSubnet: Int, keys: Peer.KeySpace,
        sameSubnet: (KBucketEntry<Peer>) -> Bool
    ) {
        var entry = entry
        if let cached = replacementIndex(of: entry.peer.key(in: keys), in: keys) {
            let old = replacements.remove(at: cached)
            entry = KBucketEntry(
                peer: entry.peer.addresses.isEmpty ? old.peer : entry.peer, lastSeen: entry.lastSeen,
                firstSeen: old.firstSeen, isConnected: entry.isConnected, evidence: entry.evidence)
        }
        guard capacity > 0 else { return }
        // The cache holds `capacity` and briefly one more: room for exactly that, not a doubling.
        if replacements.capacity < capacity + 1 { replacements.reserveCapacity(capacity + 1) }
        replacements.append(entry)
        var shared = 0
        for candidate in replacements where sameSubnet(candidate) { shared += 1 }
        if shared > perSubnet, let oldest = replacements.firstIndex(where: sameSubnet) {
            replacements.remove(at: oldest)
        }
        if replacements.count > capacity { replacements.removeFirst(replacements.count - capacity) }
    }

    /// Removes entry `index`, clearing a liveness check on it.
    mutating func remove(at index: Int, keys: Peer.KeySpace) -> KBucketEntry<Peer> {
        let removed = entries.remove(at: index)
        if isChecking(removed.peer.key(in: keys), in: keys) { livenessCheck = nil }
        return removed
    }

    /// Moves the most recently seen replacement for which `admissible` holds into the bucket (placed
    /// by its last-seen time); the others stay cached.
    mutating func promoteReplacement(where admissible: (KBucketEntry<Peer>) -> Bool) -> KBucketEntry<Peer>? {
        guard let index = replacements.lastIndex(where: admissible) else { return nil }
        let promoted = replacements.remove(at: index)
        // Keep the bucket ordered by last contact: the replacement may be older than some entries.
        let position = entries.firstIndex { $0.lastSeen > promoted.lastSeen } ?? entries.endIndex
        entries.insert(promoted, at: position)
        return promoted
    }

    mutating func removeReplacement(at index: Int) {
        replacements.remove(at: index)
    }

    mutating func setConnected(at index: Int, _ connected: Bool) {
        entries[index].isConnected = connected
    }
}
