import Identity

/// The value side of a GET_VALUE lookup (spec/dht.md §8), beside the `ClosestPeersLookup` that
/// picks whom to ask: collects the replicas' records, says when the lookup may stop early, and
/// decides the outcome (the record to believe, the replicas to correct, whether the local copy is
/// updated). A pure value type with time passed in; `DHT.resolve` and the simulator both drive it,
/// so the simulator's figures describe the node's rules (issue #14).
///
/// Generic over the peer handle (as `ClosestPeersLookup`); replicas are told apart by their keys.
public struct ValueLookup<Peer: RoutingTablePeer>: Sendable {
    /// How one answer counted.
    public enum Verdict: Equatable, Sendable {
        /// A valid record of the name.
        case valid
        /// A record that is not valid for the name (another name, forged, expired, malformed).
        case invalid(ResolutionError.Kind)
    }

    /// What to do once the lookup has finished.
    public struct Decision: Sendable {
        /// The record to believe, with its support.
        public let choice: ReplicaSelection.Choice<KademliaKey>
        /// The closest replicas that did not answer with `choice.record`: send it to them (§8.4).
        public let staleReplicas: [Peer]
        /// Offer `choice.record` to the local store: it holds an older or rival record (§8.4).
        public let updatesLocalCopy: Bool
    }

    private struct Collected: Sendable {
        let peer: Peer
        let record: SignedAgentRecord
    }

    public let name: AgentName
    /// The point in the keyspace: SHA-256 of the record key.
    public let target: KademliaKey
    /// Valid answers, all under one key, that end the lookup early (spec/dht.md §8.2).
    public let quorum: Int
    /// r: the replicas closest to the key that vote on the claim (`ReplicaSelection.choose`), and
    /// that get the record when stale.
    public let replicationFactor: Int
    /// Where the peers' keys are found.
    public let keySpace: Peer.KeySpace

    /// Valid answers by the replica's key.
    private var answers: [KademliaKey: Collected] = [:]
    private var firstKey: Ed25519.PublicKey?
    private var keysDiffer = false
    /// Answers that carried an invalid record, with the kind of each.
    public private(set) var invalidAnswers: [(peer: Peer, kind: ResolutionError.Kind)] = []

    public init(name: AgentName, quorum: Int, replicationFactor: Int, keySpace: Peer.KeySpace) {
        self.keySpace = keySpace
        self.name = name
        self.target = KademliaKey(hashing: name.recordKey)
        self.quorum = quorum
        self.replicationFactor = replicationFactor
    }

    /// Valid answers so far.
    public var validAnswers: Int { answers.count }

    /// A replica (`peer`, at `key` in the keyspace) answered with `record`; `verify` checks it at
    /// the caller's time (`SignedAgentRecord.validate(now:)`, or a verifier that remembers
    /// signatures it has checked).
    @discardableResult
    public mutating func receive(
        _ record: SignedAgentRecord, from peer: Peer, key: KademliaKey,
        verify: (SignedAgentRecord) throws(ResolutionError) -> Void
    ) -> Verdict {
        do throws(ResolutionError) {
            guard record.record.name == name else {
                throw ResolutionError(.malformed, "record for \(record.record.name), asked for \(name)")
            }
            try verify(record)
        } catch {
            return receiveInvalid(from: peer, error.kind)
        }
        answers[key] = Collected(peer: peer, record: record)
        let signer = record.record.publicKey
        if let firstKey {
            if firstKey != signer { keysDiffer = true }
        } else {
            firstKey = signer
        }
        return .valid
    }

    /// A replica answered with a record that could not even be decoded (or sat under another key).
    @discardableResult
    public mutating func receiveInvalid(from peer: Peer, _ kind: ResolutionError.Kind) -> Verdict {
        invalidAnswers.append((peer, kind))
        return .invalid(kind)
    }

    /// The early stop (spec/dht.md §8.2): the `quorum` closest peers the lookup knows of (leaving
    /// out those that failed or timed out) have all answered with a valid record, and every valid
    /// answer so far is under one key. Any rival claim means the lookup runs until the k closest
    /// answered, so that the replicas closest to the key (who vote in `ReplicaSelection`) are heard.
    ///
    /// The agreeing answers must be the closest ones, not merely the first: adversaries that answer
    /// every request with their fellows closest to the key are asked early and, answering with one
    /// rival key, would otherwise end the lookup before any true replica was heard. Measured with
    /// `agent-sim adversaries` (2000 nodes, 20 % colluders sharing one rival key): with "any
    /// `quorum` answers" 54 of 76 wrong resolves (d = 1), 120 of 139 (d = 3) were such early stops.
    ///
    /// With many replicas the count is a majority of the r voters when that is more than `quorum`:
    /// an early stop must never decide what the full vote would not. (With r = 20 and quorum 4, the
    /// 4 colluders placed closest to a name ended the lookups of resolvers near it on their rival
    /// claim: half of the resolves by the owner's own replicas, `agent-sim adversaries --targeted`.)
    public func mayStop(_ lookup: ClosestPeersLookup<Peer>) -> Bool {
        let count = Swift.max(quorum, replicationFactor / 2 + 1)
        guard !keysDiffer, answers.count >= count, let closest = lookup.closestAnswered(count: count) else {
            return false
        }
        return closest.allSatisfy { answers[$0] != nil }
    }

    /// The outcome once the lookup finished with `closest` (the peers that answered, closest
    /// first), given the record our own store holds (`local`); nil when no valid record exists.
    public func decide(closest: [Peer], local: SignedAgentRecord?) -> Decision? {
        let ordered = answers.sorted { target.distance(to: $0.key) < target.distance(to: $1.key) }
        let ranked = ordered.enumerated().map { rank, answer in
            ReplicaSelection.Answer(replica: answer.key, record: answer.value.record, rank: rank)
        }
        guard let choice = ReplicaSelection.choose(ranked, local: local, voters: replicationFactor) else { return nil }
        let stale = closest.prefix(replicationFactor).filter { !choice.upToDate.contains($0.key(in: keySpace)) }
        let updatesLocal =
            local.map {
                $0.record.seq < choice.record.record.seq || $0.record.publicKey != choice.record.record.publicKey
            } ?? false
        return Decision(choice: choice, staleReplicas: Array(stale), updatesLocalCopy: updatesLocal)
    }
}

extension ValueLookup where Peer == KademliaPeer {
    /// A value lookup over `KademliaPeer`s, which carry their keys.
    public init(name: AgentName, quorum: Int, replicationFactor: Int) {
        self.init(name: name, quorum: quorum, replicationFactor: replicationFactor, keySpace: IntrinsicKeySpace())
    }
}
