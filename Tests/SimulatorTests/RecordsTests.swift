import Identity
import Resolution
import Testing

@testable import agent_sim

/// Records in the simulator go through each virtual node's `KademliaBehaviour` and its
/// `MemoryRecordStore`, as agentd's `DHT` drives them: PUT_VALUE and GET_VALUE answered by the
/// behaviour's server, resolves as its value queries, the store's rules and quotas, and signature
/// verdicts remembered by record hash.
@Suite("agent-sim records: the behaviour's store, PUT_VALUE, resolves, signature verdicts")
struct RecordsTests {
    /// A record for `name` signed by node `serial`'s key in a network seeded with `seed`.
    static func record(_ name: String, serial: UInt64, seed: UInt64, seq: UInt64, at unixNow: UInt64)
        -> SignedAgentRecord
    {
        let key = VirtualNode.privateKey(seed: seed, serial: serial)
        return try! AgentRecord(
            name: AgentName(name), publicKey: key.publicKey, seq: seq, timestamp: unixNow, ttl: RecordLimits.defaultTTL
        ).signed(with: key)
    }

    static func network(nodes: Int, seed: UInt64, parameters: NetworkParameters = NetworkParameters()) -> Simulation {
        Simulation(
            snapshot: Simulation.buildDirect(nodes: nodes, parameters: parameters, seed: seed), parameters: parameters,
            seed: seed, generator: SimulationGenerator(seed: seed, 1))
    }

    @Test("a replica counts PUT_VALUEs under each sender's key: the per-sender quota refuses the excess")
    func perSenderQuota() {
        var parameters = NetworkParameters()
        parameters.recordStore.maximumRecordsPerSender = 2
        let simulation = Self.network(nodes: 30, seed: 4, parameters: parameters)
        let replica = simulation.nodes[1].handle
        var tallies: [PutTally] = []
        for (number, sender) in [0, 0, 0, 2].enumerated() {
            let record = Self.record(
                "quota-\(number)", serial: UInt64(sender), seed: 4, seq: 1, at: simulation.unixNow)
            simulation.put(record, replicas: 1, from: [replica], sender: sender) { _, tally in tallies.append(tally) }
            simulation.runUntilIdle()
        }
        // Node 0's third record breaks its quota of 2; node 2 has a quota of its own.
        #expect(tallies.map(\.stored) == [1, 1, 0, 1])
        #expect(tallies.map(\.refused) == [0, 0, 1, 0])
        #expect(simulation.storedRecord(at: 1, for: try! AgentName("quota-2")) == nil)
        #expect(simulation.storedRecord(at: 1, for: try! AgentName("quota-3")) != nil)
    }

    @Test("an unreachable replica is replaced by the next candidate, as DHT.put does")
    func replacement() {
        let simulation = Self.network(nodes: 30, seed: 6)
        simulation.leave(3, refuses: true)
        simulation.leave(4, refuses: false)
        let record = Self.record("replaced", serial: 0, seed: 6, seq: 1, at: simulation.unixNow)
        let candidates = [3, 4, 5, 6, 7].map { simulation.nodes[$0].handle }
        var tally: PutTally?
        simulation.put(record, replicas: 2, from: candidates, sender: 0) { tally = $1 }
        simulation.runUntilIdle()
        #expect(tally?.stored == 2 && tally?.failed == 2 && tally?.refused == 0)
        #expect([5, 6, 7].filter { simulation.storedRecord(at: $0, for: record.record.name) != nil } == [5, 6])
    }

    @Test("verdicts: content checked once per record hash, timing on every use")
    func verdicts() throws {
        let verdicts = SignatureVerdicts()
        let now = Simulation.unixOrigin
        let valid = Self.record("verdict", serial: 1, seed: 2, seq: 1, at: now)
        try verdicts.validate(valid, now: now)
        try verdicts.validate(valid, now: now + 60)
        // A flipped signature bit: the same content, another hash, refused (and again from memory).
        var bytes = valid.bytes
        bytes[bytes.count - 1] ^= 1
        let forged = try SignedAgentRecord(bytes: bytes)
        for _ in 0..<2 {
            #expect(throws: ResolutionError.self) { try verdicts.validate(forged, now: now) }
            do {
                try verdicts.validate(forged, now: now)
            } catch {
                #expect(error.kind == .badSignature)
            }
        }
        #expect(verdicts.count == 2)
        // Expiry is checked on every use, remembered signature or not.
        do {
            try verdicts.validate(valid, now: valid.record.expires + 1)
            Issue.record("an expired record passed")
        } catch {
            #expect(error.kind == .expired)
        }
    }

    @Test("publish and resolve through the behaviours; stale replicas corrected; snapshot copies keep their own stores")
    func publishResolveCorrect() throws {
        let seed: UInt64 = 8
        let simulation = Self.network(nodes: 120, seed: seed)
        let owner = 5
        let name = simulatedName(of: simulation.nodes[owner].serial)
        simulation.assignName(name, to: owner)
        var published: Bool?
        simulation.publishOwnRecord(of: owner) { published = $1 }
        simulation.runUntilIdle()
        #expect(published == true)
        let holders = simulation.nodes.indices.filter { simulation.storedRecord(at: $0, for: name) != nil }
        // The owner and r = 5 replicas, all online in a direct build.
        #expect(holders.count == 6 && holders.contains(owner))
        let first = try #require(simulation.ownRecord(of: owner, for: name))
        let snapshot = simulation.snapshot

        // A newer version at three of the five replicas only, in one continuation of the network.
        let stale = Simulation(
            snapshot: snapshot, parameters: NetworkParameters(), seed: seed,
            generator: SimulationGenerator(seed: seed, 2))
        let replicas = holders.filter { $0 != owner }
        let newer = Self.record(
            name.value, serial: simulation.nodes[owner].serial, seed: seed, seq: first.record.seq + 1, at: stale.unixNow
        )
        for replica in replicas.prefix(3) { #expect(stale.storeLocally(newer, at: replica)) }
        let resolver = try #require(stale.nodes.indices.first { !holders.contains($0) })
        var outcome: ResolveOutcome?
        stale.resolve(name, from: resolver, holder: stale.nodes[owner].publicKey) { outcome = $1 }
        stale.runUntilIdle()
        #expect(outcome?.found == true && outcome?.resolvedToHolder == true)
        #expect((outcome?.requests ?? 0) > 0)
        // The resolver chose the newer record and PUT it to the closest that answered without it.
        let current = stale.nodes.indices.filter {
            stale.storedRecord(at: $0, for: name)?.record.seq == newer.record.seq
        }
        #expect(current.count > 3)

        // Another continuation of the same snapshot never saw any of it.
        let other = Simulation(
            snapshot: snapshot, parameters: NetworkParameters(), seed: seed,
            generator: SimulationGenerator(seed: seed, 3))
        #expect(
            other.nodes.indices.allSatisfy { other.storedRecord(at: $0, for: name)?.record.seq != newer.record.seq })
        #expect(other.nodes.indices.filter { other.storedRecord(at: $0, for: name) != nil } == holders)
    }

    @Test("an adversary answers GET_VALUE with a rival claim, which a lone rival does not win")
    func adversaryAnswers() {
        let seed: UInt64 = 12
        let simulation = Self.network(nodes: 120, seed: seed)
        let owner = 7
        let name = simulatedName(of: simulation.nodes[owner].serial)
        simulation.assignName(name, to: owner)
        simulation.publishOwnRecord(of: owner)
        simulation.runUntilIdle()
        let adversary = 40
        simulation.setBehaviour(.adversary(sharedKey: false), of: adversary)
        let rival = simulation.rivalRecord(for: name, by: adversary, sharedKey: false)
        #expect(rival.record.publicKey != simulation.nodes[owner].publicKey)
        var outcome: ResolveOutcome?
        simulation.resolve(name, from: 60, holder: simulation.nodes[owner].publicKey) { outcome = $1 }
        simulation.runUntilIdle()
        #expect(outcome?.resolvedToHolder == true)
    }
}
