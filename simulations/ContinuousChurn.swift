import Foundation
import NIOCore
import Resolution

/// Continuous churn: nodes leave abruptly and new ones join, both as Poisson processes at
/// `percentPerMinute` of the initial size per virtual minute, while every node runs its
/// behaviour's jobs as agentd does (spec/dht.md §7, `Simulation+Jobs.swift`): upkeep every minute
/// (bucket refresh, republishing its own record at half its TTL, 12 h), re-replicating what it
/// stores every hour. The jobs start during a warm-up of one replication interval, each node at a
/// random moment of it (a network whose nodes started at different times), while the owners
/// publish; churn and probes start after it. A joining node owns a name with the same probability
/// as the initial ones and publishes it after its bootstrap. Every 30 virtual minutes a sample of
/// the names of online owners (published at least a minute ago) is resolved from random online
/// nodes.
struct ContinuousChurn: Sendable {
    let base: NetworkSnapshot
    let owners: [Int]
    let replicationFactor: Int
    let parameters: NetworkParameters
    let seed: UInt64
    let percentPerMinute: Double
    let hours: Double
    let probes: Int

    static let probeInterval: TimeAmount = .minutes(30)
    /// How long churn and maintenance continue after the last probe started.
    static let tail: TimeAmount = .minutes(10)

    struct Result: Sendable {
        let replicationFactor: Int
        /// Per probe: virtual hours since the churn started, and the resolves.
        let points: [(hours: Double, summary: ResolveSummary)]
        /// Messages of every kind per node per virtual hour.
        let messagesPerNodeHour: Double
        let putsPerNodeHour: Double
        let nodesJoined: Int
        /// Mean routing-table entries at the end, and the share of them that are offline.
        let tableSize: Double
        let deadEntries: Double

        /// Every probe's resolves together.
        var total: ResolveSummary {
            var total = ResolveSummary()
            for point in points { total.merge(point.summary) }
            return total
        }

        /// The figures `--json` and `--out` write: the probes together, and each probe's success
        /// rate (`success_by_probe`, at `probe_hours`).
        func record(nodes: Int, percentPerMinute: Double, hours: Double) -> ResultRecord {
            var record = total.record(nodes: nodes)
            record["scenario"] = .text("continuous")
            record["replication"] = .integer(replicationFactor)
            record["churn_percent_per_minute"] = .number(percentPerMinute)
            record["hours"] = .number(hours)
            record["messages_per_node_hour"] = .number(messagesPerNodeHour)
            record["puts_per_node_hour"] = .number(putsPerNodeHour)
            record["nodes_joined"] = .integer(nodesJoined)
            record["table_entries_mean"] = .number(tableSize)
            record["dead_entry_fraction"] = .number(deadEntries)
            record["probe_hours"] = .numbers(points.map(\.hours))
            record["success_by_probe"] = .numbers(points.map(\.summary.successRate))
            return record
        }
    }

    func run() -> Result {
        var parameters = self.parameters
        parameters.replicationFactor = replicationFactor
        let simulation = Simulation(
            snapshot: base, parameters: parameters, seed: seed,
            generator: SimulationGenerator(seed: seed, 0x6772_6164, UInt64(replicationFactor)))
        let warmUp = parameters.replicationInterval
        let start = simulation.now + warmUp
        let end = start + .nanoseconds(Int64(hours * 3600e9))
        // Churn and maintenance go on a little past the last probe, so that its resolves run in the
        // same conditions as the others.
        let horizon = end + Self.tail
        let ownership = Double(owners.count) / Double(base.nodes.count)
        simulation.startsJobsOnJoin = true

        // Jobs start at random moments of the warm-up, so that upkeep and re-replication rounds
        // are spread over the hour, as in a network whose nodes started at different times.
        for index in simulation.onlineNodes {
            let phase = TimeAmount.nanoseconds(Int64.random(in: 0..<warmUp.nanoseconds, using: &simulation.generator))
            simulation.schedule(after: phase) { simulation in
                guard simulation.nodes[index].isOnline else { return }
                simulation.startJobs(of: index)
            }
        }
        for owner in owners {
            simulation.assignName(simulatedName(of: simulation.nodes[owner].serial), to: owner)
            let delay = TimeAmount.milliseconds(Int64.random(in: 0..<60_000, using: &simulation.generator))
            simulation.schedule(after: delay) { simulation in
                simulation.publishOwnRecord(of: owner) { simulation, _ in
                    simulation.withNode(owner) { $0.publishedAt = simulation.now }
                }
            }
        }

        // Leaves and joins: Poisson processes, each at `percentPerMinute` of the initial size.
        let meanGap = 60.0 / (percentPerMinute / 100 * Double(base.nodes.count))
        let joined = Collector(0)
        func nextGap(_ simulation: Simulation) -> TimeAmount {
            .nanoseconds(Int64(simulation.generator.exponential(mean: meanGap) * 1e9))
        }
        func scheduleLeave(_ simulation: Simulation) {
            simulation.schedule(after: nextGap(simulation)) { simulation in
                guard simulation.now < horizon else { return }
                if simulation.onlineCount > 2, let node = simulation.randomOnlineNode() {
                    simulation.leave(node, refuses: simulation.generator.chance(parameters.refusedFraction))
                }
                scheduleLeave(simulation)
            }
        }
        func scheduleJoin(_ simulation: Simulation) {
            simulation.schedule(after: nextGap(simulation)) { simulation in
                guard simulation.now < horizon else { return }
                let node = simulation.createNode()
                joined.value += 1
                if simulation.generator.chance(ownership) {
                    simulation.assignName(simulatedName(of: simulation.nodes[node].serial), to: node)
                }
                simulation.join(node, through: simulation.randomOnlineNode())
                scheduleJoin(simulation)
            }
        }
        simulation.schedule(at: start) { simulation in
            // Costs are counted from here: the warm-up's publishing is not churn's.
            simulation.traffic = TrafficCounters()
            scheduleLeave(simulation)
            scheduleJoin(simulation)
        }

        // Probes.
        let points = Collector([ResolveSummary]())
        let probeCount = Int(hours * 3600 / Double(Self.probeInterval.nanoseconds / 1_000_000_000))
        let probes = self.probes
        for probe in 1...max(probeCount, 1) {
            points.value.append(ResolveSummary())
            simulation.schedule(at: start + Self.probeInterval * Int64(probe)) { simulation in
                let due = simulation.now - .minutes(1)
                var candidates = simulation.onlineNodes.filter {
                    simulation.nodes[$0].publishedAt.map { $0 <= due } ?? false
                }
                candidates.shuffle(using: &simulation.generator)
                for (offset, owner) in candidates.prefix(probes).enumerated() {
                    guard let resolver = simulation.randomOnlineNode(excluding: owner) else { continue }
                    let name = simulation.nodes[owner].ownName!
                    let holder = simulation.nodes[owner].publicKey
                    simulation.schedule(after: .milliseconds(50) * Int64(offset)) { simulation in
                        guard simulation.nodes[resolver].isOnline else { return }
                        simulation.resolve(name, from: resolver, holder: holder) { _, outcome in
                            points.value[probe - 1].add(outcome)
                        }
                    }
                }
            }
        }

        simulation.run(until: horizon)
        let traffic = simulation.traffic
        let online = simulation.onlineNodes
        var entries = 0
        var dead = 0
        for node in online {
            for entry in simulation.nodes[node].table.entries {
                entries += 1
                if !simulation.nodes[entry.peer.index].isOnline { dead += 1 }
            }
        }
        simulation.startsJobsOnJoin = false
        for index in simulation.nodes.indices { simulation.stopJobs(of: index) }
        simulation.runUntilIdle()

        let nodeHours = Double(base.nodes.count) * Double((horizon - start).nanoseconds) / 3.6e12
        return Result(
            replicationFactor: replicationFactor,
            points: points.value.enumerated().map { (Double($0 + 1) * 0.5, $1) },
            messagesPerNodeHour: Double(traffic.total) / nodeHours, putsPerNodeHour: Double(traffic.put) / nodeHours,
            nodesJoined: joined.value, tableSize: Double(entries) / Double(max(online.count, 1)),
            deadEntries: entries == 0 ? 0 : Double(dead) / Double(entries))
    }

    /// One table of resolvability over time (a column group per r), one of costs.
    static func tables(_ results: [Result], percentPerMinute: Double, hours: Double, nodes: Int) -> [ReportTable] {
        var columns = ["hours"]
        for result in results { columns += ["r=\(result.replicationFactor) ok", "req", "ms"] }
        var overTime = ReportTable(
            title: String(
                format:
                    "Continuous churn: %.2g%% of %d nodes leave and as many join per virtual minute, %.3g h; names of online owners resolvable",
                percentPerMinute, nodes, hours),
            columns: columns)
        let rows = results.map(\.points.count).min() ?? 0
        for row in 0..<rows {
            var cells: [ReportTable.Cell] = [.number(results[0].points[row].hours, decimals: 1)]
            for result in results {
                let summary = result.points[row].summary
                cells += [
                    .ratio(summary.resolvedToHolder, of: summary.attempts), .mean(summary.requests, decimals: 1),
                    .mean(summary.milliseconds, decimals: 0),
                ]
            }
            overTime.add(cells)
        }
        overTime.notes = [
            "ok: share of probed names (up to the probe count, owners online) that resolved to the owner's record;",
            "req / ms: mean requests and virtual milliseconds per resolve.",
        ]

        var costs = ReportTable(
            title: "Continuous churn: totals and costs",
            columns: [
                "r", "resolves", "ok", "hops mean", "requests", "ms p99", "msgs/node/h", "puts/node/h",
                "joined", "table size", "dead entries",
            ])
        for result in results {
            let total = result.total
            costs.add([
                .integer(result.replicationFactor), .integer(total.attempts),
                .ratio(total.resolvedToHolder, of: total.attempts), .mean(total.hops, decimals: 2),
                .mean(total.requests, decimals: 1), .percentile(total.milliseconds, 0.99, decimals: 0),
                .number(result.messagesPerNodeHour, decimals: 0), .number(result.putsPerNodeHour, decimals: 0),
                .integer(result.nodesJoined), .number(result.tableSize, decimals: 0), .percent(result.deadEntries),
            ])
        }
        costs.notes = [
            "msgs/node/h: FIND_NODE, GET_VALUE, PUT_VALUE and pings sent in the whole network per node and hour.",
            "table size / dead entries: mean routing-table entries of online nodes at the end, and the share that are offline.",
        ]
        return [overTime, costs]
    }
}
