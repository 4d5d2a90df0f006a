import Identity
import NIOCore

/// The iterative Kademlia lookup as a sans-I/O state machine, after rust-libp2p's
/// `ClosestPeersIter`: it says whom to ask, the driver asks and reports back, time is passed in.
///
/// A driver (the kad protocol on the host, the simulator, a test) runs it like this:
/// ```swift
/// let seeds = table.closestPeers(to: key, count: 20).map(\.peer)
/// var lookup = ClosestPeersLookup(target: key, seeds: seeds, localKey: table.localKey)
/// while true {
///     switch lookup.next(now: .now()) {
///     case .query(let peer): startRequest(to: peer)   // FIND_NODE / GET_VALUE; then ask again
///     case .waiting: await nextEvent(until: lookup.nextTimeout)
///         // an answer:  lookup.received(from: peer, closerPeers: answer, now: .now())
///         // a failure:  lookup.failed(peer, now: .now())
///     case .finished(let result): return result
///     }
/// }
/// ```
/// Answers and failures for requests the lookup does not hold open (it never asked, it already
/// heard, it has finished) are refused with `false` rather than trapping: after the end they are
/// ordinary races, and a driver decides for itself whether an unsolicited answer is a bug.
///
/// Guarantees, whatever the responses contain:
/// - At most α requests of a path hold a slot at once; a timed-out request frees its slot, and a
///   late answer is still used.
/// - No peer is queried twice (with disjoint paths: by two paths).
/// - The local peer, peers already known, and peers farther than the k-th closest answer are
///   ignored; a closer peer is always considered.
/// - Memory is bounded: at most `maximumCloserPeersPerResponse` peers are read from a response
///   and at most `maximumTrackedPeers` tracked per path (plus the bare keys of failed peers
///   displaced to make room, never more than the requests made).
/// - The lookup ends when the k closest peers it has seen all answered or failed (or timed out),
///   when it runs out of peers, or for value lookups when the quorum is reached.
///
/// Generic over the peer handle (as `KBucketsTable`): agentd's lookups track `KademliaPeer`s, the
/// simulator's track 4-byte handles whose keys are found in `keySpace`.
public struct ClosestPeersLookup<Peer: RoutingTablePeer>: Sendable {
    public typealias Configuration = LookupConfiguration

    /// The key looked up.
    public let target: KademliaKey
    public let configuration: Configuration
    /// Where the peers' keys are found.
    public let keySpace: Peer.KeySpace
    /// Counters so far; the final ones are in `LookupResult.statistics`.
    public private(set) var statistics = LookupStatistics()

    private let localKey: KademliaKey
    private var paths: [LookupPath<Peer>]
    /// Which path queried each peer; kept only with disjoint paths.
    private var claims: [KademliaKey: Int] = [:]
    /// The path asked first on the next `next`, so paths take turns.
    private var nextPath = 0
    private var peersWithValue: [Peer] = []
    private var startedAt: NIODeadline?
    private var result: LookupResult<Peer>?

    /// A lookup of `target` starting from `seeds` (normally the k closest peers of the routing
    /// table). `localKey` is ours: we never query ourselves. With disjoint paths the seeds, sorted
    /// by distance, are dealt out to the paths in turn (S/Kademlia §4.4).
    public init<Seeds: Sequence<Peer>>(
        target: KademliaKey, seeds: Seeds, localKey: KademliaKey, keySpace: Peer.KeySpace,
        configuration: Configuration = Configuration()
    ) {
        precondition(configuration.parallelism > 0, "α must be positive")
        precondition(configuration.resultCount > 0, "k must be positive")
        precondition(configuration.disjointPaths > 0, "at least one path")
        precondition(configuration.maximumTrackedPeers >= configuration.resultCount, "tracking bound below k")
        precondition(configuration.valueQuorum.map { $0 > 0 } ?? true, "quorum must be positive")
        self.target = target
        self.configuration = configuration
        self.localKey = localKey
        self.keySpace = keySpace
        self.paths = Array(repeating: LookupPath(), count: configuration.disjointPaths)

        var sorted: [(peer: Peer, key: KademliaKey, distance: KademliaDistance)] = []
        for peer in seeds {
            let key = peer.key(in: keySpace)
            if key != localKey { sorted.append((peer, key, target.distance(to: key))) }
        }
        sorted.sort { $0.distance < $1.distance }
        var path = 0
        var previous: KademliaDistance?
        for (peer, key, distance) in sorted where distance != previous {
            previous = distance
            _ = paths[path].offer(
                trimmed(peer), key: key, distance: distance, depth: 0, capacity: configuration.maximumTrackedPeers)
            path = (path + 1) % paths.count
        }
    }

    /// Whether the lookup is over.
    public var isFinished: Bool { result != nil }

    /// Requests holding a slot, over all paths.
    public var inFlight: Int { paths.reduce(0) { $0 + $1.inFlight } }

    /// Peers tracked, over all paths; bounded by `disjointPaths × maximumTrackedPeers`. (Failed
    /// peers displaced under pressure are remembered by key only; see `maximumTrackedPeers`.)
    public var trackedPeerCount: Int { paths.reduce(0) { $0 + $1.candidates.count } }

    /// When the earliest open request times out: call `next(now:)` then, if nothing else happened.
    public var nextTimeout: NIODeadline? {
        guard result == nil else { return nil }
        return paths.compactMap(\.nextTimeout).min()
    }

    /// The keys of the `count` closest peers the lookup knows of, over all paths, leaving out those
    /// whose request failed or timed out, if every one of them has answered; `nil` while one of
    /// them is still to be asked or to answer, or while fewer than `count` are known.
    ///
    /// This is what a value lookup's early stop rests on (spec/dht.md §8.2): the answers that end
    /// it must come from the peers closest to the key among those the lookup has heard of, not from
    /// whichever peers answered first (colluders steering the lookup toward one another answer
    /// first).
    public func closestAnswered(count: Int) -> [KademliaKey]? {
        precondition(count > 0, "count must be positive")
        // A peer is in one path's candidates as asked (waiting, answered, failed or timed out) and
        // may sit in other paths' as not contacted or claimed elsewhere: it answered if some path
        // holds its answer, and is out if some path saw it fail or time out.
        var known: [KademliaKey: (distance: KademliaDistance, answered: Bool, out: Bool)] = [:]
        // At most `maximumTrackedPeers` per path, so this is bounded; a driver asks only after an
        // answer with a value.
        for path in paths {
            for candidate in path.candidates {
                var entry = known[candidate.key] ?? (candidate.distance, false, false)
                switch candidate.state {
                case .succeeded: entry.answered = true
                case .failed, .unresponsive: entry.out = true
                case .notContacted, .waiting, .claimedElsewhere: break
                }
                known[candidate.key] = entry
            }
        }
        let closest = known.filter { !$0.value.out || $0.value.answered }
            .sorted { $0.value.distance < $1.value.distance }.prefix(count)
        guard closest.count == count, closest.allSatisfy({ $0.value.answered }) else { return nil }
        return closest.map(\.key)
    }

    /// Advances the lookup at `now`: times out overdue requests, then returns the next request to
    /// send, or that the lookup waits, or its result. Call it repeatedly until it stops returning
    /// `.query`.
    public mutating func next(now: NIODeadline) -> LookupAction<Peer> {
        if let result { return .finished(result) }
        if startedAt == nil { startedAt = now }
        for path in paths.indices {
            statistics.timeouts += paths[path].expireRequests(now: now)
        }
        var waiting = false
        let exclusive = paths.count > 1
        for offset in 0..<paths.count {
            let path = (nextPath + offset) % paths.count
            switch paths[path].next(
                now: now, configuration: configuration, path: path, claims: &claims, exclusive: exclusive)
            {
            case .query(let peer):
                nextPath = (path + 1) % paths.count
                statistics.requests += 1
                return .query(peer)
            case .waiting:
                waiting = true
            case .finished:
                break
            }
        }
        if waiting { return .waiting }
        return .finished(finish(.converged, now: now))
    }

    /// Reports `peer`'s answer: the peers it says are closer to the target and, for value lookups,
    /// whether it returned a record the caller validated. Returns false (and changes nothing) if no
    /// request to `peer` is open: never sent, already answered or failed, or the lookup is over.
    /// An answer after the request timed out is still used.
    @discardableResult
    public mutating func received<Peers: Sequence<Peer>>(
        from peer: Peer, closerPeers: Peers, foundValue: Bool = false, now: NIODeadline
    ) -> Bool {
        received(fromKey: peer.key(in: keySpace), closerPeers: closerPeers, foundValue: foundValue, now: now)
    }

    /// `received(from:…)` for the peer whose key is `key`.
    @discardableResult
    public mutating func received<Peers: Sequence<Peer>>(
        fromKey key: KademliaKey, closerPeers: Peers, foundValue: Bool = false, now: NIODeadline
    ) -> Bool {
        guard result == nil else { return false }
        guard let path = path(of: key),
            let answer = paths[path].succeed(
                key: key, distance: target.distance(to: key), resultCount: configuration.resultCount)
        else { return false }
        statistics.responses += 1
        if answer.late { statistics.lateResponses += 1 }

        var read = 0
        for closer in closerPeers {
            guard read < configuration.maximumCloserPeersPerResponse else {
                statistics.truncatedResponses += 1
                break
            }
            read += 1
            let closerKey = closer.key(in: keySpace)
            guard closerKey != localKey else {
                statistics.discardedPeers += 1
                continue
            }
            let offer = paths[path].offer(
                trimmed(closer), key: closerKey, distance: target.distance(to: closerKey), depth: answer.depth + 1,
                capacity: configuration.maximumTrackedPeers)
            switch offer {
            case .added: statistics.discoveredPeers += 1
            case .discarded: statistics.discardedPeers += 1
            case .known: break
            }
        }

        if foundValue {
            peersWithValue.append(answer.peer)
            if let quorum = configuration.valueQuorum, peersWithValue.count >= quorum {
                _ = finish(.quorumReached, now: now)
            }
        }
        return true
    }

    /// Reports that the request to `peer` failed (dial error, reset, malformed answer). Returns
    /// false if no request to `peer` is open. A peer that timed out may still be reported failed.
    @discardableResult
    public mutating func failed(_ peer: Peer, now: NIODeadline) -> Bool {
        failed(key: peer.key(in: keySpace), now: now)
    }

    /// `failed(_:now:)` for the peer whose key is `key`.
    @discardableResult
    public mutating func failed(key: KademliaKey, now: NIODeadline) -> Bool {
        guard result == nil else { return false }
        guard let path = path(of: key), paths[path].fail(key: key, distance: target.distance(to: key)) else {
            return false
        }
        statistics.failures += 1
        return true
    }

    /// Ends the lookup now because the driver has what it needs (for example enough agreeing
    /// records, judged by rules the state machine does not know). The termination is
    /// `quorumReached`; every later call returns the same result.
    @discardableResult
    public mutating func stop(now: NIODeadline) -> LookupResult<Peer> {
        if let result { return result }
        return finish(.quorumReached, now: now)
    }

    private func path(of key: KademliaKey) -> Int? {
        paths.count == 1 ? 0 : claims[key]
    }

    private func trimmed(_ peer: Peer) -> Peer {
        guard peer.addresses.count > configuration.maximumAddressesPerPeer else { return peer }
        return peer.withAddresses(Array(peer.addresses.prefix(configuration.maximumAddressesPerPeer)))
    }

    private mutating func finish(_ termination: LookupTermination, now: NIODeadline) -> LookupResult<Peer> {
        for path in paths.indices { paths[path].finish() }
        var answered = paths.flatMap { $0.answered(limit: configuration.resultCount) }
        answered.sort { $0.distance < $1.distance }
        if answered.count > configuration.resultCount {
            answered.removeLast(answered.count - configuration.resultCount)
        }
        var termination = termination
        if termination == .converged && answered.count < configuration.resultCount { termination = .exhausted }
        statistics.hops = answered.map { $0.depth + 1 }.max() ?? 0
        statistics.duration = now - (startedAt ?? now)
        let result = LookupResult<Peer>(
            closest: answered.map(\.peer), peersWithValue: peersWithValue, termination: termination,
            statistics: statistics)
        self.result = result
        return result
    }
}

extension ClosestPeersLookup where Peer == KademliaPeer {
    /// A lookup over `KademliaPeer`s, which carry their keys.
    public init<Seeds: Sequence<KademliaPeer>>(
        target: KademliaKey, seeds: Seeds, localKey: KademliaKey, configuration: Configuration = Configuration()
    ) {
        self.init(
            target: target, seeds: seeds, localKey: localKey, keySpace: IntrinsicKeySpace(), configuration: configuration)
    }

    /// `received(from:…)` by peer id.
    @discardableResult
    public mutating func received<Peers: Sequence<KademliaPeer>>(
        from peer: PeerID, closerPeers: Peers, foundValue: Bool = false, now: NIODeadline
    ) -> Bool {
        received(fromKey: KademliaKey(peer: peer), closerPeers: closerPeers, foundValue: foundValue, now: now)
    }

    /// `failed(_:now:)` by peer id.
    @discardableResult
    public mutating func failed(_ peer: PeerID, now: NIODeadline) -> Bool {
        failed(key: KademliaKey(peer: peer), now: now)
    }
}
