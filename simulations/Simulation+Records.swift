import Identity
import NIOCore
import Resolution
import Synchronization

/// How one resolve went.
struct ResolveOutcome: Sendable {
    /// The chosen record is the true holder's claim.
    let resolvedToHolder: Bool
    /// Some record was chosen (the holder's or a rival's).
    let found: Bool
    let hops: Int
    let requests: Int
    /// Virtual time of the value lookup, in milliseconds.
    let milliseconds: Double
    /// The lookup stopped early on agreeing replicas.
    let stoppedEarly: Bool
}

/// The signature checks of one virtual network, remembered by record hash (issue #14, item 4): a
/// record's content rules (`SignedAgentRecord.validateContent`: signature, rotation, name, TTL)
/// are checked once per record, its timing (`validateTiming`: expiry, age, clock skew) on every
/// use, so every node's behaviour judges records as `validate(now:)` does at a fraction of the
/// cost (thousands of nodes see the same few thousand records).
///
/// Shared by every node of a network and by the simulations continued from its snapshots, which
/// may run on other tasks: the verdicts are facts about the bytes, so sharing them changes no
/// outcome, and the lock makes the sharing safe.
final class SignatureVerdicts: Sendable {
    private enum Verdict {
        case valid
        case invalid(ResolutionError)
    }

    private let verdicts = Mutex<[KademliaKey: Verdict]>([:])

    /// `record.validate(now:)`, with the content verdict remembered.
    /// - Throws: the rule the record breaks, as `validate(now:)` would.
    func validate(_ record: SignedAgentRecord, now: UInt64) throws(ResolutionError) {
        let hash = KademliaKey(hashing: record.bytes)
        var verdict = verdicts.withLock { $0[hash] }
        if verdict == nil {
            do {
                try record.validateContent()
                verdict = .valid
            } catch {
                verdict = .invalid(error)
            }
            verdicts.withLock { $0[hash] = verdict }
        }
        if case .invalid(let error) = verdict { throw error }
        try record.validateTiming(now: now)
    }

    /// Records judged so far.
    var count: Int { verdicts.withLock { $0.count } }
}

/// How the PUT_VALUEs of one record went (`Simulation.put(_:replicas:from:sender:completion:)`).
struct PutTally: Sendable {
    /// Replicas that stored the record.
    var stored = 0
    /// Replicas that refused it (reset the stream: the ownership rules or a quota said no).
    var refused = 0
    /// Replicas that could not be reached (timeout, refused connection).
    var failed = 0
}

extension Simulation {
    // MARK: The store

    /// Node `index`'s record store (its behaviour's).
    func recordStore(of index: Int) -> MemoryRecordStore { nodes[index].records }

    /// What node `index` holds for `name` at the virtual time (its store's unexpired record).
    func storedRecord(at index: Int, for name: AgentName) -> SignedAgentRecord? {
        storage("read a record") { () throws(ResolutionError) in try nodes[index].records.get(name, now: unixNow) }
    }

    /// The last record node `index` signed for `name`, as its store keeps it.
    func ownRecord(of index: Int, for name: AgentName) -> SignedAgentRecord? {
        storage("read an own record") { () throws(ResolutionError) in try nodes[index].records.ownRecord(for: name) }
    }

    /// Stores `record` in node `index`'s own store as a local put (no sender), under the store's
    /// rules; returns whether it was accepted. The in-memory store fails only by its rules: a
    /// failure of its medium would be a bug of ours.
    @discardableResult
    func storeLocally(_ record: SignedAgentRecord, at index: Int) -> Bool {
        do {
            try nodes[index].records.put(record, from: nil, now: unixNow)
            return true
        } catch {
            precondition(error.kind != .storage, "the in-memory store failed: \(error)")
            return false
        }
    }

    /// Runs a call of the in-memory store, which never fails but by a bug of ours.
    func storage<Value>(_ what: String, _ body: () throws(ResolutionError) -> Value) -> Value {
        do {
            return try body()
        } catch {
            preconditionFailure("the in-memory store failed to \(what): \(error)")
        }
    }

    // MARK: PUT_VALUE

    /// PUT_VALUE of `record` from node `sender` to the first `replicas` of `candidates` at once;
    /// each one that cannot be reached is replaced by the next candidate, a refusal is not (the
    /// replica's verdict on the record): `DHT.put(_:replicas:from:)`. `completion` runs when every
    /// PUT is answered or failed; never if `sender` goes offline first.
    func put(
        _ record: SignedAgentRecord, replicas: Int, from candidates: [VirtualPeer], sender: Int,
        completion: ((Simulation, PutTally) -> Void)? = nil
    ) {
        let round = PutRound(candidates: candidates)
        func start(_ simulation: Simulation) {
            let peer = round.candidates[round.next]
            round.next += 1
            round.outstanding += 1
            simulation.sendPut(record, from: sender, to: peer) { simulation, outcome in
                round.outstanding -= 1
                switch outcome {
                case .stored:
                    round.tally.stored += 1
                case .refused:
                    round.tally.refused += 1
                case .failed:
                    round.tally.failed += 1
                    if round.next < round.candidates.count { start(simulation) }
                }
                if round.outstanding == 0 { completion?(simulation, round.tally) }
            }
        }
        while round.next < candidates.count, round.next < replicas { start(self) }
        if round.outstanding == 0 { completion?(self, round.tally) }
    }

    /// How one PUT_VALUE ended for its sender.
    enum PutOutcome {
        case stored, refused, failed
    }

    /// One PUT_VALUE over the virtual network: the replica answers through its behaviour (its
    /// store's rules and quotas, the sender counted under its peer id) after it admitted the
    /// sender's inbound stream (spec/dht.md §4). An offline or made-up replica fails the request, at
    /// once if it refuses connections, else at the hard timeout. `completion` runs at the sender
    /// when the answer or the failure arrives, if the sender is online then.
    func sendPut(
        _ record: SignedAgentRecord, from sender: Int, to peer: VirtualPeer,
        completion: @escaping (Simulation, PutOutcome) -> Void
    ) {
        traffic.put += 1
        let failure: (Simulation) -> Void = { simulation in
            guard simulation.nodes[sender].isOnline else { return }
            completion(simulation, .failed)
        }
        guard peer.index < nodes.count, nodes[peer.index].isOnline else {
            let refuses =
                peer.index < nodes.count
                ? nodes[peer.index].refusesWhenOffline : generator.chance(parameters.refusedFraction)
            schedule(after: refuses ? parameters.latency(using: &generator) * 2 : parameters.hardTimeout, failure)
            return
        }
        let sentAt = now
        schedule(after: parameters.latency(using: &generator)) { simulation in
            let replica = peer.index
            guard simulation.nodes[replica].isOnline else {
                let delay =
                    simulation.nodes[replica].refusesWhenOffline
                    ? simulation.parameters.latency(using: &simulation.generator)
                    : max(sentAt + simulation.parameters.hardTimeout - simulation.now, .zero)
                simulation.schedule(after: delay, failure)
                return
            }
            let requester = simulation.nodes[sender].handle
            if simulation.nodes[sender].isOnline {
                simulation.feed(replica, .inboundStream(requester, .server, .addressless))
            }
            simulation.nextRequestID &+= 1
            let reply = simulation.feed(
                replica, .request(KademliaRequestID(raw: simulation.nextRequestID), from: requester, .putValue(record)))
            let outcome: PutOutcome
            if case .answer(.stored) = reply { outcome = .stored } else { outcome = .refused }
            simulation.schedule(after: simulation.parameters.latency(using: &simulation.generator)) { simulation in
                guard simulation.nodes[sender].isOnline else { return }
                completion(simulation, outcome)
            }
        }
    }

    // MARK: Publishing

    /// Signs a new record for node `index`'s own name and publishes it, as `DHT.register` and
    /// `DHT.republishOwnRecords` do: seq above the last own record the node's store keeps, saved
    /// there as the own record; a first claim goes to the replicas before the local store and is
    /// forgotten if more of them refuse it than take it. `completion` gets whether the record
    /// was published.
    func publishOwnRecord(of index: Int, completion: ((Simulation, Bool) -> Void)? = nil) {
        guard let name = nodes[index].ownName else { return }
        let previous = ownRecord(of: index, for: name)
        let seq = max(unixNow, (previous?.record.seq ?? 0) + 1)
        let record = try! AgentRecord(
            name: name, publicKey: nodes[index].publicKey, seq: seq, timestamp: unixNow, ttl: parameters.recordTTL
        ).signed(with: VirtualNode.privateKey(seed: seed, serial: nodes[index].serial))
        let store = nodes[index].records
        storage("save an own record") { () throws(ResolutionError) in try store.setOwnRecord(record) }
        let isNewClaim = previous == nil
        publish(record, from: index, replicasFirst: isNewClaim) { simulation, published in
            if !published, isNewClaim {
                simulation.storage("forget a refused claim") { () throws(ResolutionError) in
                    try store.removeOwnRecord(for: name)
                }
            }
            completion?(simulation, published)
        }
    }

    /// Stores `record` at node `index` and at the r nodes closest to its key, as `DHT.publish`:
    /// a FIND_NODE query of the node's behaviour for the record key, then PUT_VALUE to the r
    /// closest with replacement of unreachable ones (spec/dht.md §7). With `replicasFirst`, the
    /// local store takes it only when the replicas reached did not mostly refuse it.
    func publish(
        _ record: SignedAgentRecord, from index: Int, replicasFirst: Bool = false,
        completion: ((Simulation, Bool) -> Void)? = nil
    ) {
        if !replicasFirst, !storeLocally(record, at: index) {
            completion?(self, false)
            return
        }
        findClosest(from: index, key: record.record.name.recordKey) { simulation, result in
            simulation.put(
                record, replicas: simulation.parameters.replicationFactor, from: result.closest, sender: index
            ) { simulation, tally in
                if replicasFirst {
                    guard tally.refused <= tally.stored, simulation.storeLocally(record, at: index) else {
                        completion?(simulation, false)
                        return
                    }
                }
                completion?(simulation, true)
            }
        }
    }

    /// A re-replication round of node `index` (spec/dht.md §7.2), as `DHT.replicateStoredRecords`:
    /// expired records removed, then the unexpired ones (at most 10,000, least recently stored
    /// first) pushed to the current r closest, each by a FIND_NODE query of the node's behaviour
    /// and PUT_VALUEs with replacement; at most `replicationConcurrency` records in flight and at
    /// most `replicationRate` started per virtual second. `completion` gets how many records
    /// reached at least one replica; never if the node goes offline first.
    func replicateStoredRecords(of index: Int, completion: ((Simulation, Int) -> Void)? = nil) {
        let store = nodes[index].records
        let unixNow = unixNow
        let records = storage("list records to re-replicate") { () throws(ResolutionError) in
            _ = try store.removeExpired(now: unixNow)
            return try store.records(now: unixNow, limit: 10_000)
        }
        let configuration = parameters.dhtConfiguration
        let round = ReplicationRound(
            records: records, concurrency: configuration.replicationConcurrency,
            pacer: ReplicationPacer(perSecond: configuration.replicationRate))
        func startNext(_ simulation: Simulation) {
            while round.inFlight < round.concurrency, round.next < round.records.count {
                let record = round.records[round.next]
                round.next += 1
                round.inFlight += 1
                let start = round.pacer.reserve(now: simulation.now)
                simulation.schedule(at: start) { simulation in
                    guard simulation.nodes[index].isOnline else { return }
                    simulation.findClosest(from: index, key: record.record.name.recordKey) { simulation, result in
                        simulation.put(
                            record, replicas: simulation.parameters.replicationFactor, from: result.closest,
                            sender: index
                        ) { simulation, tally in
                            round.inFlight -= 1
                            if tally.stored > 0 { round.pushed += 1 }
                            startNext(simulation)
                        }
                    }
                }
            }
            if round.inFlight == 0, round.next == round.records.count, !round.reported {
                round.reported = true
                completion?(simulation, round.pushed)
            }
        }
        startNext(self)
    }

    // MARK: Resolving

    /// Resolves `name` at node `index` as `DHT.resolve` does without its cache: the behaviour's
    /// value query (`ValueLookup`: valid records collected, early stop on agreement), the
    /// decision over the answers and the local store, then stale-replica correction and the local
    /// copy rule (spec/dht.md §8). `holder` is the key the name truly belongs to.
    func resolve(
        _ name: AgentName, from index: Int, holder: Ed25519.PublicKey,
        completion: @escaping (Simulation, ResolveOutcome) -> Void
    ) {
        startQuery(.value(name), at: index) { simulation, outcome in
            guard case .value(let result, let value) = outcome else {
                preconditionFailure("a value query ended with another outcome")
            }
            let local = simulation.storedRecord(at: index, for: name)
            let decision = value.decide(closest: result.closest, local: local)
            if let decision {
                let stale = decision.staleReplicas
                if !stale.isEmpty {
                    simulation.put(decision.choice.record, replicas: stale.count, from: stale, sender: index)
                }
                if decision.updatesLocalCopy { simulation.storeLocally(decision.choice.record, at: index) }
            }
            let statistics = result.statistics
            completion(
                simulation,
                ResolveOutcome(
                    resolvedToHolder: decision?.choice.record.record.publicKey == holder, found: decision != nil,
                    hops: statistics.hops, requests: statistics.requests,
                    milliseconds: Double(statistics.duration.nanoseconds) / 1e6,
                    stoppedEarly: result.termination == .quorumReached))
        }
    }

    // MARK: Adversaries

    /// The rival claim adversary `index` answers for `name`: a valid record signed by its own key,
    /// or by the adversaries' shared key.
    func rivalRecord(for name: AgentName, by index: Int, sharedKey: Bool) -> SignedAgentRecord {
        let signer = sharedKey ? UInt64.max : nodes[index].serial
        let key = RivalRecordKey(signer: signer, name: name)
        if let record = rivalRecords[key] { return record }
        let privateKey = VirtualNode.privateKey(seed: seed, serial: signer)
        let record = try! AgentRecord(
            name: name, publicKey: privateKey.publicKey, seq: unixNow, timestamp: unixNow, ttl: parameters.recordTTL
        ).signed(with: privateKey)
        rivalRecords[key] = record
        return record
    }

    /// An adversary's junk answer: its fellow adversaries closest to `target` (colluders steering
    /// the lookup), then made-up peers that do not exist (placed near record keys when prepared by
    /// `prepareJunk`, random otherwise), k in all.
    func junk(near target: KademliaKey, from index: Int, excluding requester: KademliaKey) -> [KademliaPeer] {
        let k = parameters.bucketSize
        var colluders: [(distance: KademliaDistance, index: Int)] = []
        for other in adversaries where other != index && nodes[other].isOnline && nodes[other].peer.key != requester {
            colluders.append((target.distance(to: nodes[other].peer.key), other))
        }
        colluders.sort { $0.distance < $1.distance }
        var result = colluders.prefix(k / 2).map { nodes[$0.index].peer }
        result += nearJunk[target] ?? []
        while result.count < k {
            result.append(Self.madeUpPeer(using: &generator))
        }
        return Array(result.prefix(k))
    }

    /// Made-up peers whose keys share at least `commonPrefix` bits with each of `targets`: closer
    /// than all but a few real nodes, so lookups are drawn to them and their timeouts.
    func prepareJunk(near targets: [KademliaKey], count: Int, commonPrefix: Int) {
        for target in targets where nearJunk[target] == nil {
            var peers: [KademliaPeer] = []
            while peers.count < count {
                let peer = Self.madeUpPeer(using: &generator)
                if peer.key.commonPrefixLength(with: target) >= commonPrefix { peers.append(peer) }
            }
            nearJunk[target] = peers
        }
    }

    static func madeUpPeer(using generator: inout SimulationGenerator) -> KademliaPeer {
        KademliaPeer(id: PeerID(publicKey: try! Ed25519.PublicKey(rawRepresentation: generator.bytes(32))))
    }
}

/// The PUT_VALUEs of one record in flight.
private final class PutRound {
    let candidates: [VirtualPeer]
    var next = 0
    var outstanding = 0
    var tally = PutTally()

    init(candidates: [VirtualPeer]) {
        self.candidates = candidates
    }
}

/// A re-replication round in flight.
private final class ReplicationRound {
    let records: [SignedAgentRecord]
    let concurrency: Int
    var pacer: ReplicationPacer
    var next = 0
    var inFlight = 0
    var pushed = 0
    var reported = false

    init(records: [SignedAgentRecord], concurrency: Int, pacer: ReplicationPacer) {
        self.records = records
        self.concurrency = concurrency
        self.pacer = pacer
    }
}
