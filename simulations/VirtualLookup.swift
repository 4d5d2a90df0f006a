import Identity
import NIOCore
import Resolution

/// One running GET_VALUE lookup of a virtual node: the real `ClosestPeersLookup` and the real
/// `ValueLookup` (the records collected, the early stop, the decision), as `DHT.resolve` drives
/// them on a host. Only resolves still run here (issue #14: to move into the nodes'
/// `KademliaBehaviour` with the records); every FIND_NODE query is the behaviour's
/// (`Simulation.findClosest`).
final class VirtualLookup {
    let origin: Int
    let target: KademliaKey
    let name: AgentName
    var lookup: ClosestPeersLookup<KademliaPeer>
    /// The value side.
    var value: ValueLookup<KademliaPeer>
    var isDone = false
    /// The time of the earliest timer armed for `lookup.nextTimeout`, if any.
    var armedTimer: UInt64?
    let completion: (Simulation, Outcome) -> Void

    /// What a finished lookup hands its caller.
    struct Outcome {
        let origin: Int
        let result: LookupResult<KademliaPeer>
        /// The value lookup's collected answers.
        let value: ValueLookup<KademliaPeer>
    }

    init(
        origin: Int, name: AgentName, lookup: ClosestPeersLookup<KademliaPeer>, value: ValueLookup<KademliaPeer>,
        completion: @escaping (Simulation, Outcome) -> Void
    ) {
        self.origin = origin
        self.target = value.target
        self.name = name
        self.lookup = lookup
        self.value = value
        self.completion = completion
    }
}

extension Simulation {
    /// Starts a GET_VALUE lookup of `name` at node `origin`, seeded as `DHT.resolve` seeds it: the
    /// routing table's k closest entries to the record key. `completion` runs when the lookup
    /// finishes; never if `origin` goes offline first.
    func startValueLookup(
        from origin: Int, name: AgentName, completion: @escaping (Simulation, VirtualLookup.Outcome) -> Void
    ) {
        let configuration = parameters.valueLookup
        let value = ValueLookup<KademliaPeer>(
            name: name, quorum: parameters.valueQuorum, replicationFactor: parameters.replicationFactor)
        let target = value.target
        withNode(origin) { node in node.table.recordLookup(of: target, now: now) }
        let seeds = nodes[origin].table.closestPeers(to: target, count: configuration.resultCount).map {
            nodes[$0.peer.index].peer
        }
        let lookup = ClosestPeersLookup(
            target: target, seeds: seeds, localKey: nodes[origin].peer.key, configuration: configuration)
        let task = VirtualLookup(origin: origin, name: name, lookup: lookup, value: value, completion: completion)
        pump(task)
    }

    /// Sends what the lookup asks for, arms its timer, or finishes it.
    private func pump(_ task: VirtualLookup) {
        guard !task.isDone, nodes[task.origin].isOnline else { return }
        while true {
            switch task.lookup.next(now: now) {
            case .query(let peer):
                send(task, to: peer)
            case .waiting:
                if let deadline = task.lookup.nextTimeout?.uptimeNanoseconds,
                    task.armedTimer.map({ deadline < $0 }) ?? true
                {
                    task.armedTimer = deadline
                    schedule(at: .uptimeNanoseconds(deadline)) { simulation in
                        if task.armedTimer == deadline { task.armedTimer = nil }
                        simulation.pump(task)
                    }
                }
                return
            case .finished(let result):
                finish(task, result)
                return
            }
        }
    }

    private func finish(_ task: VirtualLookup, _ result: LookupResult<KademliaPeer>) {
        task.isDone = true
        task.completion(
            self,
            VirtualLookup.Outcome(origin: task.origin, result: result, value: task.value))
    }

    /// A GET_VALUE request over the virtual network. A peer that is offline, or made up, fails the
    /// request: at once if it refuses connections, else at the hard timeout.
    private func send(_ task: VirtualLookup, to peer: KademliaPeer) {
        traffic.getValue += 1
        let sentAt = now
        guard let target = indexByKey[peer.key], nodes[target].isOnline else {
            let refuses =
                indexByKey[peer.key].map { nodes[$0].refusesWhenOffline }
                ?? generator.chance(
                    parameters.refusedFraction)
            let delay = refuses ? parameters.latency(using: &generator) * 2 : parameters.hardTimeout
            schedule(after: delay) { $0.fail(task, peer) }
            return
        }
        schedule(after: parameters.latency(using: &generator)) { simulation in
            simulation.deliver(task, to: peer, node: target, sentAt: sentAt)
        }
    }

    /// The request reaches `node`, which answers as a server does (spec/dht.md §3).
    private func deliver(_ task: VirtualLookup, to peer: KademliaPeer, node: Int, sentAt: NIODeadline) {
        guard nodes[node].isOnline else {
            let delay =
                nodes[node].refusesWhenOffline
                ? parameters.latency(using: &generator) : max(sentAt + parameters.hardTimeout - now, .zero)
            schedule(after: delay) { $0.fail(task, peer) }
            return
        }
        let requester = nodes[task.origin].peer
        // The requester opened a kad stream in server mode: it enters the server's table (§4).
        if nodes[task.origin].isOnline { noteContact(at: node, with: requester, evidence: .inboundStream(.server)) }
        let name: AgentName? = task.name
        let closer: [KademliaPeer]
        let record: SignedAgentRecord?
        if case .adversary(let sharedKey) = nodes[node].behaviour {
            closer = junk(near: task.target, from: node, excluding: requester.key)
            record = name.map { rivalRecord(for: $0, by: node, sharedKey: sharedKey) }
        } else {
            closer = closestPeers(at: node, to: task.target, count: parameters.bucketSize, excluding: requester.key)
            record = name.flatMap { storedRecord(at: node, for: $0) }
        }
        schedule(after: parameters.latency(using: &generator)) { simulation in
            simulation.receive(task, from: peer, closer: closer, record: record)
        }
    }

    /// The answer is back at the requester. Answers to a finished lookup are dropped, as `DHT.lookup`
    /// drops them (its event stream ends with the lookup).
    private func receive(
        _ task: VirtualLookup, from peer: KademliaPeer, closer: [KademliaPeer], record: SignedAgentRecord?
    ) {
        guard !task.isDone, nodes[task.origin].isOnline else { return }
        var foundValue = false
        if let record {
            // Signatures are verified once per run (`isValid` remembers them), expiry every time.
            let verdict = task.value.receive(record, from: peer, key: peer.key) { record throws(ResolutionError) in
                guard isValid(record) else { throw ResolutionError(.badSignature, "invalid record") }
            }
            foundValue = verdict == .valid
        }
        task.lookup.received(from: peer.id, closerPeers: closer, foundValue: foundValue, now: now)
        let quorumReached = foundValue && task.value.mayStop(task.lookup)
        noteContact(at: task.origin, with: peer, evidence: .answeredRequest)
        if quorumReached {
            finish(task, task.lookup.stop(now: now))
            return
        }
        pump(task)
    }

    private func fail(_ task: VirtualLookup, _ peer: KademliaPeer) {
        guard !task.isDone, nodes[task.origin].isOnline else { return }
        task.lookup.failed(peer.id, now: now)
        noteFailure(at: task.origin, of: peer)
        pump(task)
    }
}
