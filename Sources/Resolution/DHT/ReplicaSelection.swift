import Identity

/// Chooses the record to believe among the answers of several replicas (spec/dht.md, "Resolving").
///
/// Each replica answers with at most one record. Invalid records (bad signature, expired, another
/// name, malformed) are dropped before they get here. What is left can disagree in two ways:
/// - the same key at different seqs: a replica missed an update. The highest seq wins, always.
/// - different keys: someone claims a name that another key holds. The storing nodes apply the
///   first-claim rule (`RecordSelection`), so honest replicas agree on the holder; the claim held by
///   the most replicas wins. A rotation (a record whose `previous_key` endorsement is by another
///   claim's key, with a higher seq) continues that claim: it takes over its replicas.
///   Ties go to the claim the local store holds, then to the claim of the replica closest to the key.
///
/// This is a pure function of the answers, so it is tested without a network.
public enum ReplicaSelection {
    /// One claim's count in `choose`.
    private struct Tally {
        var votes = 0
        var replicaVotes = 0
        var rank = Int.max
        var heldLocally = false
    }

    /// One replica's valid answer; `Replica` identifies the replica (a peer id, a key).
    public struct Answer<Replica: Hashable & Sendable>: Sendable {
        public let replica: Replica
        public let record: SignedAgentRecord
        /// The replica's rank by distance to the key among those that answered (0 = closest).
        public let rank: Int

        public init(replica: Replica, record: SignedAgentRecord, rank: Int) {
            self.replica = replica
            self.record = record
            self.rank = rank
        }
    }

    /// The chosen record, with how many replicas support its claim.
    public struct Choice<Replica: Hashable & Sendable>: Sendable {
        public let record: SignedAgentRecord
        /// Replicas whose answer is this claim (any seq of the same key, or of a key it rotated from).
        public let supporters: Int
        /// Replicas whose answer is exactly `record`; the others are stale or hold a rival claim.
        public let upToDate: Set<Replica>
        /// Number of different keys that claimed the name.
        public let rivalClaims: Int
    }

    /// Picks the record to believe; `nil` when there are no answers and nothing held locally.
    /// - Parameters:
    ///   - local: the record our own store holds for the name, if any; it counts as one more
    ///     answer, ranked after the replicas.
    ///   - voters: only the answers of rank below this vote on which claim holds the name (the
    ///     replicas closest to the key, where the record was stored; nodes far from the key that
    ///     answer with a claim are not its replicas, and many of them, run by one operator, must
    ///     not outvote the replicas). Every valid answer still counts for the highest seq of the
    ///     winning key: a seq update is authenticated by that key, wherever it comes from. When no
    ///     answer is within `voters` (only the local record), all vote.
    public static func choose<Replica>(
        _ answers: [Answer<Replica>], local: SignedAgentRecord?, voters: Int = .max
    ) -> Choice<Replica>? {
        // (record, rank, is local): the replicas' answers plus our own store's.
        var all = answers.map { (record: $0.record, rank: $0.rank, local: false) }
        if let local { all.append((local, Int.max, true)) }
        guard !all.isEmpty else { return nil }

        // The best record of each key: highest seq; among equal seqs the first heard (a conflicting
        // second version of one seq never displaces the first, as in RecordSelection).
        var best: [Ed25519.PublicKey: SignedAgentRecord] = [:]
        var order: [Ed25519.PublicKey] = []
        for answer in all {
            let key = answer.record.record.publicKey
            if let held = best[key] {
                if answer.record.record.seq > held.record.seq { best[key] = answer.record }
            } else {
                best[key] = answer.record
                order.append(key)
            }
        }

        // Rotations: a claim whose best record is endorsed by another claim's key, with a higher
        // seq, continues that claim. Chains (A -> B -> C) are followed, at most `order.count` steps.
        var successor: [Ed25519.PublicKey: Ed25519.PublicKey] = [:]
        for key in order {
            guard let record = best[key], let rotation = record.record.rotation, rotation.previousKey != key,
                let previous = best[rotation.previousKey], record.record.seq > previous.record.seq
            else { continue }
            successor[rotation.previousKey] = key
        }
        func head(of key: Ed25519.PublicKey) -> Ed25519.PublicKey {
            var current = key
            var steps = 0
            while let next = successor[current], steps < order.count {
                current = next
                steps += 1
            }
            return current
        }

        var tallies: [Ed25519.PublicKey: Tally] = [:]
        var heads: [Ed25519.PublicKey] = []
        let anyVoter = all.contains { !$0.local && $0.rank < voters }
        for answer in all where answer.local || answer.rank < voters || !anyVoter {
            let target = head(of: answer.record.record.publicKey)
            var tally = tallies[target] ?? { heads.append(target); return Tally() }()
            tally.votes += 1
            if answer.local { tally.heldLocally = true } else { tally.replicaVotes += 1 }
            tally.rank = min(tally.rank, answer.rank)
            tallies[target] = tally
        }

        let winnerKey = heads.max { a, b in
            let ta = tallies[a]!
            let tb = tallies[b]!
            if ta.votes != tb.votes { return ta.votes < tb.votes }
            if ta.heldLocally != tb.heldLocally { return !ta.heldLocally }
            return ta.rank > tb.rank
        }!
        let winner = best[winnerKey]!
        let upToDate = Set(answers.filter { $0.record.bytes == winner.bytes }.map(\.replica))
        return Choice(
            record: winner, supporters: tallies[winnerKey]!.replicaVotes, upToDate: upToDate, rivalClaims: heads.count)
    }
}
