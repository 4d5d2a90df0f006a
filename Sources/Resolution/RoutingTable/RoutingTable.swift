import Identity
import Multiformats
import NIOCore
import Network

/// The Kademlia routing table: 256 k-buckets over the SHA-256 keyspace, bucket `i` holding the peers
/// whose distance from us is in `[2^i, 2^(i+1))` (so bucket 255 is the half of the keyspace that
/// differs from us in the first bit).
///
/// A pure value: it performs no I/O and reads no clock. Where Kademlia would ping a peer, the table
/// returns `Update.pendingLivenessCheck` and the caller reports the outcome with
/// `livenessCheckSucceeded` / `livenessCheckFailed`; refresh asks for lookups with
/// `refreshTargets(now:using:)`.
///
/// Admission rules:
/// - Only peers that proved they serve the DHT enter: they answered one of our kad requests, or
///   opened a kad stream while advertising server mode (`Evidence`). Peers merely *named* in someone
///   else's answer never do; otherwise one liar could fill our table with ids of its choosing.
/// - libp2p kad-dht spec, "Client and server mode": "Nodes, both those operating in client and server
///   mode, add another node to their routing table if and only if that node operates in server mode."
/// - The local peer is never an entry.
/// - Kademlia paper §2.2: a full bucket prefers the peers it has (long-lived nodes tend to stay),
///   so a newcomer waits in the replacement cache while the least recently seen entry is checked;
///   only a failed check evicts it.
/// - Subnet diversity, against the eclipse attack of S/Kademlia (Baumgart and Mies, 2007), counted
///   per bucket and per table as go-libp2p-kbucket's peer diversity filter does: at most
///   `maximumEntriesPerSubnetPerBucket` entries of one subnet (the /24 of an IPv4 address, the /48
///   of an IPv6 one, IPv4-mapped IPv6 counting as IPv4) in a bucket, at most
///   `maximumEntriesPerSubnet` in the table, and as many candidates of one subnet in a replacement
///   cache as in a bucket. An entry counts in the subnet of its first address (the one we reached
///   it at); an entry without an IP address (a DNS name) counts in one shared group; an entry
///   without any address, and loopback entries when `exemptsLoopback`, are not counted.
///
/// Generic over the peer handle (as rust-libp2p's `KBucketsTable<TKey, TVal>`): agentd's table is
/// `RoutingTable`, holding `KademliaPeer`s; the simulator holds small handles with one shared key
/// per virtual node. Bucket records are stored by common prefix length and only up to the deepest
/// one touched, so the ~240 buckets that stay empty in any real network take no memory; every
/// bucket's entries and candidates share one array (`slots`).
public struct KBucketsTable<Peer: RoutingTablePeer>: Sendable {
    /// Number of buckets: one per possible `floor(log2(distance))`.
    public static var bucketCount: Int { KademliaKey.bitCount }

    public typealias Evidence = RoutingTableEvidence
    public typealias Rejection = RoutingTableRejection
    public typealias Configuration = RoutingTableConfiguration
    public typealias Entry = KBucketEntry<Peer>

    /// What `add` did.
    public enum Update: Hashable, Sendable {
        /// The peer is a new entry.
        case inserted
        /// The peer was an entry; it is now the most recently seen one of its bucket and its
        /// addresses are updated.
        case updated
        /// The bucket is full. The peer waits in the replacement cache; the caller should ping this
        /// entry, the bucket's least recently seen, and report `livenessCheckSucceeded` or
        /// `livenessCheckFailed`.
        case pendingLivenessCheck(Peer)
        /// The bucket is full and no check is needed now (one is in flight, or every entry was seen
        /// within `livenessCheckInterval`); the peer waits in the replacement cache.
        case cached
        /// The peer was not admitted.
        case rejected(Rejection)
    }

    /// The group an entry counts in for the subnet limits.
    enum SubnetKey: Hashable, Sendable {
        /// The /24 (IPv4) or /48 (IPv6) of the entry's first address.
        case network(IPNetwork)
        /// The entry's first address is not an IP address (a DNS name): all such entries share one
        /// group, so names cannot bypass the limits.
        case named
    }

    /// An entry that left the table, and the replacement that took its place, if the bucket had one.
    public struct Eviction: Hashable, Sendable {
        public let evicted: Entry
        public let promoted: Entry?
    }

    /// Where the table finds its peers' keys (one shared object for the simulator's handles).
    public private(set) var keySpace: Peer.KeySpace
    /// The local peer's key; distances in the table are measured from it.
    public let localKey: KademliaKey
    /// The local peer.
    public let local: Peer
    /// Sizes, bounds and timings.
    public let configuration: Configuration
    /// Entries in the table (replacement caches not counted).
    public private(set) var count = 0
    /// Whether entries at loopback addresses are left out of the subnet limits (see
    /// `exemptLoopback(_:)`); initially not.
    public private(set) var exemptsLoopback = false

    /// The bucket records by common prefix length with the local key: `storage[c]` is bucket
    /// `255 - c`. Holds records only up to the deepest bucket ever written (`storedLocation`).
    var storage: [KBucket<Peer>] = []
    /// Every stored bucket's entries then its replacement candidates, in `storage` order
    /// (`location(ofBucket:)` finds a bucket's part).
    var slots: [Entry] = []
    /// Entries per subnet in the whole table (uncounted entries left out).
    private var subnetCounts: [SubnetKey: Int] = [:]

    /// An empty table for `local`, whose peers' keys are found in `keySpace`.
    public init(local: Peer, keySpace: Peer.KeySpace, configuration: Configuration = Configuration()) {
        precondition(configuration.bucketSize > 0, "bucket size must be positive")
        precondition(
            configuration.bucketSize <= Self.largestBucket && configuration.replacementCacheSize < Self.largestBucket,
            "bucket size and replacement cache size must be below \(Self.largestBucket)")
        self.local = local
        self.keySpace = keySpace
        self.localKey = local.key(in: keySpace)
        self.configuration = configuration
    }

    /// The key of `peer`.
    public func key(of peer: Peer) -> KademliaKey { peer.key(in: keySpace) }

    /// Finds keys in `keySpace` from now on: one that gives every peer the key the current one gives
    /// (a copy of it, say, that a simulation may extend on its own).
    public mutating func replaceKeySpace(_ keySpace: Peer.KeySpace) {
        precondition(local.key(in: keySpace) == localKey, "the new key space gives the local peer another key")
        self.keySpace = keySpace
    }
}

extension KBucketsTable where Peer.KeySpace == IntrinsicKeySpace {
    /// An empty table for `local`, a peer that carries its own key.
    public init(local: Peer, configuration: Configuration = Configuration()) {
        self.init(local: local, keySpace: IntrinsicKeySpace(), configuration: configuration)
    }
}

/// How a peer proved it serves the DHT (`RoutingTable.Evidence`); the caller must say which, so
/// nothing enters by hearsay.
public enum RoutingTableEvidence: Hashable, Sendable {
    /// The peer answered a kad request of ours (which only a server-mode node accepts).
    case answeredRequest
    /// The peer opened a kad stream to us, in the mode it advertises through identify (server
    /// when it lists the kad protocol id).
    case inboundStream(KademliaMode)
}

/// Why `add` turned a peer away (`RoutingTable.Rejection`).
public enum RoutingTableRejection: Hashable, Sendable {
    /// It is us.
    case localPeer
    /// It runs in client mode (and was removed if it had been an entry).
    case clientMode
    /// The table holds `maximumEntries`.
    case tableFull
    /// Its subnet has its share of the bucket or of the table already.
    case subnetFull
}

/// agentd's routing table: entries are peer ids with their addresses.
public typealias RoutingTable = KBucketsTable<KademliaPeer>

extension KBucketsTable where Peer == KademliaPeer {
    /// An empty table for `localPeer`.
    public init(localPeer: PeerID, configuration: Configuration = Configuration()) {
        self.init(local: KademliaPeer(id: localPeer), configuration: configuration)
    }

    /// The local peer.
    public var localPeer: PeerID { local.id }

    /// The entry for `peer`, if it is in the table (replacement caches not included).
    public func entry(for peer: PeerID) -> Entry? {
        entry(forKey: KademliaKey(peer: peer))
    }

    /// Whether `peer` is an entry.
    public func contains(_ peer: PeerID) -> Bool {
        entry(for: peer) != nil
    }

    /// The caller's ping of `peer` (asked for by `.pendingLivenessCheck`) was answered at `now`: the
    /// entry stays and becomes its bucket's most recently seen. The newcomer stays in the
    /// replacement cache for the next vacancy.
    public mutating func livenessCheckSucceeded(_ peer: PeerID, now: NIODeadline) {
        livenessCheckSucceeded(key: KademliaKey(peer: peer), now: now)
    }

    /// The caller's ping of `peer` failed: the entry is evicted and the most recently seen
    /// replacement takes its place. `nil` if `peer` was not an entry (it may have left already).
    public mutating func livenessCheckFailed(_ peer: PeerID, now: NIODeadline) -> Eviction? {
        livenessCheckFailed(key: KademliaKey(peer: peer), now: now)
    }

    /// Removes `peer` (an entry or a replacement candidate), promoting the most recently seen
    /// replacement into a vacated bucket slot. Returns the eviction when an entry left.
    public mutating func remove(_ peer: PeerID) -> Eviction? {
        remove(key: KademliaKey(peer: peer))
    }

    /// Notes whether the caller holds a connection to `peer` (informational; see
    /// `RoutingTableEntry.isConnected`).
    public mutating func setConnected(_ peer: PeerID, _ connected: Bool) {
        setConnected(key: KademliaKey(peer: peer), connected)
    }
}

extension KBucketsTable {
    /// Leaves loopback entries out of the subnet limits, or counts them again. Entries already in
    /// the table stay (even beyond a limit counted now); the limits apply to what comes next.
    public mutating func exemptLoopback(_ exempt: Bool) {
        exemptsLoopback = exempt
        subnetCounts = [:]
        forEachEntry { entry in
            if let key = subnetKey(of: entry.peer) { subnetCounts[key, default: 0] += 1 }
        }
    }

    /// The group `peer` counts in for the subnet limits; nil when it is not counted.
    func subnetKey(of peer: Peer) -> SubnetKey? {
        Self.subnetKey(of: peer, exemptingLoopback: exemptsLoopback)
    }

    static func subnetKey(of peer: Peer, exemptingLoopback: Bool) -> SubnetKey? {
        guard let first = peer.addresses.first else { return nil }
        guard let ip = IPAddress(first) else { return .named }
        if exemptingLoopback, AddressScope.of(ip) == .loopback { return nil }
        return .network(IPNetwork(containing: ip, prefixLength: IPNetwork.subnetPrefixLengths(ip.family).site))
    }

    /// Whether `peer`, at its first address, would be within the subnet limits: true for an entry
    /// already (its address does not change by this), and for the local peer (refused otherwise).
    /// Lets the caller skip proving an address the table would refuse anyway.
    public func admitsSubnet(of peer: Peer) -> Bool {
        let peerKey = key(of: peer)
        guard let bucket = bucketIndex(for: peerKey), entrySlot(of: peerKey, in: location(ofBucket: bucket)) == nil else {
            return true
        }
        return admits(subnetKey(of: peer), inBucket: bucket)
    }

    /// Whether one more entry of `key` fits bucket `bucket` and the table.
    private func admits(_ key: SubnetKey?, inBucket bucket: Int) -> Bool {
        guard let key else { return true }
        guard subnetCounts[key, default: 0] < configuration.maximumEntriesPerSubnet else { return false }
        var inBucket = 0
        for slot in location(ofBucket: bucket)?.entries ?? 0..<0 where subnetKey(of: slots[slot].peer) == key {
            inBucket += 1
        }
        return inBucket < configuration.maximumEntriesPerSubnetPerBucket
    }

    private mutating func countSubnet(_ key: SubnetKey?, _ delta: Int) {
        guard let key else { return }
        let updated = subnetCounts[key, default: 0] + delta
        precondition(updated >= 0, "subnet count of \(key) below zero")
        subnetCounts[key] = updated == 0 ? nil : updated
    }

    /// The bucket `key` belongs in; `nil` for the local key.
    public func bucketIndex(for key: KademliaKey) -> Int? {
        localKey.distance(to: key).bucketIndex
    }

    /// The entry at `key`, if it is in the table (replacement caches not included).
    public func entry(forKey key: KademliaKey) -> Entry? {
        guard let bucket = bucketIndex(for: key), let slot = entrySlot(of: key, in: location(ofBucket: bucket)) else {
            return nil
        }
        return slots[slot]
    }

    /// The entries of bucket `index`, least recently seen first.
    public func entries(inBucket index: Int) -> [Entry] {
        guard let location = self.location(ofBucket: index) else { return [] }
        return Array(slots[location.entries])
    }

    /// The replacement candidates of bucket `index`, least recently seen first.
    public func replacements(inBucket index: Int) -> [Entry] {
        guard let location = self.location(ofBucket: index) else { return [] }
        return Array(slots[location.replacements])
    }

    /// Every entry, bucket 0 (closest to us) first.
    public var entries: [Entry] {
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        forEachEntry { entries.append($0) }
        return entries
    }

    /// Calls `body` with every entry, bucket 0 (closest to us) first, without copying them out.
    public func forEachEntry(_ body: (Entry) throws -> Void) rethrows {
        // Bucket records are stored closest-last: walk them from the far end of the slots.
        var end = slots.count
        for bucket in storage.reversed() {
            let start = end - bucket.slotCount
            for slot in start..<(start + Int(bucket.entryCount)) { try body(slots[slot]) }
            end = start
        }
    }

    /// Makes room for `count` entries and candidates in all, so that a table filled at once (a
    /// simulated network built directly) holds no spare slots.
    public mutating func reserveCapacity(_ count: Int) {
        slots.reserveCapacity(count)
    }

    /// Records that `peer` proved it serves the DHT (see `Evidence`) at `now`, with the addresses it
    /// was reached at (empty keeps the known ones).
    ///
    /// A client-mode peer is rejected, and removed if it was an entry: the spec keeps only server-mode
    /// nodes in routing tables, and a node that switched to client mode no longer answers.
    public mutating func add(_ peer: Peer, evidence: Evidence, now: NIODeadline) -> Update {
        let peerKey = key(of: peer)
        guard let bucket = bucketIndex(for: peerKey) else { return .rejected(.localPeer) }
        if case .inboundStream(.client) = evidence {
            _ = remove(key: peerKey, bucket: bucket)
            return .rejected(.clientMode)
        }
        var peer = peer
        if peer.addresses.count > configuration.maximumAddressesPerPeer {
            peer = peer.withAddresses(Array(peer.addresses.prefix(configuration.maximumAddressesPerPeer)))
        }
        if let slot = entrySlot(of: peerKey, in: location(ofBucket: bucket)) {
            var addresses: [Multiaddr]? = peer.addresses
            let current = slots[slot].peer
            if !peer.addresses.isEmpty, peer.addresses != current.addresses {
                let (old, new) = (subnetKey(of: current), subnetKey(of: peer))
                if old != new {
                    // Moving to another subnet is joining it: only within its limits, else the
                    // entry keeps the addresses it has.
                    countSubnet(old, -1)
                    if admits(new, inBucket: bucket) {
                        countSubnet(new, 1)
                    } else {
                        countSubnet(old, 1)
                        addresses = nil
                    }
                }
            }
            touchEntry(slot, in: location(ofBucket: bucket)!, addresses: addresses, evidence: evidence, now: now)
            return .updated
        }
        let subnet = subnetKey(of: peer)
        guard admits(subnet, inBucket: bucket) else { return .rejected(.subnetFull) }
        let entry = Entry(peer: peer, lastSeen: now, firstSeen: now, isConnected: true, evidence: evidence)
        if Int(self.bucket(bucket).entryCount) < configuration.bucketSize {
            guard count < configuration.maximumEntries else { return .rejected(.tableFull) }
            appendEntry(entry, in: storedLocation(ofBucket: bucket))
            count += 1
            countSubnet(subnet, 1)
            return .inserted
        }
        let exempting = exemptsLoopback
        let location = self.location(ofBucket: bucket)!
        cacheReplacement(
            entry, in: location, capacity: configuration.replacementCacheSize,
            perSubnet: configuration.maximumEntriesPerSubnetPerBucket,
            sameSubnet: { subnet != nil && Self.subnetKey(of: $0.peer, exemptingLoopback: exempting) == subnet })
        if let check = storage[location.depth].livenessCheck, now - check.started < configuration.livenessCheckTimeout {
            return .cached
        }
        // The cache sits after the entries: the first entry's slot did not move.
        let leastRecentlySeen = slots[location.entries.lowerBound]
        if now - leastRecentlySeen.lastSeen < configuration.livenessCheckInterval {
            return .cached
        }
        storage[location.depth].livenessCheck = KBucket<Peer>.LivenessCheck(peer: leastRecentlySeen.peer, started: now)
        return .pendingLivenessCheck(leastRecentlySeen.peer)
    }

    /// The caller's ping of the entry at `key` (asked for by `.pendingLivenessCheck`) was answered
    /// at `now`: the entry stays and becomes its bucket's most recently seen. The newcomer stays in
    /// the replacement cache for the next vacancy.
    public mutating func livenessCheckSucceeded(key: KademliaKey, now: NIODeadline) {
        guard let bucket = bucketIndex(for: key), let location = self.location(ofBucket: bucket),
            let slot = entrySlot(of: key, in: location)
        else { return }
        touchEntry(slot, in: location, addresses: nil, evidence: nil, now: now)
    }

    /// The caller's ping of the entry at `key` failed: the entry is evicted and the most recently
    /// seen replacement takes its place. `nil` if it was not an entry (it may have left already).
    public mutating func livenessCheckFailed(key: KademliaKey, now: NIODeadline) -> Eviction? {
        remove(key: key)
    }

    /// Removes the peer at `key` (an entry or a replacement candidate), promoting the most recently
    /// seen replacement into a vacated bucket slot. Returns the eviction when an entry left (this is
    /// also what a failed liveness check does).
    public mutating func remove(key: KademliaKey) -> Eviction? {
        guard let bucket = bucketIndex(for: key) else { return nil }
        return remove(key: key, bucket: bucket)
    }

    /// Notes whether the caller holds a connection to the entry at `key` (informational; see
    /// `KBucketEntry.isConnected`).
    public mutating func setConnected(key: KademliaKey, _ connected: Bool) {
        guard let bucket = bucketIndex(for: key), let slot = entrySlot(of: key, in: location(ofBucket: bucket)) else {
            return
        }
        slots[slot].isConnected = connected
    }

    private mutating func remove(key: KademliaKey, bucket: Int) -> Eviction? {
        guard let location = self.location(ofBucket: bucket) else { return nil }
        if let slot = entrySlot(of: key, in: location) {
            let removed = removeEntry(slot, in: location)
            countSubnet(subnetKey(of: removed.peer), -1)
            // The most recently seen candidate that keeps the subnet limits moves up; candidates
            // of a subnet that has its share stay cached.
            let exempting = exemptsLoopback
            let tableCounts = subnetCounts
            var bucketCounts: [SubnetKey: Int] = [:]
            for slot in location.entries.lowerBound..<(location.entries.upperBound - 1) {
                if let key = subnetKey(of: slots[slot].peer) { bucketCounts[key, default: 0] += 1 }
            }
            let (perBucket, perTable) = (configuration.maximumEntriesPerSubnetPerBucket, configuration.maximumEntriesPerSubnet)
            let promoted = promoteReplacement(inBucket: bucket) { candidate in
                guard let key = Self.subnetKey(of: candidate.peer, exemptingLoopback: exempting) else { return true }
                return bucketCounts[key, default: 0] < perBucket && tableCounts[key, default: 0] < perTable
            }
            if let promoted {
                countSubnet(subnetKey(of: promoted.peer), 1)
            } else {
                count -= 1
            }
            return Eviction(evicted: removed, promoted: promoted)
        }
        if let slot = replacementSlot(of: key, in: location) {
            removeReplacement(slot, in: location)
        }
        return nil
    }
}
