import Multiformats
import NIOCore

/// One k-bucket's record: how many entries and replacement candidates it holds, the liveness check
/// in flight, and refresh bookkeeping. The entries themselves (up to k, least recently seen first)
/// and the bounded cache of replacement candidates (Kademlia paper §4.1: a node receiving a contact
/// for a full bucket "places the new contact in a replacement cache of nodes eligible to replace
/// stale k-bucket entries"; least recently seen first) live in the table's one slot array
/// (`KBucketsTable.slots`): bucket by bucket, each bucket's entries then its candidates.
///
/// One array per table instead of two per bucket, and times as the handle's `Timestamp`, make a
/// bucket record 24 bytes for the simulator's handles (it was 56, plus two array headers and
/// their allocations): the table of a node in a 100,000-node network holds ~18 buckets.
///
/// Uniqueness of a key across the table is kept by `KBucketsTable`; the bucket operations below
/// keep each bucket's lists consistent (a key is never both an entry and a replacement).
struct KBucket<Peer: RoutingTablePeer>: Sendable {
    /// A ping the table asked the caller to run on the least recently seen entry.
    struct LivenessCheck: Hashable, Sendable {
        let peer: Peer
        private let startedStamp: Peer.Timestamp

        init(peer: Peer, started: NIODeadline) {
            self.peer = peer
            self.startedStamp = Peer.timestamp(started)
        }

        var started: NIODeadline { Peer.deadline(startedStamp) }
    }

    /// Entries in the bucket (at most the table's bucket size).
    var entryCount: UInt16 = 0
    /// Replacement candidates (at most the table's cache size, briefly one more).
    var replacementCount: UInt16 = 0
    var livenessCheck: LivenessCheck?
    private var lastRefreshedStamp: Peer.Timestamp?

    /// Entries and candidates together: the bucket's share of the slot array.
    var slotCount: Int { Int(entryCount) + Int(replacementCount) }

    /// When a lookup for a key in this bucket last ran; `nil` for never.
    var lastRefreshed: NIODeadline? {
        get { lastRefreshedStamp.map(Peer.deadline) }
        set { lastRefreshedStamp = newValue.map(Peer.timestamp) }
    }
}

/// Where one bucket's entries and candidates are in the slot array (`KBucketsTable.location`).
struct KBucketLocation: Sendable {
    /// The bucket's position in `KBucketsTable.storage` (its common prefix length with us).
    let depth: Int
    /// Slot indices of the entries, least recently seen first.
    let entries: Range<Int>
    /// Slot indices of the replacement candidates, least recently seen first.
    let replacements: Range<Int>
}

extension KBucketsTable {
    // MARK: Bucket records and their slots

    /// Largest bucket size and cache size the 16-bit counts of a bucket record hold.
    static var largestBucket: Int { Int(UInt16.max) - 1 }

    /// The slots of bucket `index`; nil when it is not stored (so empty).
    func location(ofBucket index: Int) -> KBucketLocation? {
        let depth = KademliaKey.bitCount - 1 - index
        guard depth < storage.count else { return nil }
        return location(atDepth: depth)
    }

    func location(atDepth depth: Int) -> KBucketLocation {
        var start = 0
        for before in 0..<depth { start += storage[before].slotCount }
        let bucket = storage[depth]
        let entriesEnd = start + Int(bucket.entryCount)
        return KBucketLocation(
            depth: depth, entries: start..<entriesEnd, replacements: entriesEnd..<(entriesEnd + Int(bucket.replacementCount)))
    }

    /// The record of bucket `index`, stored (with the empty ones between) if it was not.
    mutating func storedLocation(ofBucket index: Int) -> KBucketLocation {
        let depth = KademliaKey.bitCount - 1 - index
        if depth >= storage.count {
            // Exactly the records needed: deeper buckets are stored one at a time, rarely.
            storage.reserveCapacity(depth + 1)
            storage.append(contentsOf: repeatElement(KBucket(), count: depth + 1 - storage.count))
        }
        return location(atDepth: depth)
    }

    /// The bucket record of `index` for reading; an empty one if not stored.
    func bucket(_ index: Int) -> KBucket<Peer> {
        let depth = KademliaKey.bitCount - 1 - index
        return depth < storage.count ? storage[depth] : KBucket()
    }

    /// The index of the deepest bucket holding entries (the smallest index); nil if none does.
    var deepestOccupied: Int? {
        storage.lastIndex { $0.entryCount > 0 }.map { KademliaKey.bitCount - 1 - $0 }
    }

    /// The slot of the entry at `key` in bucket `slots`, if any.
    func entrySlot(of key: KademliaKey, in slots: KBucketLocation?) -> Int? {
        guard let slots else { return nil }
        return slots.entries.first { self.slots[$0].peer.key(in: keySpace) == key }
    }

    /// The slot of the replacement candidate at `key` in bucket `slots`, if any.
    func replacementSlot(of key: KademliaKey, in slots: KBucketLocation) -> Int? {
        slots.replacements.first { self.slots[$0].peer.key(in: keySpace) == key }
    }

    /// Whether the liveness check in flight in the bucket at `depth` is on `key`.
    func isChecking(_ key: KademliaKey, atDepth depth: Int) -> Bool {
        storage[depth].livenessCheck.map { $0.peer.key(in: keySpace) == key } ?? false
    }

    /// Inserts `entry` at slot `position`. The array grows by an eighth (at least 4 slots) when
    /// full, not by doubling: a table in a large simulated network is mostly full buckets and
    /// stops growing, so spare slots would be held for good. `reserveCapacity` avoids even those.
    private mutating func insertSlot(_ entry: Entry, at position: Int) {
        if slots.count == slots.capacity { slots.reserveCapacity(slots.count + Swift.max(4, slots.count / 8)) }
        slots.insert(entry, at: position)
    }

    /// Marks entry `slot` of the bucket at `slots` as seen at `now`: it becomes the most recently
    /// seen. A liveness check on it is answered by this very contact.
    mutating func touchEntry(
        _ slot: Int, in slots: KBucketLocation, addresses: [Multiaddr]?, evidence: RoutingTableEvidence?, now: NIODeadline
    ) {
        var entry = self.slots[slot]
        if let addresses, !addresses.isEmpty { entry.peer = entry.peer.withAddresses(addresses) }
        if let evidence { entry.evidence = evidence }
        entry.lastSeen = now
        entry.isConnected = true
        // Move the others up one, within the bucket, and put it last.
        let last = slots.entries.upperBound - 1
        var position = slot
        while position < last {
            self.slots[position] = self.slots[position + 1]
            position += 1
        }
        self.slots[last] = entry
        if isChecking(entry.peer.key(in: keySpace), atDepth: slots.depth) { storage[slots.depth].livenessCheck = nil }
    }

    /// Appends a new most recently seen entry to the bucket at `slots` (dropping it from the
    /// replacement cache if it waited there); the caller checked there is room.
    mutating func appendEntry(_ entry: Entry, in slots: KBucketLocation) {
        if let cached = replacementSlot(of: entry.peer.key(in: keySpace), in: slots) {
            self.slots.remove(at: cached)
            storage[slots.depth].replacementCount -= 1
        }
        insertSlot(entry, at: slots.entries.upperBound)
        storage[slots.depth].entryCount += 1
    }

    /// Puts `entry` in the replacement cache of the bucket at `slots` as its most recently seen
    /// member, dropping the least recently seen one when the cache is over `capacity`, and the
    /// least recently seen one of entry's subnet when more than `perSubnet` candidates share it
    /// (`sameSubnet` says which do), so that one subnet cannot push every other candidate out.
    mutating func cacheReplacement(
        _ entry: Entry, in slots: KBucketLocation, capacity: Int, perSubnet: Int, sameSubnet: (Entry) -> Bool
    ) {
        let depth = slots.depth
        var entry = entry
        var end = slots.replacements.upperBound
        if let cached = replacementSlot(of: entry.peer.key(in: keySpace), in: slots) {
            let old = self.slots.remove(at: cached)
            storage[depth].replacementCount -= 1
            end -= 1
            entry = Entry(
                peer: entry.peer.addresses.isEmpty ? old.peer : entry.peer, lastSeen: entry.lastSeen,
                firstSeen: old.firstSeen, isConnected: entry.isConnected, evidence: entry.evidence)
        }
        guard capacity > 0 else { return }
        insertSlot(entry, at: end)
        storage[depth].replacementCount += 1
        end += 1
        let start = slots.replacements.lowerBound
        var shared = 0
        for candidate in start..<end where sameSubnet(self.slots[candidate]) { shared += 1 }
        if shared > perSubnet, let oldest = (start..<end).first(where: { sameSubnet(self.slots[$0]) }) {
            self.slots.remove(at: oldest)
            storage[depth].replacementCount -= 1
        }
        let excess = Int(storage[depth].replacementCount) - capacity
        if excess > 0 {
            self.slots.removeSubrange(start..<(start + excess))
            storage[depth].replacementCount -= UInt16(excess)
        }
    }

    /// Removes entry `slot` of the bucket at `slots`, clearing a liveness check on it.
    mutating func removeEntry(_ slot: Int, in slots: KBucketLocation) -> Entry {
        let removed = self.slots.remove(at: slot)
        storage[slots.depth].entryCount -= 1
        if isChecking(removed.peer.key(in: keySpace), atDepth: slots.depth) {
            storage[slots.depth].livenessCheck = nil
        }
        return removed
    }

    /// Moves the most recently seen replacement of bucket `index` for which `admissible` holds
    /// into the bucket (placed by its last-seen time); the others stay cached.
    mutating func promoteReplacement(inBucket index: Int, where admissible: (Entry) -> Bool) -> Entry? {
        guard let slots = self.location(ofBucket: index),
            let candidate = slots.replacements.last(where: { admissible(self.slots[$0]) })
        else { return nil }
        let promoted = self.slots.remove(at: candidate)
        // Keep the bucket ordered by last contact: the replacement may be older than some entries.
        let position = slots.entries.first { self.slots[$0].lastSeen > promoted.lastSeen } ?? slots.entries.upperBound
        self.slots.insert(promoted, at: position)
        storage[slots.depth].replacementCount -= 1
        storage[slots.depth].entryCount += 1
        return promoted
    }

    mutating func removeReplacement(_ slot: Int, in slots: KBucketLocation) {
        self.slots.remove(at: slot)
        storage[slots.depth].replacementCount -= 1
    }
}
