import NIOCore

/// Sizes, bounds and timings of a routing table (`RoutingTable.Configuration`). The defaults follow
/// the libp2p kad-dht spec and the Kademlia paper where they say something, and are argued here
/// where they do not.
public struct RoutingTableConfiguration: Hashable, Sendable {
    /// k, entries per bucket. libp2p kad-dht spec, "Replication parameter (k)": "The recommended
    /// value for k is 20."
    public var bucketSize = 20
    /// Candidates kept per full bucket to replace entries that fail a liveness check.
    public var replacementCacheSize = 8
    /// Bound on entries in the whole table. 256 buckets × k is 5120, but only a node that can
    /// grind peer ids to long common prefixes with ours fills deep buckets, so an honest table
    /// holds about k · log2(N / k) + k entries (≈ 340 for a million nodes). The bound caps what
    /// such grinding can make us hold.
    public var maximumEntries = 1024
    /// Addresses kept per peer; the rest of a longer list is dropped. A peer announcing
    /// thousands of addresses must not grow the table.
    public var maximumAddressesPerPeer = 16
    /// A full bucket whose least recently seen entry was heard from within this interval takes
    /// a newcomer into the replacement cache without a liveness check: every entry is fresh,
    /// and it bounds checks to about one per entry per interval however busy the bucket is.
    public var livenessCheckInterval: TimeAmount = .minutes(1)
    /// A liveness check not reported back within this time counts as lost, and the next
    /// newcomer may start another (the check itself is the caller's ping, with its own timeout).
    public var livenessCheckTimeout: TimeAmount = .seconds(30)
    /// Kademlia paper §2.3: "each node refreshes any bucket to which it has not performed a node
    /// lookup in the past hour."
    public var refreshInterval: TimeAmount = .hours(1)
    /// Refresh covers buckets for common prefix lengths 0 through the table's deepest non-empty
    /// bucket, capped at this (as go-libp2p-kad-dht does). Buckets deeper than about
    /// log2(N / k) hold every node there is, so the self-lookup the caller runs with each
    /// refresh round fills them; 15 is that depth for N ≈ 650 000.
    public var maximumRefreshCommonPrefixLength = 15
    /// At most this many entries of one subnet (IPv4 /24, IPv6 /48) in a bucket, and as many
    /// candidates of one subnet in its replacement cache (go-libp2p's diversity filter bounds a
    /// bucket's share of one IP group too); 2 of k = 20 means an
    /// attacker needs 10 distinct /24s (or /48s) to fill one bucket, while a few honest nodes
    /// behind one NAT or in one cloud subnet still get in (spec/dht.md §4).
    public var maximumEntriesPerSubnetPerBucket = 2
    /// At most this many entries of one subnet in the whole table: one network holds at most
    /// 10 of the ~200–340 entries of a table in a large network, yet honest co-located nodes,
    /// whose ids spread over many buckets, are not turned away.
    public var maximumEntriesPerSubnet = 10

    /// The defaults above.
    public init() {}
}
