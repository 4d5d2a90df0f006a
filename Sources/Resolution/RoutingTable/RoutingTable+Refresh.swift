import NIOCore

/// A lookup the caller should run to keep a bucket fresh (`RoutingTable.RefreshTarget`): `key` is
/// uniformly random within the bucket's range of the keyspace.
public struct RoutingTableRefreshTarget: Hashable, Sendable {
    /// The bucket the key lies in.
    public let bucket: Int
    /// The lookup target.
    public let key: KademliaKey
}

/// Summary of one bucket (`RoutingTable.BucketSummary`), for `agentctl dht peers` and metrics.
public struct RoutingTableBucketSummary: Hashable, Sendable {
    /// Bucket index: `floor(log2(distance))` of its keys from ours.
    public let index: Int
    /// Leading bits its keys share with ours: `255 - index`.
    public var commonPrefixLength: Int { KademliaKey.bitCount - 1 - index }
    public let entries: Int
    public let replacements: Int
    /// Last lookup into the bucket's range; `nil` for never.
    public let lastRefreshed: NIODeadline?
}

/// What a routing table holds on the heap for its buckets (`KBucketsTable.footprint`): the memory a
/// simulated node's table costs, and the check that empty buckets and spare slots cost nothing.
public struct RoutingTableFootprint: Hashable, Sendable {
    /// Bucket records stored: those up to the deepest one ever written (the others are not held at all).
    public let storedBuckets: Int
    /// Slots allocated for entries: the entries, and the slot array's spare capacity.
    public let entrySlots: Int
    /// Slots holding replacement candidates.
    public let replacementSlots: Int
    /// Heap bytes of the bucket records and the slots, with 32 bytes of header per allocated array
    /// (the peers' own storage, shared or not, is not counted).
    public let bytes: Int
}

extension KBucketsTable {
    public typealias RefreshTarget = RoutingTableRefreshTarget
    public typealias BucketSummary = RoutingTableBucketSummary

    /// What the buckets hold on the heap now.
    public var footprint: RoutingTableFootprint {
        let header = 32
        var replacementSlots = 0
        for bucket in storage { replacementSlots += Int(bucket.replacementCount) }
        let arrays = (storage.capacity > 0 ? 1 : 0) + (slots.capacity > 0 ? 1 : 0)
        let bytes =
            storage.capacity * MemoryLayout<KBucket<Peer>>.stride + slots.capacity * MemoryLayout<Entry>.stride
            + arrays * header
        return RoutingTableFootprint(
            storedBuckets: storage.count, entrySlots: slots.capacity - replacementSlots,
            replacementSlots: replacementSlots, bytes: bytes)
    }

    /// Summaries of the buckets that hold entries or replacements, closest first.
    public var bucketSummaries: [BucketSummary] {
        storage.indices.reversed().compactMap { depth in
            let bucket = storage[depth]
            guard bucket.slotCount > 0 else { return nil }
            return BucketSummary(
                index: Self.bucketCount - 1 - depth, entries: Int(bucket.entryCount),
                replacements: Int(bucket.replacementCount), lastRefreshed: bucket.lastRefreshed)
        }
    }

    /// Notes that a lookup for `target` ran at `now`, which keeps `target`'s bucket fresh. The caller
    /// reports every lookup it starts (Kademlia paper §2.3: ordinary lookups refresh buckets too).
    public mutating func recordLookup(of target: KademliaKey, now: NIODeadline) {
        guard let bucket = bucketIndex(for: target) else { return }
        storage[storedLocation(ofBucket: bucket).depth].lastRefreshed = now
    }

    /// The buckets no lookup has touched for `refreshInterval` (or ever), each with a random target
    /// drawn from `generator`, for common prefix lengths 0 through the deepest non-empty bucket's
    /// (at most `maximumRefreshCommonPrefixLength`). The returned buckets count as refreshed at
    /// `now`: the caller runs one lookup per target, plus a lookup of `localKey` (the self-lookup
    /// that keeps the deepest buckets full).
    public mutating func refreshTargets<G: RandomNumberGenerator>(
        now: NIODeadline, using generator: inout G
    ) -> [RefreshTarget] {
        let deepestIndex = deepestOccupied ?? (Self.bucketCount - 1)
        let deepest = Swift.min(Self.bucketCount - 1 - deepestIndex, configuration.maximumRefreshCommonPrefixLength)
        var targets: [RefreshTarget] = []
        for commonPrefixLength in 0...deepest {
            let bucket = Self.bucketCount - 1 - commonPrefixLength
            if let last = self.bucket(bucket).lastRefreshed, now - last < configuration.refreshInterval { continue }
            let key = KademliaKey.random(inBucket: bucket, from: localKey, using: &generator)
            targets.append(RefreshTarget(bucket: bucket, key: key))
            storage[storedLocation(ofBucket: bucket).depth].lastRefreshed = now
        }
        return targets
    }
}
