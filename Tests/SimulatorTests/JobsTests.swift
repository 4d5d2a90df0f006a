import NIOCore
import Resolution
import Testing

@testable import agent_sim

/// The behaviour's own jobs on the virtual clock (`Simulation+Jobs.swift`): upkeep republishes own
/// records when due, re-replication restores records whose replicas left, and stopped jobs let the
/// simulation go idle.
@Suite("agent-sim jobs: the behaviour's upkeep and re-replication on the virtual clock")
struct JobsTests {
    @Test("upkeep republishes an own record at half its TTL; re-replication puts records back on r online nodes")
    func republishAndReplicate() throws {
        let seed: UInt64 = 21
        var parameters = NetworkParameters()
        parameters.recordTTL = 600  // republished after 300 s
        parameters.replicationInterval = .minutes(10)
        let simulation = RecordsTests.network(nodes: 80, seed: seed, parameters: parameters)
        let owner = 3
        let name = simulatedName(of: simulation.nodes[owner].serial)
        simulation.assignName(name, to: owner)
        simulation.publishOwnRecord(of: owner)
        simulation.runUntilIdle()
        let first = try #require(simulation.ownRecord(of: owner, for: name))
        let replicas = simulation.nodes.indices.filter {
            $0 != owner && simulation.storedRecord(at: $0, for: name) != nil
        }
        #expect(replicas.count == 5)

        // Three of the five replicas leave; every other node runs its jobs.
        for replica in replicas.prefix(3) { simulation.leave(replica, refuses: false) }
        for node in simulation.onlineNodes { simulation.startJobs(of: node) }
        simulation.run(until: simulation.now + .minutes(12))

        // The owner republished (a new seq) at an upkeep round after 300 s.
        let current = try #require(simulation.ownRecord(of: owner, for: name))
        #expect(current.record.seq > first.record.seq)
        // The survivors and the republish put the name back on at least r online nodes.
        let holders = simulation.onlineNodes.filter {
            $0 != owner && simulation.storedRecord(at: $0, for: name)?.record.seq == current.record.seq
        }
        #expect(holders.count >= parameters.replicationFactor)

        for node in simulation.nodes.indices { simulation.stopJobs(of: node) }
        simulation.runUntilIdle()
        #expect(simulation.onlineNodes.allSatisfy { simulation.nodes[$0].kad.nextDeadline == nil })
    }

    @Test("re-replication alone restores a record whose replicas left (its owner gone too)")
    func replicationRestores() throws {
        let seed: UInt64 = 22
        var parameters = NetworkParameters()
        parameters.replicationInterval = .minutes(5)
        let simulation = RecordsTests.network(nodes: 80, seed: seed, parameters: parameters)
        let owner = 9
        let name = simulatedName(of: simulation.nodes[owner].serial)
        simulation.assignName(name, to: owner)
        simulation.publishOwnRecord(of: owner)
        simulation.runUntilIdle()
        let replicas = simulation.nodes.indices.filter {
            $0 != owner && simulation.storedRecord(at: $0, for: name) != nil
        }
        simulation.leave(owner, refuses: true)
        for replica in replicas.prefix(4) { simulation.leave(replica, refuses: true) }
        let survivor = replicas[4]
        let before = simulation.traffic.put
        for node in simulation.onlineNodes { simulation.startJobs(of: node) }
        simulation.run(until: simulation.now + .minutes(6))
        // The survivor's round pushed the record to the current closest: r online holders again.
        let holders = simulation.onlineNodes.filter { simulation.storedRecord(at: $0, for: name) != nil }
        #expect(holders.contains(survivor))
        #expect(holders.count >= parameters.replicationFactor)
        #expect(simulation.traffic.put > before)
    }

    @Test("churn --build direct: continuous churn on a directly built network, jobs running, names resolved")
    func churnOnDirectBuild() async throws {
        let options = try SimulationOptions.parse(["--nodes", "80", "--names", "16", "--seed", "4"])
        let report = await ChurnExperiment(
            options: options, replicationFactors: [3], losses: [30], gradualFactors: [5], churnPercentPerMinute: 1,
            hours: 1, probes: 10, build: .direct
        ).run()
        #expect(report.parameters["build"] == "direct")
        let continuous = try #require(
            try ReportContractTests.results(of: report, adding: ["replication"], nodes: [80])
                .first { $0["scenario"] as? String == "continuous" })
        #expect((continuous["attempts"] as? Int ?? 0) > 0)
        // Owners' names stay resolvable under 1 %/min churn with r = 5 and the jobs running.
        #expect((continuous["success_rate"] as? Double ?? 0) >= 0.9)
    }
}
