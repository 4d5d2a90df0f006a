import Identity
import NIOCore
import Resolution

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

extension Simulation {
    // MARK: Validity and the store

    /// `SignedAgentRecord.validate(now:)`, with each signature verified once per run.
    func isValid(_ record: SignedAgentRecord) -> Bool {
        if let verified = verifiedSignatures[record.signature] {
            return verified && !record.record.isExpired(at: unixNow)
        }
        var valid = true
        do {
            try record.validate(now: unixNow)
        } catch {
            valid = false
        }
        verifiedSignatures[record.signature] = valid
        return valid
    }

    /// What node `index` serves for `name`: its unexpired record (spec/dht.md §9).
    func storedRecord(at index: Int, for name: AgentName) -> SignedAgentRecord? {
        guard let record = nodes[index].store[name], !record.record.isExpired(at: unixNow) else { return nil }
        return record
    }

    /// Offers `record` to node `index`'s store under the ownership rules (`RecordSelection`, as the
    /// real store applies them). Returns whether it was stored.
    @discardableResult
    func offer(_ record: SignedAgentRecord, to index: Int) -> Bool {
        let name = record.record.name
        if let held = nodes[index].store[name] {
            if held.signature == record.signature { return true }
            let decision = RecordSelection.select(existing: held, incoming: record, now: unixNow)
            guard decision.isAccepted else { return false }
        } else {
            guard isValid(record) else { return false }
        }
        withNode(index) { $0.store[name] = record }
        return true
    }

    /// PUT_VALUE of `record` from node `from` to `peer`; stored on arrival if `peer` is online.
    func put(_ record: SignedAgentRecord, from: Int, to peer: KademliaPeer) {
        traffic.put += 1
        guard let target = indexByKey[peer.key], nodes[target].isOnline else { return }
        let sender = nodes[from].peer
        schedule(after: parameters.latency(using: &generator)) { simulation in
            guard simulation.nodes[target].isOnline else { return }
            simulation.noteContact(at: target, with: sender, evidence: .inboundStream(.server))
            simulation.offer(record, to: target)
        }
    }

    // MARK: Publishing

    /// Signs a new record for node `index`'s own name (seq above the last one) and publishes it:
    /// local store, a FIND_NODE lookup for the record key, PUT_VALUE to the r closest that answered
    /// (spec/dht.md §7).
    func publishOwnRecord(of index: Int, completion: ((Simulation) -> Void)? = nil) {
        guard let name = nodes[index].ownName else { return }
        let seq = max(unixNow, (nodes[index].ownRecord?.record.seq ?? 0) + 1)
        let record = try! AgentRecord(
            name: name, publicKey: nodes[index].publicKey, seq: seq, timestamp: unixNow, ttl: parameters.recordTTL
        ).signed(with: VirtualNode.privateKey(seed: seed, serial: nodes[index].serial))
        withNode(index) { $0.ownRecord = record }
        publish(record, from: index, completion: completion)
    }

    func publish(_ record: SignedAgentRecord, from index: Int, completion: ((Simulation) -> Void)? = nil) {
        offer(record, to: index)
        findClosest(from: index, key: record.record.name.recordKey) { simulation, result in
            for peer in result.closest.prefix(simulation.parameters.replicationFactor) {
                simulation.put(record, from: index, to: simulation.nodes[peer.index].peer)
            }
            completion?(simulation)
        }
    }

    /// Pushes every record node `index` stores to the current r closest nodes, one record after
    /// the other, each with its own lookup (spec/dht.md §7.2).
    func replicateStoredRecords(of index: Int, completion: ((Simulation) -> Void)? = nil) {
        let records = nodes[index].store.values.filter { !$0.record.isExpired(at: unixNow) }
            .sorted { $0.record.name < $1.record.name }
        withNode(index) { node in node.store = node.store.filter { !$0.value.record.isExpired(at: unixNow) } }
        pushRecords(records[...], from: index, completion: completion)
    }

    private func pushRecords(
        _ records: ArraySlice<SignedAgentRecord>, from index: Int, completion: ((Simulation) -> Void)?
    ) {
        guard let record = records.first else {
            completion?(self)
            return
        }
        findClosest(from: index, key: record.record.name.recordKey) { simulation, result in
            for peer in result.closest.prefix(simulation.parameters.replicationFactor) {
                simulation.put(record, from: index, to: simulation.nodes[peer.index].peer)
            }
            simulation.pushRecords(records.dropFirst(), from: index, completion: completion)
        }
    }

    // MARK: Resolving

    /// Resolves `name` at node `index` as `DHT.resolve` does without its cache, with the same
    /// `ValueLookup`: a GET_VALUE lookup that collects valid records and stops early on agreement,
    /// the choice over the answers and the local store, then stale-replica correction and the
    /// local copy rule (spec/dht.md §8). `holder` is the key the name truly belongs to.
    func resolve(
        _ name: AgentName, from index: Int, holder: Ed25519.PublicKey,
        completion: @escaping (Simulation, ResolveOutcome) -> Void
    ) {
        startValueLookup(from: index, name: name) { simulation, outcome in
            let local = simulation.storedRecord(at: index, for: name)
            let decision = outcome.value.decide(closest: outcome.result.closest, local: local)
            if let decision {
                for peer in decision.staleReplicas {
                    simulation.put(decision.choice.record, from: index, to: peer)
                }
                if decision.updatesLocalCopy { simulation.offer(decision.choice.record, to: index) }
            }
            let statistics = outcome.result.statistics
            completion(
                simulation,
                ResolveOutcome(
                    resolvedToHolder: decision?.choice.record.record.publicKey == holder, found: decision != nil,
                    hops: statistics.hops, requests: statistics.requests,
                    milliseconds: Double(statistics.duration.nanoseconds) / 1e6,
                    stoppedEarly: outcome.result.termination == .quorumReached))
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
