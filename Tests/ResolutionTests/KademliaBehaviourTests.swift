import AgentTesting
import Identity
import Multiformats
import NIOCore
import Testing

@testable import Resolution

/// `KademliaBehaviour` without sockets, on a virtual clock: queries across a network of behaviours
/// that answer each other in memory, the server's answers and their storage failures, admission,
/// liveness checks and dial-backs, and the job schedule.
@Suite("KademliaBehaviour: queries, server answers, admission, jobs (virtual time)")
struct KademliaBehaviourTests {
    static let t0 = KadFixtures.start

    static func configuration() -> DHTConfiguration {
        var configuration = DHTConfiguration()
        configuration.replicationFactor = 5
        configuration.valueQuorum = 3
        return configuration
    }

    /// Behaviours that answer each other in memory: a request is answered at once by the target's
    /// behaviour and its answer fed back to the asker, one hop later on the virtual clock.
    struct Network {
        var nodes: [KademliaBehaviour<KademliaPeer>]
        let ids: [PeerID]
        var index: [PeerID: Int] = [:]
        /// Nodes that never answer (their requests are left in flight).
        var silent: Set<Int> = []
        var messages = 0

        /// `tableFill`: how many random others each node offers its table (its buckets keep what
        /// fits); `nil` offers every other node, which leaves the table a long-running node has.
        init(count: Int, seed: UInt64, tableFill: Int? = nil, stores: [any RecordStoring]? = nil) {
            var generator = SeededGenerator(seed: seed)
            let ids = (0..<count).map { _ in KadFixtures.peerID(using: &generator) }
            self.ids = ids
            nodes = ids.indices.map { node in
                KademliaBehaviour(
                    localPeer: ids[node], configuration: KademliaBehaviourTests.configuration(),
                    store: stores?[node] ?? MemoryRecordStore(), seed: UInt64(node))
            }
            for (node, id) in ids.enumerated() { index[id] = node }
            for node in ids.indices {
                let others = tableFill.map { fill in
                    (0..<fill).map { _ in Int.random(in: 0..<count, using: &generator) }
                }
                for other in others ?? Array(ids.indices) {
                    guard other != node else { continue }
                    _ = nodes[node].table.add(
                        KademliaPeer(id: ids[other], addresses: [KadFixtures.address(other)]),
                        evidence: .answeredRequest,
                        now: KademliaBehaviourTests.t0)
                }
            }
        }

        /// Runs `query` from `origin` to its end; returns its outcome and the actions that were
        /// not sends, timers or the end.
        mutating func run(
            _ query: KademliaQuery<KademliaPeer>, from origin: Int, now start: NIODeadline = KademliaBehaviourTests.t0
        ) -> (outcome: KademliaQueryOutcome<KademliaPeer>, other: [KademliaAction<KademliaPeer>]) {
            var now = start
            var actions: [KademliaAction<KademliaPeer>] = []
            var other: [KademliaAction<KademliaPeer>] = []
            let id = nodes[origin].makeQueryID()
            nodes[origin].handle(.startQuery(id, query), now: now, unixNow: Fixtures.now, into: &actions)
            var timers: [NIODeadline] = []
            var requestID: UInt64 = 0
            while true {
                var next: [KademliaAction<KademliaPeer>] = []
                for action in actions {
                    switch action {
                    case .send(let query, let peer, let message, _):
                        let target = index[peer.id]!
                        messages += 1
                        guard !silent.contains(target) else { continue }
                        requestID += 1
                        var answers: [KademliaAction<KademliaPeer>] = []
                        nodes[target].handle(
                            .request(KademliaRequestID(raw: requestID), from: KademliaPeer(id: ids[origin]), message), now: now,
                            unixNow: Fixtures.now, into: &answers)
                        guard case .respond(_, .answer(let answer)) = answers.last else {
                            nodes[origin].handle(
                                .requestFailed(query, peer: peer, KadRequestFailure(.refused, "refused")), now: now,
                                unixNow: Fixtures.now, into: &next)
                            continue
                        }
                        nodes[origin].handle(
                            .response(
                                query, from: peer, answer, PeerContact(verified: [KadFixtures.address(target)])),
                            now: now, unixNow: Fixtures.now, into: &next)
                    case .armQueryTimer(_, let deadline):
                        timers.append(deadline)
                    case .finished(let finished, let outcome):
                        #expect(finished == id)
                        return (outcome, other)
                    default:
                        other.append(action)
                    }
                }
                if next.isEmpty {
                    // Only silent peers are left: the earliest timer fires.
                    timers.sort()
                    guard !timers.isEmpty else {
                        Issue.record("query stalled with nothing to wait for")
                        return (.closestPeers(nodes[origin].queries[id]!.lookup.stop(now: now)), other)
                    }
                    now = timers.removeFirst()
                    nodes[origin].handle(.queryTimer(id), now: now, unixNow: Fixtures.now, into: &next)
                }
                now = now + .milliseconds(10)
                actions = next
            }
        }

        /// The `count` ids closest to `key`, by brute force.
        func closest(to key: KademliaKey, count: Int) -> [PeerID] {
            Array(
                ids.sorted { key.distance(to: KademliaKey(peer: $0)) < key.distance(to: KademliaKey(peer: $1)) }.prefix(
                    count))
        }
    }

    // MARK: Queries

    @Test("a closest-peers query over 300 behaviours finds the true 20 closest to the target")
    func closestPeersConverge() throws {
        var network = Network(count: 300, seed: 14)
        for (origin, keyByte) in [(0, UInt8(1)), (17, 2), (150, 3)] {
            let key = [UInt8](repeating: keyByte, count: 32)
            let (outcome, _) = network.run(.closestPeers(key: key, extraSeeds: []), from: origin)
            guard case .closestPeers(let result) = outcome else {
                Issue.record("wrong outcome")
                return
            }
            let expected = network.closest(to: KademliaKey(hashing: key), count: 21).filter {
                $0 != network.ids[origin]
            }
            #expect(result.termination == .converged)
            #expect(result.closest.map(\.id) == Array(expected.prefix(20)))
            #expect(result.statistics.hops >= 1)
            // The peers that answered are in the asker's table, with the address it reached them at.
            for peer in result.closest {
                let entry = network.nodes[origin].table.entry(for: peer.id)
                #expect(entry == nil || entry?.peer.addresses == [KadFixtures.address(network.index[peer.id]!)])
            }
        }
    }

    /// Puts `record` to the 5 nodes closest to the fixture name's key, the one of rank `forgedRank`
    /// (if any) getting a forgery instead, which it refuses; returns the outcome of a value query from a
    /// node that is not one of them.
    static func valueQuery(
        _ network: inout Network, _ record: SignedAgentRecord, forgedRank: Int?
    ) throws -> (LookupResult<KademliaPeer>, ValueLookup<KademliaPeer>)? {
        let key = Fixtures.name.recordKey
        let replicas = network.closest(to: KademliaKey(hashing: key), count: 5)
        var forged = Fixtures.record(seq: 9).bytes
        forged[forged.count - 1] ^= 0xff
        for (rank, replica) in replicas.enumerated() {
            let value = rank == forgedRank ? forged : record.bytes
            var actions: [KademliaAction<KademliaPeer>] = []
            let put = KademliaRequest<KademliaPeer>.putValue(try SignedAgentRecord(bytes: value))
            network.nodes[network.index[replica]!].handle(
                .request(KademliaRequestID(raw: 1), from: KademliaPeer(id: network.ids[0]), put), now: Self.t0,
                unixNow: Fixtures.now, into: &actions)
            if rank == forgedRank {
                // The server refuses what it cannot verify, and holds nothing for the name.
                guard case .respond(_, .refuse) = actions.last else {
                    Issue.record("a forged PUT_VALUE was accepted")
                    return nil
                }
            } else {
                #expect(actions.last.map { if case .respond(_, .answer) = $0 { true } else { false } } == true)
            }
        }
        let origin = network.ids.indices.first { !replicas.contains(network.ids[$0]) }!
        let (outcome, _) = network.run(.value(Fixtures.name), from: origin)
        guard case .value(let result, let value) = outcome else {
            Issue.record("wrong outcome")
            return nil
        }
        return (result, value)
    }

    @Test("a value query stops early once the quorum closest peers it knows agree (spec/dht.md §8.2)")
    func valueQueryStopsEarly() throws {
        var network = Network(count: 200, seed: 7)
        let record = Fixtures.record(seq: 5)
        let (result, value) = try #require(try Self.valueQuery(&network, record, forgedRank: nil))
        #expect(result.termination == .quorumReached)
        #expect((3...5).contains(value.validAnswers))
        #expect(value.decide(closest: result.closest, local: nil)?.choice.record == record)
    }

    @Test("replicas refuse a forged PUT_VALUE; the closest node, holding nothing, holds the early stop off")
    func valueQuery() throws {
        var network = Network(count: 200, seed: 7)
        let record = Fixtures.record(seq: 5)
        let (result, value) = try #require(try Self.valueQuery(&network, record, forgedRank: 0))
        // The closest node refused the forgery and answers without a record, so the three closest
        // never agree: the query runs to its end and hears the four others.
        #expect(result.termination == .converged)
        #expect(value.validAnswers == 4)
        let decision = try #require(value.decide(closest: result.closest, local: nil))
        #expect(decision.choice.record == record)
    }

    @Test("a silent peer's request times out on the virtual clock and the query goes on without it")
    func silentPeerTimesOut() throws {
        var network = Network(count: 120, seed: 3)
        let key = [UInt8](repeating: 9, count: 32)
        let target = KademliaKey(hashing: key)
        // The origin's own closest entry never answers.
        let origin = 5
        let seed = try #require(network.nodes[origin].table.closestPeers(to: target, count: 1).first)
        network.silent = [network.index[seed.peer.id]!]
        let (outcome, _) = network.run(.closestPeers(key: key, extraSeeds: []), from: origin)
        guard case .closestPeers(let result) = outcome else {
            Issue.record("wrong outcome")
            return
        }
        #expect(result.statistics.timeouts >= 1)
        #expect(!result.closest.contains { $0.id == seed.peer.id })
        #expect(result.termination == .converged)
    }

    @Test("a cancelled query ends at once with what it has")
    func cancelledQuery() {
        var network = Network(count: 50, seed: 11)
        var actions: [KademliaAction<KademliaPeer>] = []
        let id = network.nodes[0].makeQueryID()
        network.nodes[0].handle(
            .startQuery(id, .closestPeers(key: [1, 2, 3], extraSeeds: [])), now: Self.t0, unixNow: Fixtures.now,
            into: &actions)
        #expect(actions.contains { if case .send = $0 { true } else { false } })
        actions.removeAll()
        network.nodes[0].handle(.cancelQuery(id), now: Self.t0, unixNow: Fixtures.now, into: &actions)
        guard case .finished(id, .closestPeers(let result)) = actions.first else {
            Issue.record("no outcome for a cancelled query: \(actions)")
            return
        }
        #expect(result.closest.isEmpty)
        #expect(network.nodes[0].queries.isEmpty)
    }

    @Test("providers found in the local store end the query without a lookup; others are found by GET_PROVIDERS")
    func providers() {
        var network = Network(count: 150, seed: 5)
        let key = [UInt8](repeating: 0x42, count: 34)
        let provider = network.ids[20]
        let holders = network.closest(to: KademliaKey(hashing: key), count: 3)
        for holder in holders {
            var actions: [KademliaAction<KademliaPeer>] = []
            let add = KademliaRequest<KademliaPeer>.addProvider(
                key: key,
                providers: [
                    KademliaPeer(id: provider, addresses: [KadFixtures.address(20)]),
                    // Not the sender: ignored.
                    KademliaPeer(id: network.ids[21], addresses: [KadFixtures.address(21)]),
                ])
            network.nodes[network.index[holder]!].handle(
                .request(KademliaRequestID(raw: 1), from: KademliaPeer(id: provider), add), now: Self.t0, unixNow: Fixtures.now,
                into: &actions)
            guard case .respond(_, .none) = actions.last else {
                Issue.record("ADD_PROVIDER answered: \(actions)")
                return
            }
        }
        let origin = network.ids.indices.first { !holders.contains(network.ids[$0]) && $0 != 20 }!
        let (found, _) = network.run(.providers(key: key, limit: 5), from: origin)
        guard case .providers(let providers) = found else {
            Issue.record("wrong outcome")
            return
        }
        #expect(providers.map(\.id) == [provider])
        #expect(providers.first?.addresses == [KadFixtures.address(20)])

        let holder = network.index[holders[0]]!
        let before = network.messages
        let (local, _) = network.run(.providers(key: key, limit: 1), from: holder)
        guard case .providers(let own) = local else {
            Issue.record("wrong outcome")
            return
        }
        #expect(own.map(\.id) == [provider])
        #expect(network.messages == before, "a lookup ran although the local store had enough providers")
    }

    // MARK: Server answers and storage failures

    @Test("a PUT_VALUE the store cannot keep is refused and the failure surfaced; GET_VALUE answers without it")
    func storageFailuresSurface() {
        let store = FailingRecordStore()
        var generator = SeededGenerator(seed: 1)
        var behaviour = KademliaBehaviour(
            localPeer: KadFixtures.peerID(using: &generator), configuration: Self.configuration(), store: store, seed: 1
        )
        let asker = KadFixtures.peerID(using: &generator)
        let record = Fixtures.record()
        let key = record.record.name.recordKey
        store.fail([.put, .get])
        var actions: [KademliaAction<KademliaPeer>] = []
        behaviour.handle(
            .request(
                KademliaRequestID(raw: 1), from: KademliaPeer(id: asker), .putValue(record)),
            now: Self.t0, unixNow: Fixtures.now, into: &actions)
        #expect(actions.count == 2)
        #expect(
            actions.contains {
                if case .storageFailed(_, let error, name: Fixtures.name) = $0 { error.kind == .storage } else { false }
            })
        #expect(actions.contains { if case .respond(_, .refuse) = $0 { true } else { false } })

        actions.removeAll()
        behaviour.handle(
            .request(KademliaRequestID(raw: 2), from: KademliaPeer(id: asker), .getValue(key: key)), now: Self.t0,
            unixNow: Fixtures.now, into: &actions)
        #expect(actions.contains { if case .storageFailed = $0 { true } else { false } })
        guard case .respond(_, .answer(.value(_, let answered))) = actions.last else {
            Issue.record("GET_VALUE not answered: \(actions)")
            return
        }
        #expect(answered == nil)

        // Once the store works again, the record is kept and served.
        store.fail([])
        actions.removeAll()
        behaviour.handle(
            .request(
                KademliaRequestID(raw: 3), from: KademliaPeer(id: asker), .putValue(record)),
            now: Self.t0, unixNow: Fixtures.now, into: &actions)
        behaviour.handle(
            .request(KademliaRequestID(raw: 4), from: KademliaPeer(id: asker), .getValue(key: key)), now: Self.t0,
            unixNow: Fixtures.now, into: &actions)
        guard case .respond(_, .answer(.value(_, let served))) = actions.last else {
            Issue.record("GET_VALUE not answered: \(actions)")
            return
        }
        #expect(served == .success(record))
        #expect(!actions.contains { if case .storageFailed = $0 { true } else { false } })
    }

    // MARK: Admission, liveness, dial-back

    @Test("failures that prove a peer gone remove it; a refusal or unreachable hearsay does not")
    func livenessRule() {
        var network = Network(count: 30, seed: 2, tableFill: 0)
        let peer = KademliaPeer(id: network.ids[1], addresses: [KadFixtures.address(1)])
        _ = network.nodes[0].table.add(peer, evidence: .answeredRequest, now: Self.t0)
        var actions: [KademliaAction<KademliaPeer>] = []
        let id = network.nodes[0].makeQueryID()
        for kind in [KadRequestFailure.Kind.refused, .unreachableByHearsay, .badAnswer] {
            network.nodes[0].handle(
                .requestFailed(id, peer: peer, KadRequestFailure(kind, "test")), now: Self.t0, unixNow: Fixtures.now,
                into: &actions)
            #expect(network.nodes[0].table.contains(peer.id), "\(kind) evicted the peer")
        }
        network.nodes[0].handle(
            .requestFailed(id, peer: peer, KadRequestFailure(.timedOut, "test")), now: Self.t0,
            unixNow: Fixtures.now,
            into: &actions)
        #expect(!network.nodes[0].table.contains(peer.id))
        #expect(actions.contains { if case .removed = $0 { true } else { false } })
    }

    @Test("a peer that dialled us is dialled back once, enters with the proven address, and a failure waits")
    func dialBack() {
        var network = Network(count: 4, seed: 8, tableFill: 0)
        let peerID = network.ids[1]
        let peer = KademliaPeer(id: peerID)
        let contact = PeerContact(dialBackCandidates: [KadFixtures.address(1)])
        var actions: [KademliaAction<KademliaPeer>] = []
        network.nodes[0].handle(
            .inboundStream(peer, .server, contact), now: Self.t0, unixNow: Fixtures.now, into: &actions)
        guard case .dialBack(peer, .inboundStream(.server), let candidates) = actions.first else {
            Issue.record("no dial-back: \(actions)")
            return
        }
        #expect(candidates == [KadFixtures.address(1)])
        #expect(!network.nodes[0].table.contains(peerID))
        // A second stream while the dial-back runs starts no other.
        actions.removeAll()
        network.nodes[0].handle(
            .inboundStream(peer, .server, contact), now: Self.t0, unixNow: Fixtures.now, into: &actions)
        #expect(actions.isEmpty)
        // It fails: no new dial-back within the retry interval, one after it.
        network.nodes[0].handle(
            .dialBackFinished(peer, .inboundStream(.server), proven: nil), now: Self.t0, unixNow: Fixtures.now,
            into: &actions)
        let retry = Self.configuration().dialBackRetryInterval
        network.nodes[0].handle(
            .inboundStream(peer, .server, contact), now: Self.t0 + retry - .seconds(1), unixNow: Fixtures.now,
            into: &actions)
        #expect(actions.isEmpty)
        network.nodes[0].handle(
            .inboundStream(peer, .server, contact), now: Self.t0 + retry, unixNow: Fixtures.now, into: &actions)
        #expect(actions.count == 1)
        network.nodes[0].handle(
            .dialBackFinished(peer, .inboundStream(.server), proven: KadFixtures.address(1)), now: Self.t0 + retry,
            unixNow: Fixtures.now, into: &actions)
        #expect(network.nodes[0].table.entry(for: peerID)?.peer.addresses == [KadFixtures.address(1)])
        // A client-mode peer needs no address: it enters the table's bookkeeping as a client.
        actions.removeAll()
        network.nodes[0].handle(
            .inboundStream(KademliaPeer(id: network.ids[2]), .client, PeerContact()), now: Self.t0, unixNow: Fixtures.now, into: &actions)
        #expect(actions.isEmpty)
    }

    @Test("a full bucket asks for a liveness check of its oldest entry; a failed check lets the newcomer in")
    func livenessCheck() throws {
        var generator = SeededGenerator(seed: 99)
        let local = KadFixtures.peerID(using: &generator)
        var behaviour = KademliaBehaviour(
            localPeer: local, configuration: Self.configuration(), store: MemoryRecordStore(), seed: 2)
        let localKey = KademliaKey(peer: local)
        var bucket: [KademliaPeer] = []
        for index in 0..<21 {
            var peer = KadFixtures.peer(inBucket: 255, of: localKey, using: &generator)
            peer.addresses = [KadFixtures.address(index)]
            bucket.append(peer)
        }
        var actions: [KademliaAction<KademliaPeer>] = []
        for (index, peer) in bucket.prefix(20).enumerated() {
            behaviour.handle(
                .inboundStream(peer, .server, PeerContact(verified: peer.addresses)),
                now: Self.t0 + .seconds(Int64(index)), unixNow: Fixtures.now, into: &actions)
        }
        #expect(actions.isEmpty)
        behaviour.handle(
            .inboundStream(bucket[20], .server, PeerContact(verified: bucket[20].addresses)),
            now: Self.t0 + .seconds(90),
            unixNow: Fixtures.now, into: &actions)
        guard case .checkLiveness(let oldest) = actions.first else {
            Issue.record("no liveness check: \(actions)")
            return
        }
        #expect(oldest.id == bucket[0].id)
        actions.removeAll()
        behaviour.handle(
            .livenessChecked(oldest, alive: false), now: Self.t0 + .seconds(91), unixNow: Fixtures.now,
            into: &actions)
        #expect(!behaviour.table.contains(bucket[0].id))
        #expect(behaviour.table.contains(bucket[20].id))
    }

    // MARK: Jobs

    @Test("upkeep runs every interval after the last round ended, re-replication start to start, one of each at a time")
    func jobSchedule() {
        var network = Network(count: 40, seed: 4)
        let configuration = Self.configuration()
        var actions: [KademliaAction<KademliaPeer>] = []
        #expect(network.nodes[0].nextDeadline == nil)
        network.nodes[0].handle(.maintenance(enabled: true), now: Self.t0, unixNow: Fixtures.now, into: &actions)
        #expect(network.nodes[0].nextDeadline == Self.t0 + configuration.maintenanceInterval)
        network.nodes[0].handle(.timer, now: Self.t0 + .seconds(59), unixNow: Fixtures.now, into: &actions)
        #expect(actions.isEmpty)
        let firstUpkeep = Self.t0 + configuration.maintenanceInterval
        network.nodes[0].handle(.timer, now: firstUpkeep, unixNow: Fixtures.now, into: &actions)
        guard case .runJob(.upkeep(let targets)) = actions.first, actions.count == 1 else {
            Issue.record("no upkeep: \(actions)")
            return
        }
        #expect(!targets.isEmpty, "no bucket was due for a refresh although none was ever refreshed")
        // While it runs, no second upkeep, even long after.
        actions.removeAll()
        #expect(network.nodes[0].nextDeadline == Self.t0 + configuration.replicationInterval)
        network.nodes[0].handle(.timer, now: firstUpkeep + .seconds(600), unixNow: Fixtures.now, into: &actions)
        #expect(actions.isEmpty)
        let ended = firstUpkeep + .seconds(700)
        network.nodes[0].handle(.jobFinished(.upkeep), now: ended, unixNow: Fixtures.now, into: &actions)
        #expect(network.nodes[0].nextDeadline == ended + configuration.maintenanceInterval)
        // The buckets refreshed by the first round are not due again in the next.
        network.nodes[0].handle(
            .timer, now: ended + configuration.maintenanceInterval, unixNow: Fixtures.now, into: &actions)
        guard case .runJob(.upkeep(let again)) = actions.first else {
            Issue.record("no second upkeep: \(actions)")
            return
        }
        #expect(again.isEmpty)
        network.nodes[0].handle(.jobFinished(.upkeep), now: ended + .seconds(61), unixNow: Fixtures.now, into: &actions)

        // Re-replication: one interval after the start, then start to start.
        actions.removeAll()
        let firstReplication = Self.t0 + configuration.replicationInterval
        network.nodes[0].handle(.timer, now: firstReplication, unixNow: Fixtures.now, into: &actions)
        #expect(actions.contains { if case .runJob(.replication) = $0 { true } else { false } })
        actions.removeAll()
        network.nodes[0].handle(
            .timer, now: firstReplication + configuration.replicationInterval + .seconds(5), unixNow: Fixtures.now,
            into: &actions)
        #expect(!actions.contains { if case .runJob(.replication) = $0 { true } else { false } }, "two rounds at once")
        let longRoundEnd = firstReplication + configuration.replicationInterval + .seconds(10)
        network.nodes[0].handle(.jobFinished(.replication), now: longRoundEnd, unixNow: Fixtures.now, into: &actions)
        #expect(
            network.nodes[0].nextDeadline! <= longRoundEnd, "a round longer than the interval is not followed at once")

        // Stopped: no deadline from the periodic jobs.
        network.nodes[0].handle(.maintenance(enabled: false), now: longRoundEnd, unixNow: Fixtures.now, into: &actions)
        #expect(network.nodes[0].nextDeadline == nil)
    }

    @Test("the table growing while an own name lacks replicas schedules one republish half a second later")
    func republishAfterGrowth() throws {
        var network = Network(count: 10, seed: 6, tableFill: 0)
        let started = network.nodes[0].ownNames.beginRegister(Fixtures.name)
        let ticket = try #require(started)
        let kept = network.nodes[0].ownNames.finishRegister(
            ticket, entry: OwnNames.Entry(addresses: nil, protocols: nil, ttl: 3600))
        #expect(kept)
        var actions: [KademliaAction<KademliaPeer>] = []
        for peer in 1...3 {
            network.nodes[0].handle(
                .inboundStream(KademliaPeer(id: network.ids[peer]), .server, PeerContact(verified: [KadFixtures.address(peer)])),
                now: Self.t0 + .milliseconds(Int64(peer * 100)), unixNow: Fixtures.now, into: &actions)
        }
        // One pending republish, from the first insertion.
        let due = Self.t0 + .milliseconds(100) + JobSchedule.growthRepublishDelay
        #expect(network.nodes[0].nextDeadline == due)
        network.nodes[0].handle(.timer, now: due - .milliseconds(1), unixNow: Fixtures.now, into: &actions)
        #expect(actions.isEmpty)
        network.nodes[0].handle(.timer, now: due, unixNow: Fixtures.now, into: &actions)
        #expect(actions.count == 1)
        guard case .runJob(.republishAfterGrowth) = actions.first else {
            Issue.record("no republish: \(actions)")
            return
        }
        #expect(network.nodes[0].nextDeadline == nil)
        // The next growth schedules another.
        actions.removeAll()
        network.nodes[0].handle(
            .inboundStream(KademliaPeer(id: network.ids[4]), .server, PeerContact(verified: [KadFixtures.address(4)])), now: due,
            unixNow: Fixtures.now, into: &actions)
        #expect(network.nodes[0].nextDeadline == due + JobSchedule.growthRepublishDelay)
    }

    @Test("the same seed gives the same refresh targets")
    func seededRefresh() {
        func targets(seed: UInt64) -> [RoutingTable.RefreshTarget] {
            var network = Network(count: 40, seed: 4)
            network.nodes[0].random = SplitMix64(seed: seed)
            var actions: [KademliaAction<KademliaPeer>] = []
            network.nodes[0].handle(.maintenance(enabled: true), now: Self.t0, unixNow: Fixtures.now, into: &actions)
            network.nodes[0].handle(.timer, now: Self.t0 + .seconds(60), unixNow: Fixtures.now, into: &actions)
            guard case .runJob(.upkeep(let targets)) = actions.first else { return [] }
            return targets
        }
        #expect(!targets(seed: 1).isEmpty)
        #expect(targets(seed: 1) == targets(seed: 1))
        #expect(targets(seed: 1) != targets(seed: 2))
    }
}
