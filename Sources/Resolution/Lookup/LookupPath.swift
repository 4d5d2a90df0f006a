import NIOCore

/// One path of a lookup: the peers it knows, sorted by distance to the target, each with the state
/// of our request to it. A plain lookup is a single path; S/Kademlia disjoint lookups run several
/// that share nothing but the rule that a peer is queried by one path only.
///
/// This is the iterative algorithm of the libp2p kad-dht spec, "Peer routing": query the closest
/// not-yet-queried peers, at most α at a time, add the peers each answer names, and stop once the k
/// closest peers seen have answered.
struct LookupPath<Peer: RoutingTablePeer>: Sendable {
    enum PeerState: Hashable, Sendable {
        case notContacted
        /// A request is out; it holds a slot until `until`.
        case waiting(until: NIODeadline)
        /// The request timed out. The slot is free and the peer no longer blocks termination, but
        /// an answer that still arrives is used.
        case unresponsive
        case failed
        case succeeded
        /// Another disjoint path queried this peer first; this path skips it.
        case claimedElsewhere
    }

    struct Candidate: Sendable {
        var peer: Peer
        let key: KademliaKey
        let distance: KademliaDistance
        var state: PeerState
        /// 0 for a seed; one more than the peer whose answer named it.
        var depth: Int
    }

    enum Step {
        case query(Peer)
        case waiting
        case finished
    }

    enum Offer {
        case added
        case known
        case discarded
    }

    /// Sorted by `distance`, no two equal (equal distance means equal key means the same peer).
    private(set) var candidates: [Candidate] = []
    /// Requests holding a slot.
    private(set) var inFlight = 0
    private(set) var isFinished = false
    /// Keys of asked peers that failed or timed out and were dropped to make room: they stay known,
    /// so they are never asked again. Grows only by requests made, which answers bound: every
    /// answer names at most `maximumCloserPeersPerResponse` peers.
    private(set) var forgotten: Set<KademliaKey> = []
    /// Distance of the k-th closest peer that answered, once k have. Nothing at or beyond it can
    /// enter the result any more, so such peers are neither tracked nor kept.
    private(set) var resultBound: KademliaDistance?

    /// Where a peer at `distance` is or would go.
    private func position(of distance: KademliaDistance) -> (index: Int, found: Bool) {
        var low = 0
        var high = candidates.count
        while low < high {
            let middle = (low + high) / 2
            if candidates[middle].distance < distance {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return (low, low < candidates.count && candidates[low].distance == distance)
    }

    /// Starts tracking `peer` unless it is known, cannot matter, or does not fit.
    mutating func offer(
        _ peer: Peer, key: KademliaKey, distance: KademliaDistance, depth: Int, capacity: Int
    ) -> Offer {
        if let resultBound, !(distance < resultBound) { return .discarded }
        if forgotten.contains(key) { return .known }
        var (index, found) = position(of: distance)
        if found {
            if candidates[index].state == .notContacted {
                candidates[index].depth = Swift.min(candidates[index].depth, depth)
                if candidates[index].peer.addresses.isEmpty, !peer.addresses.isEmpty {
                    candidates[index].peer = candidates[index].peer.withAddresses(peer.addresses)
                }
            }
            return .known
        }
        if candidates.count >= capacity {
            // Junk-flood bound. Make room by dropping, in this order: the farthest peer not yet asked
            // that is farther than the newcomer; else the farthest peer that failed or timed out
            // (made-up peers in a flood end up there), whose key is kept so it is never asked again;
            // else the newcomer. Peers with a request out and peers that answered always stay.
            if let victim = candidates[index...].lastIndex(where: { $0.state == .notContacted }) {
                candidates.remove(at: victim)
            } else if let victim = candidates.lastIndex(where: { $0.state == .failed || $0.state == .unresponsive }) {
                forgotten.insert(candidates[victim].key)
                candidates.remove(at: victim)
                if victim < index { index -= 1 }
            } else {
                return .discarded
            }
        }
        candidates.insert(
            Candidate(peer: peer, key: key, distance: distance, state: .notContacted, depth: depth), at: index)
        return .added
    }

    /// Frees the slots of requests whose time is up; returns how many.
    mutating func expireRequests(now: NIODeadline) -> Int {
        guard inFlight > 0 else { return 0 }
        var expired = 0
        for index in candidates.indices {
            if case .waiting(let deadline) = candidates[index].state, deadline <= now {
                candidates[index].state = .unresponsive
                expired += 1
            }
        }
        inFlight -= expired
        return expired
    }

    /// The next request to send, if a slot is free and one of the k closest live peers has not been
    /// asked; otherwise whether the path waits or is done.
    ///
    /// `claims` maps each queried peer to the path that queried it; it is consulted and updated
    /// only when `exclusive` (disjoint paths).
    mutating func next(
        now: NIODeadline, configuration: LookupConfiguration, path: Int,
        claims: inout [KademliaKey: Int], exclusive: Bool
    ) -> Step {
        guard !isFinished else { return .finished }
        // Walk the k closest peers that have not failed or timed out. Termination: all of them
        // answered. Progress: ask the closest not yet asked, while a slot is free.
        var live = 0
        var pending = false
        for index in candidates.indices {
            if live == configuration.resultCount { break }
            switch candidates[index].state {
            case .failed, .unresponsive, .claimedElsewhere:
                continue
            case .succeeded:
                live += 1
            case .waiting:
                live += 1
                pending = true
            case .notContacted:
                guard inFlight < configuration.parallelism else { return .waiting }
                let key = candidates[index].key
                if exclusive {
                    if let owner = claims[key], owner != path {
                        candidates[index].state = .claimedElsewhere
                        continue
                    }
                    claims[key] = path
                }
                candidates[index].state = .waiting(until: now + configuration.requestTimeout)
                inFlight += 1
                return .query(candidates[index].peer)
            }
        }
        if pending { return .waiting }
        isFinished = true
        return .finished
    }

    /// Records the answer of the peer with `key`. Returns the peer, its depth and whether the
    /// answer came after the timeout; `nil` if no request to it is open (never asked, already
    /// answered or failed, or the path is done).
    mutating func succeed(
        key: KademliaKey, distance: KademliaDistance, resultCount: Int
    ) -> (peer: Peer, depth: Int, late: Bool)? {
        guard !isFinished else { return nil }
        let (index, found) = position(of: distance)
        guard found, candidates[index].key == key else { return nil }
        let late: Bool
        switch candidates[index].state {
        case .waiting:
            inFlight -= 1
            late = false
        case .unresponsive:
            late = true
        case .notContacted, .failed, .succeeded, .claimedElsewhere:
            return nil
        }
        candidates[index].state = .succeeded
        let answer = (candidates[index].peer, candidates[index].depth, late)
        tightenResultBound(resultCount: resultCount)
        return answer
    }

    /// Records that the request to the peer with `key` failed; false if no request to it is open.
    mutating func fail(key: KademliaKey, distance: KademliaDistance) -> Bool {
        guard !isFinished else { return false }
        let (index, found) = position(of: distance)
        guard found, candidates[index].key == key else { return false }
        switch candidates[index].state {
        case .waiting:
            inFlight -= 1
        case .unresponsive:
            break
        case .notContacted, .failed, .succeeded, .claimedElsewhere:
            return false
        }
        candidates[index].state = .failed
        return true
    }

    /// Ends the path (quorum reached elsewhere); open requests no longer matter.
    mutating func finish() {
        isFinished = true
    }

    /// The closest `limit` peers that answered, with their depth, closest first.
    func answered(limit: Int) -> some Sequence<Candidate> {
        candidates.lazy.filter { $0.state == .succeeded }.prefix(limit)
    }

    /// The earliest time a request of this path times out.
    var nextTimeout: NIODeadline? {
        guard inFlight > 0 else { return nil }
        var earliest: NIODeadline?
        for candidate in candidates {
            if case .waiting(let deadline) = candidate.state, earliest.map({ deadline < $0 }) ?? true {
                earliest = deadline
            }
        }
        return earliest
    }

    /// Once k peers answered, the k-th closest of them bounds the result: drops what lies beyond
    /// and cannot matter any more. Requests still out beyond it are kept, since their answers may
    /// name closer peers.
    private mutating func tightenResultBound(resultCount: Int) {
        var answered = 0
        guard
            let boundIndex = candidates.firstIndex(where: {
                guard $0.state == .succeeded else { return false }
                answered += 1
                return answered == resultCount
            })
        else { return }
        resultBound = candidates[boundIndex].distance
        var write = boundIndex + 1
        for read in (boundIndex + 1)..<candidates.count {
            switch candidates[read].state {
            case .waiting, .unresponsive:
                candidates.swapAt(write, read)
                write += 1
            case .notContacted, .failed, .succeeded, .claimedElsewhere:
                break
            }
        }
        candidates.removeLast(candidates.count - write)
    }
}
