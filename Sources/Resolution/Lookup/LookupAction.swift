import NIOCore

/// What a lookup asks its driver to do next (`ClosestPeersLookup.next(now:)`).
public enum LookupAction<Peer: Hashable & Sendable>: Hashable, Sendable {
    /// Send the request (FIND_NODE or GET_VALUE for the target) to this peer and report the outcome
    /// with `received` or `failed`. Call `next` again: more requests may be due.
    case query(Peer)
    /// Nothing to send now. Call `next` again after a response, a failure, or at `nextTimeout`.
    case waiting
    /// The lookup is over; every later call returns the same result.
    case finished(LookupResult<Peer>)
}

/// Why a lookup ended.
public enum LookupTermination: String, Hashable, Sendable {
    /// The k closest peers it saw have all answered (those that failed or timed out excepted).
    case converged
    /// It ran out of peers to ask before k answered: the network, as far as it is reachable, has
    /// fewer peers.
    case exhausted
    /// A value lookup heard a valid record from `valueQuorum` peers.
    case quorumReached = "quorum_reached"
}

/// The outcome of a lookup.
public struct LookupResult<Peer: Hashable & Sendable>: Hashable, Sendable {
    /// Up to k peers that answered, closest to the target first. With disjoint paths: the merge of
    /// all paths.
    public let closest: [Peer]
    /// Peers that reported a record (`received(…, foundValue: true, …)`), in order of arrival. The
    /// caller corrects those among `closest` that did not (libp2p kad-dht spec, "Entry correction").
    public let peersWithValue: [Peer]
    public let termination: LookupTermination
    public let statistics: LookupStatistics
}

/// Counters of one lookup, for metrics and benchmarks.
public struct LookupStatistics: Hashable, Sendable {
    /// Requests the lookup asked for (`.query` actions).
    public internal(set) var requests = 0
    /// Answers accepted, late ones included.
    public internal(set) var responses = 0
    /// Answers that came after the request's timeout and were still used.
    public internal(set) var lateResponses = 0
    /// Requests reported failed.
    public internal(set) var failures = 0
    /// Requests that timed out (whether or not they were answered later).
    public internal(set) var timeouts = 0
    /// Peers that responses named and the lookup started tracking.
    public internal(set) var discoveredPeers = 0
    /// Peers responses named that were discarded: the local peer, peers beyond the k-th closest
    /// answer, peers over the tracking bound.
    public internal(set) var discardedPeers = 0
    /// Responses with more than `maximumCloserPeersPerResponse` peers (the excess was not read).
    public internal(set) var truncatedResponses = 0
    /// Hops: the longest chain of requests that led to a peer in the result, counting the request
    /// to a seed as hop 1 and each "heard of it from" link as one more. Theory for a lookup from a
    /// full routing table: about log2(N) / log2(k) + 1.
    public internal(set) var hops = 0
    /// From the first `next(now:)` to the end.
    public internal(set) var duration: TimeAmount = .zero
}
