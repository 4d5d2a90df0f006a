import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network

/// What publishing a record did.
public struct PublishReport: Sendable {
    public let record: SignedAgentRecord
    /// Replicas that acknowledged the PUT.
    public let storedAt: [PeerID]
    /// Replicas that refused it or could not be reached, with the reason.
    public let failures: [(peer: PeerID, reason: String)]
    /// The lookup that found the replicas.
    public let lookup: LookupStatistics
}

/// A verified answer to `resolve`.
public struct Resolution: Sendable {
    public enum Source: String, Sendable {
        /// From the resolution cache; no network traffic.
        case cache
        /// From replicas found by a value lookup.
        case network
        /// Only our own store had it (no replica answered with it).
        case local
    }

    public let record: SignedAgentRecord
    public let source: Source
    /// Replicas whose answer supports the chosen claim.
    public let replicas: Int
    /// Replicas that answered with an invalid record (forged, expired, another name, malformed).
    public let invalidAnswers: Int
    /// Distinct claims (keys, a rotation chain counting as one) among the valid answers, the chosen
    /// one included: above 1 means someone contests the name.
    public let claims: Int
    /// The value lookup, when there was one.
    public let lookup: LookupStatistics?
}

extension DHT {
    // MARK: Own records

    /// Publishes `name` for this node: signs a record with the host's key (seq above any earlier
    /// one, kept in the store), stores it locally and at the `replicationFactor` closest nodes, and
    /// keeps it fresh until `unregister` (republishing at `republishFraction` of its TTL).
    /// - Parameters:
    ///   - addresses: the addresses to publish; nil follows the host's listen addresses.
    ///   - protocols: nil follows the host's protocols.
    ///   - persist: keep the registration in the store, so that `restoreRegistrations` publishes the
    ///     name again after a restart (names registered through the control API); a later
    ///     `register` without it leaves a stored registration as it is.
    ///
    /// Calls on one name race as "the last started wins": a `register` that finishes after a later
    /// `register` or `unregister` of the same name started returns its report but keeps nothing.
    public func register(
        _ name: AgentName, addresses: [Multiaddr]? = nil, protocols: [String]? = nil,
        ttl: UInt32 = RecordLimits.defaultTTL, persist: Bool = false
    ) async throws(ResolutionError) -> PublishReport {
        try await register(
            name, addresses: addresses, protocols: protocols, ttl: ttl, persist: persist, ifEpoch: nil)!
    }

    /// `register`, skipped (nil) when `ifEpoch` is given and another call on the name started since
    /// that epoch was read, or the name is published already.
    private func register(
        _ name: AgentName, addresses: [Multiaddr]?, protocols: [String]?, ttl: UInt32, persist: Bool,
        ifEpoch expected: UInt64?
    ) async throws(ResolutionError) -> PublishReport? {
        if let peer = name.selfCertifyingPeerID, peer != host.peerID {
            throw ResolutionError(
                .selfCertifyingMismatch, "\(name) is the self-certifying name of \(peer); this node is \(host.peerID)")
        }
        var own = OwnNames.Entry(addresses: addresses, protocols: protocols, ttl: ttl)
        let started = state.withLockedValue { $0.ownNames.beginRegister(name, ifEpoch: expected) }
        guard let started else { return nil }
        // A first claim goes to the replicas before our own store: if they refuse it (the name is
        // held by another key), nothing is kept, and our store does not start believing our claim.
        let previous = try store.ownRecord(for: name)
        let isNewClaim = name.selfCertifyingPeerID == nil && previous == nil
        ownRecordSigning.lock()
        let signed = Result { () throws(ResolutionError) in try signOwnRecord(name, own) }
        ownRecordSigning.unlock()
        let record = try signed.get()
        let report: PublishReport
        do {
            report = try await publish(record, replicasFirst: isNewClaim)
        } catch {
            guard isNewClaim else { throw error }
            do {
                try store.removeOwnRecord(for: name)
            } catch let storage {
                // The refused claim stays saved as ours: the next `register` continues its seq,
                // which does no harm, but the operator should know the store fails.
                logger.error(
                    "cannot forget a refused claim", metadata: ["name": "\(name)", "error": "\(storage.message)"])
                throw ResolutionError(
                    error.kind, "\(error.message); and the refused claim could not be forgotten: \(storage.message)")
            }
            throw error
        }
        own.replicas = report.storedAt.count
        // A call on the name that started while the record was being published wins: the record
        // is out, but this call keeps nothing.
        let kept = state.withLockedValue { state -> Bool in
            own.tableSizeAtPublish = state.table.count
            return state.ownNames.finishRegister(started, entry: own)
        }
        guard kept else { return report }
        if persist {
            do {
                try store.setRegistration(
                    NameRegistration(addresses: addresses, protocols: protocols, ttl: ttl), for: name)
            } catch {
                throw ResolutionError(
                    error.kind,
                    "\(name) is published, but its registration was not saved (no republish after a restart): \(error.message)"
                )
            }
            // An `unregister` between keeping the name and saving it has cleared the store
            // already, or found nothing to clear: undo the save.
            if state.withLockedValue({ $0.ownNames.mustUndoSave(started) }) {
                do {
                    try store.setRegistration(nil, for: name)
                } catch {
                    // Left saved, the name would be published again after a restart although it
                    // was unregistered: the caller must hear of it.
                    logger.error(
                        "cannot undo the saved registration of a name unregistered meanwhile",
                        metadata: ["name": "\(name)", "error": "\(error.message)"])
                    throw ResolutionError(
                        error.kind,
                        "\(name) was unregistered while it was being registered, but its saved registration could not be cleared (it would be published again after a restart): \(error.message)"
                    )
                }
            }
        }
        return report
    }

    /// Publishes again the names registered with `persist` before the node stopped (skipping those
    /// already registered in this run). Failures are logged and returned; the registration stays,
    /// and the maintenance round tries again, `backingOff`: after 1, 2, 4 … up to 64 minutes.
    @discardableResult
    public func restoreRegistrations(
        backingOff: Bool = false
    ) async -> [(name: AgentName, result: Result<PublishReport, ResolutionError>)] {
        // Read before the store: a call on a name after this point (an `unregister` that clears
        // the saved registration, a `register` with new parameters) makes its restore a no-op.
        let epochs = state.withLockedValue { $0.ownNames.epochs }
        let stored: [(name: AgentName, registration: NameRegistration)]
        do {
            let (registrations, dropped) = try store.registrations()
            for reason in dropped { logger.error("dropped an unreadable name registration: \(reason)") }
            stored = registrations
        } catch {
            storageFailed("cannot read the registered names", error)
            return []
        }
        var results: [(name: AgentName, result: Result<PublishReport, ResolutionError>)] = []
        for (name, registration) in stored {
            if backingOff, !state.withLockedValue({ $0.ownNames.restoreDue(name, now: .now()) }) {
                continue
            }
            do {
                guard
                    let report = try await register(
                        name, addresses: registration.addresses, protocols: registration.protocols,
                        ttl: registration.ttl, persist: false, ifEpoch: epochs[name, default: 0])
                else { continue }
                state.withLockedValue { $0.ownNames.restoreSucceeded(name) }
                results.append((name, .success(report)))
            } catch {
                let count = state.withLockedValue { $0.ownNames.restoreFailed(name, now: .now()) }
                logger.error(
                    "cannot publish registered name \(name) again (attempt \(count)): \(error.message)")
                results.append((name, .failure(error)))
            }
        }
        return results
    }

    /// `resolve` without the cache, with "not found" as nil.
    func resolveIfPublished(_ name: AgentName) async throws(ResolutionError) -> Resolution? {
        do {
            return try await resolve(name, useCache: false)
        } catch {
            if error.kind == .notFound { return nil }
            throw error
        }
    }

    /// Stops republishing `name`, now and after restarts (its record stays in the network until it
    /// expires). The last own record stays in the store so that a later `register` continues its
    /// seq.
    /// - Returns: whether the name was registered (in this run or stored).
    /// - Throws: `.storage` when the stored registration could not be cleared (the name is no
    ///   longer republished in this run, but would be after a restart).
    @discardableResult
    public func unregister(_ name: AgentName) throws(ResolutionError) -> Bool {
        let wasRunning = state.withLockedValue { $0.ownNames.unregister(name) }
        let wasStored = try store.setRegistration(nil, for: name)
        return wasRunning || wasStored
    }

    /// The names this node keeps published.
    public var registeredNames: [AgentName] { state.withLockedValue { $0.ownNames.registered } }

    func signOwnRecord(_ name: AgentName, _ own: OwnNames.Entry) throws(ResolutionError) -> SignedAgentRecord {
        let now = unixClock()
        let previous = try store.ownRecord(for: name)
        let seq = max(now, (previous?.record.seq ?? 0) + 1)
        let addresses = own.addresses ?? Self.dialable(host.advertisedAddresses)
        let protocols = own.protocols ?? host.protocols.sorted()
        let record = AgentRecord(
            name: name, publicKey: host.identity.publicKey, seq: seq, timestamp: now, ttl: own.ttl,
            addresses: Array(addresses.prefix(RecordLimits.maximumAddresses)),
            protocols: Array(protocols.prefix(RecordLimits.maximumProtocols)))
        let signed = try record.signed(with: host.identity)
        try store.setOwnRecord(signed)
        return signed
    }

    /// Republishes own records past `republishFraction` of their TTL, and those whose addresses no
    /// longer match the host's (when they follow the host). Returns how many were republished.
    @discardableResult
    public func republishOwnRecords(force: Bool = false) async -> Int {
        let (ownNames, tableSize) = state.withLockedValue { ($0.ownNames, $0.table.count) }
        let hostAddresses = Self.dialable(host.advertisedAddresses)
        var republished = 0
        for name in ownNames.names.keys.sorted() {
            do {
                // Decided and signed from the entry and own record as they are now, not as the
                // round found them (a register with new addresses may have finished since), and
                // not while a register or unregister of the name is in progress (it publishes its
                // own record): one signer at a time, so that a register that starts while this
                // one signs gets the higher seq and wins.
                ownRecordSigning.lock()
                let signed = Result { () throws(ResolutionError) -> SignedAgentRecord? in
                    guard let own = state.withLockedValue({ $0.ownNames.republishable(name) }) else { return nil }
                    let current: SignedAgentRecord?
                    do throws(ResolutionError) {
                        current = try store.ownRecord(for: name)
                    } catch {
                        // Without the last record its seq is unknown: signing a new one could go
                        // backwards.
                        storageFailed("cannot read own record; not republished this round", error, name: name)
                        return nil
                    }
                    let due = ownNames.isDue(
                        own, current: current, hostAddresses: hostAddresses, tableSize: tableSize,
                        unixNow: unixClock(), force: force)
                    return due ? try signOwnRecord(name, own) : nil
                }
                ownRecordSigning.unlock()
                guard let record = try signed.get() else { continue }
                let report = try await publish(record)
                state.withLockedValue {
                    $0.ownNames.published(name, replicas: report.storedAt.count, tableSize: tableSize)
                }
                republished += 1
                logger.info(
                    "republished own record",
                    metadata: [
                        "name": "\(name)", "seq": "\(record.record.seq)", "replicas": "\(report.storedAt.count)",
                    ])
            } catch {
                logger.warning("republishing own record failed", metadata: ["name": "\(name)", "error": "\(error)"])
            }
        }
        return republished
    }

    // MARK: Publishing

    /// Stores `record` locally (through the ownership rules) and at the `replicationFactor` nodes
    /// closest to its key. Succeeds when the record is held locally; `storedAt` says how many
    /// replicas took it (0 in a network of one).
    /// - Parameter replicasFirst: offer the record to the replicas before storing it locally, and
    ///   throw `nameHeld` (storing nothing) if the replicas that were reached refused it. For first
    ///   claims, whose likely refusal is that another key holds the name. "Every" means more
    ///   refusals than acceptances: a replica that never saw the holder's record accepts anything.
    public func publish(_ record: SignedAgentRecord, replicasFirst: Bool = false) async throws(ResolutionError)
        -> PublishReport
    {
        let name = record.record.name
        if !replicasFirst {
            try store.put(record, from: nil, now: unixClock())
            state.withLockedValue { $0.cache.remove(name) }
        }
        let lookup = await lookupClosestPeers(to: name.recordKey)
        let targets = lookup.closest
        let (stored, failures) = await put(record, replicas: configuration.replicationFactor, from: targets)
        if replicasFirst {
            let refused = failures.filter { $0.refused }
            if refused.count > stored.count {
                var message =
                    "\(name) was refused by \(refused.count) of \(refused.count + stored.count) replicas reached: it is held by another key"
                do {
                    if let held = try await resolveIfPublished(name),
                        held.record.record.publicKey != host.identity.publicKey
                    {
                        message =
                            "\(name) is held by \(held.record.record.peerID) until \(Timestamp.iso8601(held.record.record.expires)); the replicas refused our claim"
                    }
                } catch {
                    // Only the wording of the refusal depends on it.
                    logger.debug(
                        "cannot name the holder of a refused claim", metadata: ["name": "\(name)", "error": "\(error)"])
                }
                throw ResolutionError(.nameHeld, message + "; choose another name")
            }
            try store.put(record, from: nil, now: unixClock())
            state.withLockedValue { $0.cache.remove(name) }
        }
        if stored.isEmpty, !targets.isEmpty {
            logger.warning(
                "record published locally only: every replica refused or failed",
                metadata: ["name": "\(name)", "failures": "\(failures.map { "\($0.peer): \($0.reason)" })"])
        }
        return PublishReport(
            record: record, storedAt: stored, failures: failures.map { ($0.peer, $0.reason) }, lookup: lookup.statistics
        )
    }

    /// PUT_VALUE of `record` to each of `peers` at once. A failure is `refused` when the peer was
    /// reached and reset the stream instead of answering (the kad-dht way of refusing a record).
    func put(
        _ record: SignedAgentRecord, to peers: [KademliaPeer]
    ) async -> (stored: [PeerID], failures: [(peer: PeerID, reason: String, refused: Bool)]) {
        await put(record, replicas: peers.count, from: peers)
    }

    /// PUT_VALUE of `record` to the first `replicas` of `candidates` at once; each one that cannot
    /// be reached (a timeout, a dial or stream failure: not a refusal) is replaced by the next
    /// candidate, so the record reaches `replicas` peers whenever that many of the candidates
    /// answer. A refusal is not replaced: it is the replica's verdict on the record (a first claim
    /// counts them), and asking peers further from the key until one accepts would defeat it.
    func put(
        _ record: SignedAgentRecord, replicas: Int, from candidates: [KademliaPeer]
    ) async -> (stored: [PeerID], failures: [(peer: PeerID, reason: String, refused: Bool)]) {
        let key = record.record.name.recordKey
        let message = KadMessage(type: .putValue, key: key, record: KadMessage.Record(key: key, value: record.bytes))
        return await withTaskGroup(of: (PeerID, String?, Bool).self) { group in
            func start(_ peer: KademliaPeer) {
                group.addTask { [self] in
                    do {
                        _ = try await request(message, to: peer)
                        return (peer.id, nil, false)
                    } catch let failure as KadRequestFailure {
                        return (peer.id, failure.message, failure.isRefusal)
                    } catch {
                        return (peer.id, "\(error)", false)
                    }
                }
            }
            var next = candidates.startIndex
            while next < candidates.endIndex, next - candidates.startIndex < replicas {
                start(candidates[next])
                next += 1
            }
            var stored: [PeerID] = []
            var failures: [(peer: PeerID, reason: String, refused: Bool)] = []
            for await (peer, failure, refused) in group {
                guard let failure else {
                    stored.append(peer)
                    continue
                }
                failures.append((peer, failure, refused))
                if !refused, next < candidates.endIndex {
                    start(candidates[next])
                    next += 1
                }
            }
            return (stored, failures)
        }
    }

    // MARK: Resolving

    /// Resolves `name` to its verified record: from the cache unless `useCache` is false, else by a
    /// value lookup that collects records from several replicas, drops invalid ones, picks one with
    /// `ReplicaSelection`, and sends it to the closest replicas that answered with an older record
    /// or none. Throws `.notFound` when no valid record exists.
    public func resolve(_ name: AgentName, useCache: Bool = true) async throws(ResolutionError) -> Resolution {
        let now = unixClock()
        if useCache, let cached = state.withLockedValue({ $0.cache.lookup(name, now: .now(), unixNow: now) }) {
            return Resolution(record: cached, source: .cache, replicas: 0, invalidAnswers: 0, claims: 1, lookup: nil)
        }
        // The rules of the value lookup (what counts, when to stop, what to believe) live in
        // `ValueLookup`, run by `KademliaBehaviour`, which the simulator drives too.
        guard case .value(let result, let value) = await run(.value(name)) else {
            preconditionFailure("a value query ended with another outcome")
        }
        for (peer, kind) in value.invalidAnswers {
            logger.debug(
                "resolve: invalid record from replica",
                metadata: ["name": "\(name)", "peer": "\(peer)", "error": "\(kind.rawValue)"])
        }
        let local: SignedAgentRecord?
        do {
            local = try store.get(name, now: now)
        } catch {
            // The replicas' answers still decide; our copy (if any) is not consulted nor updated.
            storageFailed("resolve: cannot read the local record", error, name: name)
            local = nil
        }
        guard let decision = value.decide(closest: result.closest, local: local) else {
            var message =
                "\(name) not found: no valid record (asked \(result.statistics.requests) peers, \(result.statistics.responses) answered"
            if !value.invalidAnswers.isEmpty { message += ", \(value.invalidAnswers.count) with invalid records" }
            message += ")"
            throw ResolutionError(.notFound, message)
        }
        let choice = decision.choice

        // Correct stale replicas: the closest peers that answered without the chosen record get it.
        let stale = decision.staleReplicas
        if !stale.isEmpty {
            // In the service, so that the caller does not wait for it.
            enqueue(.correctReplicas(choice.record, stale))
        }
        if decision.updatesLocalCopy {
            // Keep our own copy current: we hold one, so we are a replica; ownership rules apply.
            do throws(ResolutionError) {
                try store.put(choice.record, from: nil, now: now)
            } catch  where error.kind == .storage {
                storageFailed("resolve: cannot update the local copy", error, name: name)
            } catch {
                // The ownership rules kept our copy (e.g. the choice is a rival claim our
                // store does not accept): that is their verdict, not a failure.
                logger.debug(
                    "resolve: local copy kept by the ownership rules",
                    metadata: ["name": "\(name)", "reason": "\(error.kind.rawValue)"])
            }
        }
        state.withLockedValue { _ = $0.cache.store(choice.record, for: name, now: .now(), unixNow: now) }
        return Resolution(
            record: choice.record, source: choice.supporters == 0 ? .local : .network, replicas: choice.supporters,
            invalidAnswers: value.invalidAnswers.count, claims: choice.rivalClaims, lookup: result.statistics)
    }

    // MARK: Maintenance

    /// Pushes the records we store for others to the current closest nodes (storers re-replicate,
    /// so a record survives its replicas leaving). Returns how many records were pushed.
    ///
    /// Paced (spec/dht.md §7.2): at most `replicationConcurrency` records in flight, each a lookup
    /// and its PUTs, and at most `replicationRate` started per second. Stops starting records when
    /// the task is cancelled.
    @discardableResult
    public func replicateStoredRecords(limit: Int = 10_000) async -> Int {
        let now = unixClock()
        let records: [SignedAgentRecord]
        do {
            _ = try store.removeExpired(now: now)
            records = try store.records(now: now, limit: limit)
        } catch {
            storageFailed("record store read failed", error)
            return 0
        }
        let concurrency = configuration.replicationConcurrency
        var pacer = ReplicationPacer(perSecond: configuration.replicationRate)
        return await withTaskGroup(of: Bool.self) { group in
            var pushed = 0
            var inFlight = 0
            for record in records {
                if inFlight >= concurrency, let done = await group.next() {
                    inFlight -= 1
                    if done { pushed += 1 }
                }
                let start = pacer.reserve(now: .now())
                let wait = start - .now()
                if wait > .zero {
                    do {
                        try await Task.sleep(nanoseconds: UInt64(wait.nanoseconds))
                    } catch {
                        break
                    }
                }
                guard !Task.isCancelled else { break }
                inFlight += 1
                group.addTask { [self] in
                    let lookup = await lookupClosestPeers(to: record.record.name.recordKey)
                    let (stored, _) = await put(
                        record, replicas: configuration.replicationFactor, from: lookup.closest)
                    return !stored.isEmpty
                }
            }
            for await done in group where done { pushed += 1 }
            return pushed
        }
    }
}
