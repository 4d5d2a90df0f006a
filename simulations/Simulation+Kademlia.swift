import Identity
import NIOCore
import Resolution

/// Identifies a query running in a virtual node's behaviour.
struct KadQueryKey: Hashable, Sendable {
    let node: Int
    let id: KademliaQueryID
}

/// A query running in a virtual node's behaviour: what to do when it ends, and the timer it asked
/// for last (an earlier timer event that fires after a later one replaced it is dropped).
struct KadQuery {
    let completion: (Simulation, KademliaQueryOutcome<VirtualPeer>) -> Void
    var armedTimer: NIODeadline?
}

extension NetworkParameters {
    /// The DHT settings every virtual node's behaviour runs with.
    var dhtConfiguration: DHTConfiguration {
        precondition(parallelism == LookupConfiguration().parallelism, "the behaviour's α is agentd's (3)")
        var configuration = DHTConfiguration()
        configuration.routingTable = routingTable
        configuration.replicationFactor = replicationFactor
        configuration.valueQuorum = valueQuorum
        configuration.disjointPaths = disjointPaths
        configuration.requestTimeout = requestTimeout
        configuration.requestHardTimeout = hardTimeout
        configuration.maintenanceInterval = maintenanceInterval
        configuration.replicationInterval = replicationInterval
        configuration.republishFraction = republishFraction
        return configuration
    }
}

/// The simulator as a driver of agentd's `KademliaBehaviour` (as `DHT` is agentd's): it feeds each
/// virtual node's behaviour events on the virtual clock and performs its actions over the virtual
/// network. Requests and answers travel as the behaviour's own values (`KademliaRequest`,
/// `KademliaResponse`) with the latency model; peers are `VirtualPeer` handles, vouched for
/// without addresses (`PeerContact.addressless`). What only the simulator does: adversaries'
/// answers (`junk`, `rivalRecord`), and departed or made-up peers that refuse at once or never
/// answer.
extension Simulation {
    /// A FIND_NODE query from node `origin` for the peers closest to `key` (bytes whose SHA-256 is
    /// the point), seeded by the behaviour from its table plus `extraSeeds` (bootstrap).
    /// `completion` runs when it ends; never if `origin` goes offline first.
    func findClosest(
        from origin: Int, key: [UInt8], extraSeeds: [VirtualPeer] = [],
        completion: @escaping (Simulation, LookupResult<VirtualPeer>) -> Void
    ) {
        startQuery(.closestPeers(key: key, extraSeeds: extraSeeds), at: origin) { simulation, outcome in
            guard case .closestPeers(let result) = outcome else {
                preconditionFailure("a closest-peers query ended with another outcome")
            }
            completion(simulation, result)
        }
    }

    func startQuery(
        _ query: KademliaQuery<VirtualPeer>, at origin: Int,
        completion: @escaping (Simulation, KademliaQueryOutcome<VirtualPeer>) -> Void
    ) {
        let id = withNode(origin) { $0.kad.makeQueryID() }
        kadQueries[KadQueryKey(node: origin, id: id)] = KadQuery(completion: completion)
        feed(origin, .startQuery(id, query))
    }

    /// Feeds `event` to node `index`'s behaviour now and performs the actions; returns its answer
    /// to an inbound request, if the event was one.
    @discardableResult
    func feed(_ index: Int, _ event: KademliaEvent<VirtualPeer>) -> KademliaReply<VirtualPeer>? {
        var actions = actionBuffers.popLast() ?? []
        let (now, unixNow) = (self.now, self.unixNow)
        withNode(index) { $0.kad.handle(event, now: now, unixNow: unixNow, into: &actions) }
        var reply: KademliaReply<VirtualPeer>?
        for action in actions {
            switch action {
            case .respond(_, let answer):
                reply = answer
            default:
                perform(action, at: index)
            }
        }
        actions.removeAll(keepingCapacity: true)
        actionBuffers.append(actions)
        rearmJobTimer(of: index)
        return reply
    }

    private func perform(_ action: KademliaAction<VirtualPeer>, at index: Int) {
        switch action {
        case .send(let id, let peer, let request, _):
            send(request, for: KadQueryKey(node: index, id: id), to: peer)
        case .armQueryTimer(let id, let deadline):
            let key = KadQueryKey(node: index, id: id)
            kadQueries[key]?.armedTimer = deadline
            schedule(at: deadline) { simulation in
                guard simulation.kadQueries[key]?.armedTimer == deadline, simulation.nodes[index].isOnline else {
                    return
                }
                simulation.feed(index, .queryTimer(id))
            }
        case .finished(let id, let outcome):
            if let query = kadQueries.removeValue(forKey: KadQueryKey(node: index, id: id)) {
                query.completion(self, outcome)
            }
        case .checkLiveness(let oldest):
            checkLiveness(of: oldest, at: index)
        case .dialBack(let peer, let evidence, _):
            // Never asked for: virtual peers come vouched for (`PeerContact.addressless`).
            feed(index, .dialBackFinished(peer, evidence, proven: nil))
        case .runJob(let job):
            runJob(job, at: index)
        case .removed, .respond:
            break
        case .storageFailed(let what, let error, _):
            preconditionFailure("\(what): \(error)")
        }
    }

    /// A ping of the least recently seen entry of a full bucket, over the virtual network.
    private func checkLiveness(of oldest: VirtualPeer, at index: Int) {
        traffic.ping += 1
        let answers = oldest.index < nodes.count && nodes[oldest.index].isOnline
        let refuses = oldest.index < nodes.count && nodes[oldest.index].refusesWhenOffline
        let delay: TimeAmount =
            answers || refuses
            ? parameters.latency(using: &generator) + parameters.latency(using: &generator) : parameters.hardTimeout
        schedule(after: delay) { simulation in
            guard simulation.nodes[index].isOnline else { return }
            simulation.feed(index, .livenessChecked(oldest, alive: answers))
        }
    }

    /// A request over the virtual network. A peer that is offline, or a phantom, fails it: at once
    /// if it refuses connections (unreachable), else at the hard timeout (timed out).
    private func send(_ request: KademliaRequest<VirtualPeer>, for query: KadQueryKey, to peer: VirtualPeer) {
        switch request {
        case .findNode: traffic.findNode += 1
        case .getValue: traffic.getValue += 1
        case .putValue: traffic.put += 1
        case .ping: traffic.ping += 1
        case .getProviders, .addProvider: break
        }
        let sentAt = now
        guard peer.index < nodes.count, nodes[peer.index].isOnline else {
            let refuses =
                peer.index < nodes.count
                ? nodes[peer.index].refusesWhenOffline : generator.chance(parameters.refusedFraction)
            let delay = refuses ? parameters.latency(using: &generator) * 2 : parameters.hardTimeout
            schedule(after: delay) { $0.fail(query, peer, refused: refuses) }
            return
        }
        schedule(after: parameters.latency(using: &generator)) { simulation in
            simulation.deliver(request, for: query, to: peer, sentAt: sentAt)
        }
    }

    /// The request reaches its node, which answers as a server does (spec/dht.md §3): an honest
    /// node through its behaviour, an adversary with junk.
    private func deliver(
        _ request: KademliaRequest<VirtualPeer>, for query: KadQueryKey, to peer: VirtualPeer, sentAt: NIODeadline
    ) {
        let node = peer.index
        guard nodes[node].isOnline else {
            let refuses = nodes[node].refusesWhenOffline
            let delay =
                refuses ? parameters.latency(using: &generator) : max(sentAt + parameters.hardTimeout - now, .zero)
            schedule(after: delay) { $0.fail(query, peer, refused: refuses) }
            return
        }
        let requester = nodes[query.node].handle
        // The requester opened a kad stream in server mode: the server's admission rules (§4).
        if nodes[query.node].isOnline { feed(node, .inboundStream(requester, .server, .addressless)) }
        let answer: KademliaResponse<VirtualPeer>?
        if case .adversary = nodes[node].behaviour, case .findNode(let key) = request {
            answer = .closerPeers(junkHandles(near: KademliaKey(hashing: key), from: node, excluding: requester))
        } else if case .adversary(let sharedKey) = nodes[node].behaviour, case .getValue(let key) = request,
            let name = AgentName(recordKey: key)
        {
            // A rival claim to every name, and junk closer peers.
            answer = .value(
                closerPeers: junkHandles(near: KademliaKey(hashing: key), from: node, excluding: requester),
                record: .success(rivalRecord(for: name, by: node, sharedKey: sharedKey)))
        } else {
            nextRequestID &+= 1
            let reply = feed(node, .request(KademliaRequestID(raw: nextRequestID), from: requester, request))
            if case .answer(let response) = reply { answer = response } else { answer = nil }
        }
        schedule(after: parameters.latency(using: &generator)) { simulation in
            guard simulation.kadQueries[query] != nil, simulation.nodes[query.node].isOnline else { return }
            if let answer {
                simulation.feed(query.node, .response(query.id, from: peer, answer, .addressless))
            } else {
                simulation.feed(
                    query.node, .requestFailed(query.id, peer: peer, KadRequestFailure(.refused, "request refused")))
            }
        }
    }

    /// A request of a query failed. Answers and failures for a query that ended are dropped, as
    /// `DHT` cancels a query's requests when it ends.
    private func fail(_ query: KadQueryKey, _ peer: VirtualPeer, refused: Bool) {
        guard kadQueries[query] != nil, nodes[query.node].isOnline else { return }
        let failure =
            refused
            ? KadRequestFailure(.unreachable, "connection refused") : KadRequestFailure(.timedOut, "no answer")
        feed(query.node, .requestFailed(query.id, peer: peer, failure))
    }

    /// An adversary's junk answer (`junk(near:from:excluding:)`) as handles: colluders by number,
    /// made-up peers as phantoms.
    private func junkHandles(near target: KademliaKey, from index: Int, excluding requester: VirtualPeer)
        -> [VirtualPeer]
    {
        junk(near: target, from: index, excluding: nodes[requester.index].peer.key).map { peer in
            if let node = indexByKey[peer.key] { return nodes[node].handle }
            return keySpace.phantom(at: peer.key)
        }
    }
}
