import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network
import ServiceLifecycle

/// The DHT as the thin driver of `KademliaBehaviour`: it feeds the behaviour events with the time,
/// and performs its actions: requests of a query run as child tasks of the query's caller, the
/// rest (liveness checks, dial-backs, job rounds, the job timer) in the service task's group.
extension DHT {
    /// An action of a query, for the task that runs it.
    enum QueryInput: Sendable {
        case send(KademliaPeer, KademliaRequest<KademliaPeer>, hearsay: Bool)
        case timer(NIODeadline)
        /// The outcome waits in `State.finishedQueries`.
        case finished
    }

    /// Work for the service task.
    enum ServiceWork: Sendable {
        case checkLiveness(KademliaPeer)
        case dialBack(KademliaPeer, RoutingTable.Evidence, candidates: [Multiaddr])
        case job(KademliaJob)
        /// PUT a resolved record to the closest replicas that answered without it (spec/dht.md §8.4).
        case correctReplicas(SignedAgentRecord, [KademliaPeer])
        /// Sleep until this deadline, then send `.timer`.
        case arm(NIODeadline)
        case timerFired
    }

    // MARK: Feeding the behaviour

    /// Feeds `event` now and performs the actions, except `.respond` and `.finished` of
    /// `collecting`, which are returned.
    @discardableResult
    func feed(_ event: KademliaEvent<KademliaPeer>) -> [KademliaAction<KademliaPeer>] {
        let now = NIODeadline.now()
        let unixNow = unixClock()
        var actions: [KademliaAction<KademliaPeer>] = []
        let (owners, arm) = state.withLockedValue { state in
            state.behaviour.handle(event, now: now, unixNow: unixNow, into: &actions)
            var owners: [KademliaQueryID: AsyncStream<QueryInput>.Continuation] = [:]
            for action in actions {
                switch action {
                case .send(let id, _, _, _), .armQueryTimer(let id, _):
                    owners[id] = state.queryOwners[id]
                case .finished(let id, let outcome):
                    owners[id] = state.queryOwners[id]
                    if owners[id] != nil { state.finishedQueries[id] = outcome }
                default:
                    break
                }
            }
            return (owners, Self.rearm(&state))
        }
        if let arm { enqueue(.arm(arm)) }
        var unperformed: [KademliaAction<KademliaPeer>] = []
        for action in actions {
            switch action {
            case .send(let id, let peer, let request, let hearsay):
                owners[id]?.yield(.send(peer, request, hearsay: hearsay))
            case .armQueryTimer(let id, let deadline):
                owners[id]?.yield(.timer(deadline))
            case .finished(let id, _):
                if let owner = owners[id] {
                    owner.yield(.finished)
                } else {
                    unperformed.append(action)
                }
            case .respond:
                unperformed.append(action)
            case .checkLiveness(let peer):
                enqueue(.checkLiveness(peer))
            case .dialBack(let peer, let evidence, let candidates):
                enqueue(.dialBack(peer, evidence, candidates: candidates))
            case .runJob(let job):
                enqueue(.job(job))
            case .removed(let eviction, let reason):
                logger.debug(
                    "routing table: removed peer",
                    metadata: [
                        "peer": "\(eviction.evicted.peer.id)", "reason": "\(reason)",
                        "promoted": "\(eviction.promoted?.peer.id.description ?? "-")",
                    ])
            case .storageFailed(let what, let error, let name):
                storageFailed(what, error, name: name)
            }
        }
        return unperformed
    }

    /// A record-store failure the DHT went on without: logged as an error and counted
    /// (`storageFailures`), never dropped.
    func storageFailed(_ what: String, _ error: ResolutionError, name: AgentName? = nil) {
        storageFailureCount.withLockedValue { $0 += 1 }
        var metadata: Logger.Metadata = ["error": "\(error.message)"]
        if let name { metadata["name"] = "\(name)" }
        logger.error("\(what)", metadata: metadata)
    }

    /// Hands `work` to the service. Its queue is bounded; work it cannot take is not lost
    /// silently: the behaviour hears the outcome it waits for (a liveness check counts as alive,
    /// since our own backlog says nothing against the peer; a dial-back as unproven; a job round as
    /// over, so the next one is scheduled), a lost timer is armed again at the next event, and an
    /// error is logged.
    /// After the service ended (`.terminated`), work is refused the same way, without the error.
    func enqueue(_ work: ServiceWork) {
        let result = serviceWork.yield(work)
        if case .enqueued = result { return }
        let dropped = state.withLockedValue { state -> Int? in
            if case .arm = work { state.armedDeadline = nil }
            if case .timerFired = work { state.armedDeadline = nil }
            guard case .dropped = result else { return nil }
            state.droppedServiceWork += 1
            return state.droppedServiceWork
        }
        if let dropped, dropped & (dropped - 1) == 0 {
            logger.error(
                "DHT service queue full: work dropped (its outcome reported as failed)",
                metadata: ["dropped": "\(dropped)", "work": "\(work)"])
        }
        switch work {
        case .checkLiveness(let peer): feed(.livenessChecked(peer, alive: true))
        case .dialBack(let peer, let evidence, _): feed(.dialBackFinished(peer, evidence, proven: nil))
        case .job(let job): feed(.jobFinished(job.kind))
        case .correctReplicas, .arm, .timerFired: break
        }
    }

    /// The job deadline to arm, when it is earlier than the one armed.
    private static func rearm(_ state: inout State) -> NIODeadline? {
        guard let next = state.behaviour.nextDeadline else { return nil }
        if let armed = state.armedDeadline, armed <= next { return nil }
        state.armedDeadline = next
        return next
    }

    /// What to do with one inbound request, on the wire.
    enum Reply: Sendable {
        case answer(KadMessage)
        case none
        /// Reset the stream (the kad-dht convention for a refused request), with the reason for the log.
        case refuse(String)
    }

    /// Answers an inbound request through the behaviour (decoded at this edge: a malformed one is
    /// refused here), with the connection state of the closer peers filled in.
    func handle(_ message: KadMessage, from peer: PeerID) -> Reply {
        let request: KademliaRequest<KademliaPeer>
        switch KademliaRequest.decoding(message) {
        case .success(let decoded): request = decoded
        case .failure(let refusal): return .refuse(refusal.reason)
        }
        let id = state.withLockedValue { state -> KademliaRequestID in
            state.nextRequestID &+= 1
            return KademliaRequestID(raw: state.nextRequestID)
        }
        for case .respond(id, let reply) in feed(.request(id, from: KademliaPeer(id: peer), request)) {
            switch reply {
            case .answer(let response):
                return .answer(
                    KadMessage(response, answering: message, unixNow: unixClock()) { host.connection(to: $0) != nil })
            case .none:
                return .none
            case .refuse(let reason):
                return .refuse(reason)
            }
        }
        preconditionFailure("KademliaBehaviour did not answer request \(id)")
    }

    // MARK: Queries

    /// Runs `query` to its end: its requests as child tasks of the caller (cancelled, their streams
    /// reset, when the query ends early), its timer as another. `observe` sees every answer first.
    /// Cancelling the caller stops the query with what it has.
    func run(
        _ query: KademliaQuery<KademliaPeer>, observe: (@Sendable (PeerID, KadMessage) -> Void)? = nil
    ) async -> KademliaQueryOutcome<KademliaPeer> {
        let (inputs, continuation) = AsyncStream.makeStream(of: QueryInput.self)
        let id = state.withLockedValue { state -> KademliaQueryID in
            let id = state.behaviour.makeQueryID()
            state.queryOwners[id] = continuation
            return id
        }
        defer { continuation.finish() }
        feed(.startQuery(id, query))
        let rule = host.addressScopeRule
        await withTaskGroup(of: Void.self) { group in
            for await input in inputs {
                switch input {
                case .send(let peer, let request, let hearsay):
                    group.addTask { [self] in
                        do throws(KadRequestFailure) {
                            let exchange = try await exchange(KadMessage(request), with: peer, hearsay: hearsay)
                            guard var answer = exchange.answer else {
                                feed(.requestFailed(id, peer: peer, KadRequestFailure(.badAnswer, "no answer")))
                                return
                            }
                            observe?(peer.id, answer)
                            // Addresses from a third party: only those the scope rule allows
                            // (spec/network.md); our own provider record keeps its addresses.
                            for index in answer.closerPeers.indices {
                                answer.closerPeers[index].addresses = rule.dialable(
                                    answer.closerPeers[index].addresses, from: .thirdParty)
                            }
                            for index in answer.providerPeers.indices
                            where answer.providerPeers[index].peerID != host.peerID {
                                answer.providerPeers[index].addresses = rule.dialable(
                                    answer.providerPeers[index].addresses, from: .thirdParty)
                            }
                            let response = try KademliaResponse.decoding(answer, for: request).get()
                            feed(.response(id, from: peer, response, contact(for: peer.id, via: exchange.connection)))
                        } catch {
                            // A request cancelled because its query ended says nothing of the peer.
                            guard !Task.isCancelled else { return }
                            logger.trace("kad request failed", metadata: ["peer": "\(peer.id)", "reason": "\(error)"])
                            feed(.requestFailed(id, peer: peer, error))
                        }
                    }
                case .timer(let deadline):
                    group.addTask { [self] in
                        do {
                            try await Task.sleep(nanoseconds: UInt64(max(deadline - .now(), .zero).nanoseconds))
                        } catch {
                            return
                        }
                        feed(.queryTimer(id))
                    }
                case .finished:
                    group.cancelAll()
                    return
                }
            }
            // The caller was cancelled (the stream ends then).
            group.cancelAll()
        }
        let finished = state.withLockedValue { state -> KademliaQueryOutcome<KademliaPeer>? in
            state.queryOwners[id] = nil
            return state.finishedQueries.removeValue(forKey: id)
        }
        if let finished { return finished }
        // The caller was cancelled before the query finished: it stops with what it has.
        for case .finished(id, let outcome) in feed(.cancelQuery(id)) { return outcome }
        preconditionFailure("KademliaBehaviour did not finish cancelled query \(id)")
    }

    /// The k peers closest to `key` (arbitrary bytes; the point in the keyspace is their SHA-256),
    /// found by an iterative FIND_NODE lookup.
    public func lookupClosestPeers(to key: [UInt8], extraSeeds: [KademliaPeer] = []) async -> LookupResult<KademliaPeer> {
        guard case .closestPeers(let result) = await run(.closestPeers(key: key, extraSeeds: extraSeeds)) else {
            preconditionFailure("a closest-peers query ended with another outcome")
        }
        return result
    }

    /// Finds `peer`'s addresses: from the routing table, else by a lookup of its id.
    public func findPeer(_ peer: PeerID) async -> KademliaPeer? {
        if let entry = state.withLockedValue({ $0.table.entry(for: peer) }), !entry.peer.addresses.isEmpty {
            return entry.peer
        }
        let found = NIOLockedValueBox<KademliaPeer?>(nil)
        let result = await run(.closestPeers(key: peer.multihash.bytes, extraSeeds: [])) { _, answer in
            if let match = answer.closerPeers.first(where: { $0.peerID == peer }), !match.addresses.isEmpty {
                found.withLockedValue { $0 = KademliaPeer(id: peer, addresses: match.addresses) }
            }
        }
        if case .closestPeers(let lookup) = result, let answered = lookup.closest.first(where: { $0.id == peer }) {
            return answered
        }
        return found.withLockedValue { $0 }
    }

    // MARK: The service

    /// The DHT's service: the identify watcher, liveness checks, dial-backs, stale-replica
    /// corrections, the periodic jobs (spec/dht.md §7: upkeep every `maintenanceInterval`,
    /// re-replication every `replicationInterval`, as `KademliaBehaviour` schedules them) and
    /// their timer, each a child task of one task group. Runs until a graceful shutdown
    /// (swift-service-lifecycle), the cancellation of its task, or the host's shutdown, whichever
    /// comes first; a job round in progress is cancelled then, and nothing of the service outlives
    /// the call. Calls `start()` if the caller has not.
    ///
    /// Work the DHT needs done before the service runs (a dial-back of a peer that connected
    /// early) waits in its queue. One service per DHT.
    /// - Throws: `DHTServiceError` when the service runs already (or ran).
    public func run() async throws {
        try await run(maintenance: true)
    }

    /// `run()`, with the periodic jobs started (`maintenance`) or not (until `setMaintenance`):
    /// tests that start them at a moment of their choosing.
    public func run(maintenance: Bool) async throws {
        start()
        let inputs = serviceInputs.withLockedValue { inputs -> (AsyncStream<ServiceWork>, AsyncStream<HostEvent>)? in
            guard !inputs.running, let inbox = inputs.inbox, let events = inputs.identifyEvents else { return nil }
            inputs.running = true
            inputs.inbox = nil
            inputs.identifyEvents = nil
            return (inbox, events)
        }
        guard let (inbox, events) = inputs else { throw DHTServiceError() }
        if maintenance { feed(.maintenance(enabled: true)) }
        await cancelWhenGracefulShutdown { [self] in
            await runService(inbox, identifyEvents: events)
        }
        feed(.maintenance(enabled: false))
        logger.debug("DHT service stopped")
    }

    /// Upkeep rounds (refresh, republish, restore) the service finished since the start.
    public var upkeepRoundsFinished: Int { state.withLockedValue { $0.upkeepRounds } }
    /// Re-replication rounds the service finished since the start.
    public var replicationRoundsFinished: Int { state.withLockedValue { $0.replicationRounds } }

    /// Starts (true) or stops (false) the periodic jobs of a running service; a round under way
    /// ends normally.
    public func setMaintenance(_ enabled: Bool) {
        feed(.maintenance(enabled: enabled))
    }

    private func runService(_ inbox: AsyncStream<ServiceWork>, identifyEvents: AsyncStream<HostEvent>) async {
        await withDiscardingTaskGroup { group in
            group.addTask { [self] in
                await watchIdentify(identifyEvents)
                // The host's events end when it shuts down: so does the service (its queue
                // refuses work from now on, which reports it as failed).
                if !Task.isCancelled { serviceWork.finish() }
            }
            for await work in inbox {
                switch work {
                case .checkLiveness(let peer):
                    group.addTask { [self] in await checkLiveness(of: peer) }
                case .dialBack(let peer, let evidence, let candidates):
                    group.addTask { [self] in await dialBack(peer, evidence: evidence, candidates: candidates) }
                case .job(let job):
                    group.addTask { [self] in await run(job) }
                case .correctReplicas(let record, let stale):
                    group.addTask { [self] in
                        let (stored, _) = await put(record, to: stale)
                        if !stored.isEmpty {
                            logger.debug(
                                "resolve: corrected stale replicas",
                                metadata: ["name": "\(record.record.name)", "count": "\(stored.count)"])
                        }
                    }
                case .arm(let deadline):
                    group.addTask { [self] in
                        do {
                            try await Task.sleep(nanoseconds: UInt64(max(deadline - .now(), .zero).nanoseconds))
                        } catch {
                            return
                        }
                        enqueue(.timerFired)
                    }
                case .timerFired:
                    state.withLockedValue { $0.armedDeadline = nil }
                    feed(.timer)
                }
            }
            group.cancelAll()
        }
    }

    private func run(_ job: KademliaJob) async {
        switch job {
        case .upkeep(let targets):
            await refresh(targets)
            await republishOwnRecords()
            // Saved names whose publish at start failed (a storage error, say) are tried again,
            // with back-off; those published already are skipped.
            await restoreRegistrations(backingOff: true)
            state.withLockedValue { $0.upkeepRounds += 1 }
            feed(.jobFinished(.upkeep))
        case .replication:
            let pushed = await replicateStoredRecords()
            logger.debug("re-replication round done", metadata: ["pushed": "\(pushed)"])
            state.withLockedValue { $0.replicationRounds += 1 }
            feed(.jobFinished(.replication))
        case .republishAfterGrowth:
            await republishOwnRecords()
            feed(.jobFinished(.republishAfterGrowth))
        }
    }
}

/// `DHT.run()` was called while the DHT's service runs, or after it ran.
public struct DHTServiceError: Error, CustomStringConvertible {
    public var description: String { "the DHT service runs already, or ran and ended: it runs once per DHT" }
}

/// The DHT's service (`run()`) under a `ServiceGroup`, or as a child task of the node.
extension DHT: Service {}
