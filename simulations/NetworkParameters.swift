import NIOCore
import Resolution

/// What the virtual network and its nodes do: message latency, timeouts, what a departed node does
/// with a request, and the DHT settings of every node. The defaults are the real node's
/// (spec/dht.md §12) where it has one.
struct NetworkParameters: Sendable {
    /// One-way latency of every message, drawn uniformly from this range (milliseconds).
    var latencyMilliseconds: ClosedRange<Int64> = 5...50
    /// spec/dht.md §6.2: a request holds its lookup slot for 3 s.
    var requestTimeout: TimeAmount = .seconds(3)
    /// spec/dht.md §1: a request is abandoned after 10 s; a node that left without a trace (host
    /// gone) fails requests only then.
    var hardTimeout: TimeAmount = .seconds(10)
    /// Fraction of departed nodes that refuse connections at once (the host is up, the process is
    /// gone) instead of never answering. Made-up peers in junk answers refuse with this probability
    /// too.
    var refusedFraction = 0.2
    /// k and the rest of the routing table settings.
    var routingTable = RoutingTable.Configuration()
    /// r: a record is put to the r closest nodes its publisher's lookup found.
    var replicationFactor = 5
    /// A resolve stops once the leading claim leads every rival by this many replicas.
    var valueQuorum = 4
    /// Disjoint paths of value lookups (S/Kademlia).
    var disjointPaths = 1
    /// α, requests in flight per lookup path.
    var parallelism = 3
    /// Nodes wake up this often to refresh buckets, republish and re-replicate.
    var maintenanceInterval: TimeAmount = .seconds(60)
    /// Storers push their records to the current r closest this often.
    var replicationInterval: TimeAmount = .hours(1)
    /// TTL of the records owners sign (spec/dht.md §7.1: 24 h).
    var recordTTL: UInt32 = RecordLimits.defaultTTL
    /// Owners re-sign and republish once this fraction of the TTL has passed (12 h for 24 h).
    var republishFraction = 0.5

    /// The quotas of every node's record store (agentd's defaults: 100,000 records, 1,000 per
    /// sender).
    var recordStore = RecordStoreConfiguration()

    var bucketSize: Int { routingTable.bucketSize }

    /// Settings of FIND_NODE lookups, as `DHTConfiguration.closestPeersLookup` makes them.
    var closestPeersLookup: LookupConfiguration {
        var configuration = LookupConfiguration()
        configuration.resultCount = routingTable.bucketSize
        configuration.requestTimeout = requestTimeout
        configuration.parallelism = parallelism
        return configuration
    }

    /// Settings of GET_VALUE lookups, as `DHTConfiguration.valueLookup` makes them: the quorum is
    /// judged by the resolver (agreeing replicas), not counted by the state machine.
    var valueLookup: LookupConfiguration {
        var configuration = closestPeersLookup
        configuration.disjointPaths = disjointPaths
        return configuration
    }

    /// A one-way latency draw.
    func latency(using generator: inout SimulationGenerator) -> TimeAmount {
        .milliseconds(Int64.random(in: latencyMilliseconds, using: &generator))
    }
}
