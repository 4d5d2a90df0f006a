import NIOCore

/// Parameters and bounds of one lookup (`LookupConfiguration`).
public struct LookupConfiguration: Hashable, Sendable {
    /// α, requests in flight per path. The libp2p kad-dht spec defaults to 10; the Kademlia
    /// paper and issue #4 use 3, which finds the same peers with fewer wasted requests.
    /// A request that timed out no longer holds a slot.
    public var parallelism = 3
    /// k, the number of closest peers the lookup must hear from (libp2p kad-dht spec,
    /// "Replication parameter (k)": 20).
    public var resultCount = 20
    /// How long a request holds its slot. After that the peer is *unresponsive*: it no longer
    /// blocks termination, but an answer that still arrives is used.
    public var requestTimeout: TimeAmount = .seconds(10)
    /// Bound on peers tracked per path, whatever responses contain. When full, a newcomer
    /// displaces the farthest peer not yet asked (if that one is farther), else the farthest
    /// peer that failed or timed out (only its key is kept, so it is never asked again), else it
    /// is dropped. Peers with a request out and peers that answered are never displaced.
    public var maximumTrackedPeers = 160
    /// Peers read from one response; the rest are ignored. libp2p kad-dht spec: a response
    /// carries "the k closest nodes the peer knows", so more is junk, and this bounds what one
    /// liar can inject into a lookup to k peers.
    public var maximumCloserPeersPerResponse = 20
    /// Addresses kept per peer; a longer list is cut.
    public var maximumAddressesPerPeer = 16
    /// d, disjoint paths (S/Kademlia §4.4). With d > 1 the seeds are dealt out to d paths that
    /// each run with `parallelism`, each learn only from the peers they queried themselves, and
    /// never query a peer another path queried; the result merges the paths. One adversary on a
    /// path cannot steer the other paths.
    public var disjointPaths = 1
    /// For value lookups (GET_VALUE): stop once this many peers reported a record the caller
    /// found valid. `nil` for peer lookups (FIND_NODE), which run until the k closest answered;
    /// a value lookup without quorum also runs that far.
    public var valueQuorum: Int?

    /// The defaults above: a FIND_NODE lookup with α = 3, k = 20, one path.
    public init() {}

    /// A GET_VALUE lookup that stops after `quorum` peers returned a valid record.
    public static func valueLookup(quorum: Int, disjointPaths: Int = 1) -> LookupConfiguration {
        var configuration = LookupConfiguration()
        configuration.valueQuorum = quorum
        configuration.disjointPaths = disjointPaths
        return configuration
    }
}
