import NIOCore

/// Whether this node serves the DHT (spec/dht.md, "Modes").
public enum DHTMode: String, Hashable, Sendable, CaseIterable {
    /// Queries others, answers nobody, and is never added to others' routing tables (it does not
    /// offer the kad protocol). For hosts that others cannot reach.
    case client
    /// Queries and answers; others add it to their routing tables.
    case server
    /// Follows AutoNAT (`DHT.reachabilityChanged`): server when the node is reachable from
    /// outside, client when it is not; while that is unknown, server when the node listens on at
    /// least one address, client otherwise.
    case auto
}

/// Whether routing-table entries at loopback addresses count in the subnet limits (spec/dht.md §4).
public enum LoopbackExemption: String, Hashable, Sendable {
    /// Loopback entries count like any other (all of 127.0.0.0/8 is one /24 per 256 addresses).
    case never
    /// Loopback entries are not counted.
    case always
    /// Not counted when every address the node listens on is loopback (decided when the DHT
    /// starts): only processes on this host can reach such a node at all, and a loopback entry is
    /// a process on this host by construction (we reached it there ourselves, §4). A node that
    /// also listens on other addresses counts them, so that local processes cannot flood it.
    case whenLoopbackOnly
}

/// Settings of the DHT; the defaults are the ones spec/dht.md states.
public struct DHTConfiguration: Sendable {
    /// The protocol id: ours by default, `/ipfs/kad/1.0.0` to speak to libp2p's public DHTs.
    public var protocolID = DHTConfiguration.agentProtocolID
    public var mode: DHTMode = .auto
    /// Number of nodes a record is stored at: the r closest to its key.
    public var replicationFactor = 5
    /// A value lookup stops early once the leading claim is ahead of every rival claim by this many
    /// replicas (with no rival: once this many replicas returned it); otherwise it runs until the
    /// k closest peers answered.
    public var valueQuorum = 4
    /// Disjoint lookup paths for value lookups (S/Kademlia); 1 = plain Kademlia.
    public var disjointPaths = 1
    /// A request not answered within this time frees its lookup slot (the answer is still used if
    /// it comes later, up to `requestHardTimeout`).
    public var requestTimeout: TimeAmount = .seconds(3)
    /// A request is abandoned (its stream reset) after this long.
    public var requestHardTimeout: TimeAmount = .seconds(10)
    public var routingTable = RoutingTable.Configuration()
    /// Whether loopback entries are left out of the routing table's subnet limits.
    public var loopbackExemption = LoopbackExemption.whenLoopbackOnly
    public var cache = ResolutionCache.Configuration()
    /// How long after an upkeep round ended the next one starts (bucket refresh, republishing, restores; spec/dht.md §10).
    public var maintenanceInterval: TimeAmount = .seconds(60)
    /// Own records are re-signed and republished when this fraction of their TTL has passed.
    public var republishFraction = 0.5
    /// Stored records of others are pushed again to the current closest nodes this often.
    public var replicationInterval: TimeAmount = .hours(1)
    /// Re-replication pushes at most this many records at once, each a lookup (α requests in
    /// flight) and its PUTs (spec/dht.md §7.2). At least 1.
    public var replicationConcurrency = 4
    /// Re-replication starts at most this many records per second, evenly spaced: a round of
    /// 10,000 records takes at least 1000 s, well inside `replicationInterval`. At least 1.
    public var replicationRate = 10
    /// At most this many inbound kad streams at once (all peers together). A stream beyond a limit
    /// takes the slot of the longest-idle stream in the full scope (reset); it is refused only when
    /// every stream there is answering a request.
    public var maximumInboundStreams = 256
    /// At most this many inbound kad streams at once from one peer (so one peer cannot take them all).
    public var maximumInboundStreamsPerPeer = 16
    /// At most this many inbound kad streams at once from one remote IP address (many peer ids on
    /// one host share it).
    public var maximumInboundStreamsPerIP = 64
    /// At most this many requests served on one inbound stream.
    public var maximumRequestsPerStream = 256
    /// An inbound stream that sends no request for this long is closed.
    public var inboundIdleTimeout: TimeAmount = .seconds(60)
    /// At most this many provider records held (ADD_PROVIDER), all keys together.
    public var maximumProviderRecords = 10_000
    /// At most this many dial-backs (spec/dht.md §4) in flight at once; a peer that comes while
    /// all are busy is dialled back when it next proves itself.
    public var maximumConcurrentDialBacks = 16
    /// A peer whose dial-back failed is not dialled back again for this long.
    public var dialBackRetryInterval: TimeAmount = .minutes(5)
    /// At most this many provider records from one peer (so one peer id cannot take them all).
    public var maximumProviderRecordsPerPeer = 256
    /// Provider records expire after this long (libp2p: 48 h).
    public var providerRecordTTL: TimeAmount = .hours(48)

    public static let agentProtocolID = "/agent/kad/1.0.0"
    public static let libp2pProtocolID = "/ipfs/kad/1.0.0"

    public init() {}

    /// The lookup settings for closest-peer (FIND_NODE) lookups.
    var closestPeersLookup: LookupConfiguration {
        var configuration = LookupConfiguration()
        configuration.resultCount = routingTable.bucketSize
        configuration.requestTimeout = requestTimeout
        return configuration
    }

    /// The lookup settings for value (GET_VALUE) lookups.
    var valueLookup: LookupConfiguration {
        // The quorum is judged by the DHT (agreeing replicas), not counted by the state machine.
        var configuration = LookupConfiguration()
        configuration.disjointPaths = disjointPaths
        configuration.resultCount = routingTable.bucketSize
        configuration.requestTimeout = requestTimeout
        return configuration
    }
}
