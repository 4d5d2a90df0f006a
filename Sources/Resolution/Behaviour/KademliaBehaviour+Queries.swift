import Identity
import NIOCore

/// The lookups of `KademliaBehaviour`: each a `ClosestPeersLookup` with what its kind collects.
extension KademliaBehaviour {
    struct RunningQuery {
        enum Kind {
            case closestPeers
            case value(ValueLookup<Peer>, key: [UInt8], unixNow: UInt64)
            case providers(found: [Peer], limit: Int)
        }

        var lookup: ClosestPeersLookup<Peer>
        var kind: Kind
        let request: KademliaRequest<Peer>
        /// Keys of the peers whose addresses the caller supplied (dialled as given, not as hearsay).
        let trusted: Set<KademliaKey>
        /// Requests sent and not yet reported.
        var outstanding = 0
        /// The timer last asked for.
        var armedTimer: NIODeadline?
    }

    mutating func startQuery(
        _ id: KademliaQueryID, _ query: KademliaQuery<Peer>, now: NIODeadline, unixNow: UInt64,
        into actions: inout [Action]
    ) {
        precondition(queries[id] == nil, "query \(id) started twice")
        let target: KademliaKey
        let request: KademliaRequest<Peer>
        let lookupConfiguration: LookupConfiguration
        var extraSeeds: [Peer] = []
        let kind: RunningQuery.Kind
        switch query {
        case .closestPeers(let key, let seeds):
            target = KademliaKey(hashing: key)
            request = .findNode(key: key)
            lookupConfiguration = configuration.closestPeersLookup
            extraSeeds = seeds
            kind = .closestPeers
        case .value(let name):
            let value = ValueLookup<Peer>(
                name: name, quorum: configuration.valueQuorum, replicationFactor: configuration.replicationFactor,
                keySpace: table.keySpace)
            target = value.target
            request = .getValue(key: name.recordKey)
            lookupConfiguration = configuration.valueLookup
            kind = .value(value, key: name.recordKey, unixNow: unixNow)
        case .providers(let key, let limit):
            target = KademliaKey(hashing: key)
            request = .getProviders(key: key)
            lookupConfiguration = configuration.closestPeersLookup
            var found: [Peer] = []
            addProviders(providers.providers(of: key, now: now, limit: limit), to: &found, limit: limit)
            // Enough in our own store: no lookup.
            guard found.count < limit else {
                actions.append(.finished(id, .providers(found)))
                return
            }
            kind = .providers(found: found, limit: limit)
        }
        table.recordLookup(of: target, now: now)
        let seeds = table.closestPeers(to: target, count: lookupConfiguration.resultCount).map(\.peer)
        var seen = Set(seeds.map { key(of: $0) })
        let allSeeds = seeds + extraSeeds.filter { seen.insert(key(of: $0)).inserted }
        queries[id] = RunningQuery(
            lookup: ClosestPeersLookup(
                target: target, seeds: allSeeds, localKey: table.localKey, keySpace: table.keySpace,
                configuration: lookupConfiguration),
            kind: kind, request: request, trusted: Set(extraSeeds.map { key(of: $0) }))
        poll(id, now: now, into: &actions)
    }

    /// Asks the query's lookup what to do next: requests to send, a timer, or the end.
    mutating func poll(_ id: KademliaQueryID, now: NIODeadline, into actions: inout [Action]) {
        guard var query = queries[id] else { return }
        while true {
            var step = query.lookup.next(now: now)
            if case .waiting = step, query.outstanding == 0, query.lookup.nextTimeout == nil {
                // Nothing can arrive any more: every request was reported. The state machine
                // finishes when asked past every timeout.
                step = query.lookup.next(now: now + .hours(24))
            }
            switch step {
            case .query(let peer):
                query.outstanding += 1
                actions.append(.send(id, peer, query.request, hearsay: !query.trusted.contains(key(of: peer))))
            case .waiting:
                if let deadline = query.lookup.nextTimeout, deadline != query.armedTimer {
                    query.armedTimer = deadline
                    actions.append(.armQueryTimer(id, deadline))
                }
                queries[id] = query
                return
            case .finished(let result):
                queries[id] = nil
                actions.append(.finished(id, Self.outcome(of: query, result)))
                return
            }
        }
    }

    static func outcome(of query: RunningQuery, _ result: LookupResult<Peer>) -> KademliaQueryOutcome<Peer> {
        switch query.kind {
        case .closestPeers: .closestPeers(result)
        case .value(let value, _, _): .value(result, value)
        case .providers(let found, _): .providers(found)
        }
    }

    mutating func received(
        _ response: KademliaResponse<Peer>, for id: KademliaQueryID, from peer: Peer, now: NIODeadline,
        unixNow: UInt64, into actions: inout [Action]
    ) {
        guard var query = queries[id] else { return }
        query.outstanding -= 1
        guard response.kind == query.request.kind else {
            queries[id] = query
            requestFailed(
                id, peer: peer,
                failure: KadRequestFailure(
                    .badAnswer, "\(peer) answered \(query.request.kind.rawValue) with \(response.kind.rawValue)"),
                now: now, countOutstanding: false, into: &actions)
            return
        }
        var foundValue = false
        var providersComplete = false
        switch (query.kind, response) {
        case (.value(var value, let recordKey, let queryUnixNow), .value(_, let answered?)):
            switch answered {
            case .success(let signed):
                let verify = self.verify
                let verdict = value.receive(signed, from: peer, key: key(of: peer)) {
                    record throws(ResolutionError) in try verify(record, queryUnixNow)
                }
                foundValue = verdict == .valid
            case .failure(let error):
                value.receiveInvalid(from: peer, error.kind)
            }
            query.kind = .value(value, key: recordKey, unixNow: queryUnixNow)
        case (.value, _):
            break
        case (.providers(var found, let limit), .providers(_, let providers)):
            if !providers.isEmpty {
                foundValue = true
                addProviders(providers, to: &found, limit: limit)
            }
            providersComplete = found.count >= limit
            query.kind = .providers(found: found, limit: limit)
        case (.providers(let found, let limit), _):
            providersComplete = found.count >= limit
        case (.closestPeers, _):
            break
        }
        // A late answer (after the lookup's timeout) still counts.
        query.lookup.received(from: peer, closerPeers: response.closerPeers, foundValue: foundValue, now: now)
        // The early stop of a value lookup is judged with this answer in the lookup: the agreeing
        // answers must be those of the closest peers it knows (spec/dht.md §8.2).
        let mayStop: Bool
        switch query.kind {
        case .value(let value, _, _): mayStop = foundValue && value.mayStop(query.lookup)
        case .providers: mayStop = providersComplete
        case .closestPeers: mayStop = false
        }
        if foundValue, mayStop {
            queries[id] = nil
            actions.append(.finished(id, Self.outcome(of: query, query.lookup.stop(now: now))))
            return
        }
        queries[id] = query
        poll(id, now: now, into: &actions)
    }

    mutating func requestFailed(
        _ id: KademliaQueryID, peer: Peer, failure: KadRequestFailure, now: NIODeadline,
        countOutstanding: Bool = true, into actions: inout [Action]
    ) {
        if var query = queries[id] {
            if countOutstanding { query.outstanding -= 1 }
            query.lookup.failed(peer, now: now)
            queries[id] = query
            poll(id, now: now, into: &actions)
        }
        // Liveness (spec/dht.md §4): only evidence that the peer is gone, or that it no longer
        // serves the DHT, takes it out of the table.
        guard failure.countsAgainstLiveness || failure.kind == .notServing else { return }
        if let eviction = table.remove(key: key(of: peer)) {
            actions.append(.removed(eviction, reason: "\(failure.kind)"))
        }
    }

    /// Providers named by a peer (or our store), deduplicated, at most `limit`; a provider first
    /// named without addresses takes the addresses of a later mention.
    func addProviders(_ providers: [Peer], to found: inout [Peer], limit: Int) {
        for provider in providers {
            let providerKey = key(of: provider)
            let index = found.firstIndex { key(of: $0) == providerKey }
            guard found.count < limit || index != nil else { continue }
            if let index {
                if found[index].addresses.isEmpty {
                    found[index] = found[index].withAddresses(provider.addresses)
                }
            } else {
                found.append(provider)
            }
        }
    }
}
