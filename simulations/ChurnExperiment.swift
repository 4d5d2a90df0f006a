import Foundation
import NIOCore
import Resolution

/// "What replication factor does churn need?"
///
/// 1. Abrupt loss: names are published with replication factor r; then a fraction f of all nodes
///    leaves at once, with no repair and no republishing, and the names of surviving owners are
///    resolved from random surviving nodes. Then the same after one round of re-replication, in
///    which every surviving storer (owners included: their own records are in their stores) pushes
///    its records to the current r closest nodes.
/// 2. Continuous churn: nodes leave and join at a steady rate for hours while every node runs its
///    maintenance (bucket refresh, republishing at 12 h, hourly re-replication); every 30 minutes
///    a sample of names of online owners is resolved.
struct ChurnExperiment: Sendable {
    let options: SimulationOptions
    let replicationFactors: [Int]
    let losses: [Int]
    let gradualFactors: [Int]
    let churnPercentPerMinute: Double
    let hours: Double
    let probes: Int
    /// How the network is made (`--build`): grown by joins, or filled directly (large N).
    var build = LookupsExperiment.Build.joins

    /// One (r, f, repair) configuration of the abrupt-loss experiment.
    struct AbruptResult: Sendable {
        let replicationFactor: Int
        let loss: Int
        let repaired: Bool
        let summary: ResolveSummary
        /// Messages of the re-replication round, per surviving node.
        let repairMessagesPerNode: Double

        /// The figures `--json` and `--out` write; a success is a resolve that returned the
        /// owner's record.
        func record(nodes: Int) -> ResultRecord {
            var record = summary.record(nodes: nodes)
            record["scenario"] = .text(repaired ? "abrupt_loss_repaired" : "abrupt_loss")
            record["replication"] = .integer(replicationFactor)
            let f = Double(loss) / 100
            record["loss_fraction"] = .number(f)
            record["expected_success_rate"] = .number(1 - pow(f, Double(replicationFactor)))
            if repaired { record["repair_messages_per_node"] = .number(repairMessagesPerNode) }
            return record
        }
    }

    func run() async -> Report {
        let stopwatch = Stopwatch()
        let seed = options.seed
        let parameters = options.parameters
        let count = options.nodeCount
        var report = Report(experiment: "churn", parameters: options.summary)
        report.parameters["nodes"] = String(count)
        report.parameters["names"] = String(min(options.names, count))
        report.parameters["build"] = build.rawValue
        let base =
            build == .direct
            ? Simulation.buildDirect(nodes: count, parameters: parameters, seed: seed)
            : Simulation.build(nodes: count, parameters: parameters, seed: seed).snapshot
        var ownerGenerator = SimulationGenerator(seed: seed, 0x6f77_6e65_72)
        let owners = Array(base.nodes.indices.shuffled(using: &ownerGenerator).prefix(options.names)).sorted()

        // One pool of jobs, longest first, so both cores stay busy to the end.
        enum Job: Sendable {
            case gradual(Int)
            case abrupt(Int)
        }
        enum Outcome: Sendable {
            case gradual(ContinuousChurn.Result)
            case abrupt([AbruptResult])
        }
        let jobs =
            (hours > 0 ? gradualFactors.map(Job.gradual) : []) + replicationFactors.sorted(by: >).map(Job.abrupt)
        let losses = self.losses
        let rate = churnPercentPerMinute
        let hours = self.hours
        let probes = self.probes
        let outcomes = await parallelMap(jobs) { job -> Outcome in
            switch job {
            case .gradual(let r):
                return .gradual(
                    ContinuousChurn(
                        base: base, owners: owners, replicationFactor: r, parameters: parameters, seed: seed,
                        percentPerMinute: rate, hours: hours, probes: probes
                    ).run())
            case .abrupt(let r):
                return .abrupt(
                    Self.abrupt(base: base, owners: owners, r: r, losses: losses, parameters: parameters, seed: seed))
            }
        }
        var abrupt: [AbruptResult] = []
        var gradual: [ContinuousChurn.Result] = []
        for outcome in outcomes {
            switch outcome {
            case .gradual(let result): gradual.append(result)
            case .abrupt(let results): abrupt += results
            }
        }
        abrupt.sort { ($0.replicationFactor, $0.loss) < ($1.replicationFactor, $1.loss) }
        report.results =
            abrupt.map { $0.record(nodes: count) }
            + gradual.map { $0.record(nodes: count, percentPerMinute: rate, hours: hours) }
        report.charts = Self.charts(abrupt: abrupt, gradual: gradual, nodes: count, percentPerMinute: rate)
        report.tables.append(abruptTable(abrupt, repaired: false))
        report.tables.append(abruptTable(abrupt, repaired: true))
        if !gradual.isEmpty {
            report.tables += ContinuousChurn.tables(gradual, percentPerMinute: rate, hours: hours, nodes: count)
        }
        report.finish(stopwatch)
        return report
    }

    /// Success against the fraction lost at once, per r, without and with repair; success over
    /// the hours of continuous churn, per r.
    static func charts(
        abrupt: [AbruptResult], gradual: [ContinuousChurn.Result], nodes: Int, percentPerMinute: Double
    ) -> [LineChart] {
        var loss = LineChart(
            name: "churn-abrupt", title: "Abrupt loss of a fraction of \(nodes) nodes: names resolved",
            xLabel: "fraction of nodes lost at once", yLabel: "success rate")
        loss.yRange = 0...1
        let factors = Array(Set(abrupt.map(\.replicationFactor))).sorted()
        for (number, r) in factors.enumerated() {
            for repaired in [false, true] {
                let points = abrupt.filter { $0.replicationFactor == r && $0.repaired == repaired }
                    .map { (x: Double($0.loss) / 100, y: $0.summary.successRate) }
                loss.add("r = \(r)" + (repaired ? ", repaired" : ""), points, dashed: repaired, colour: number)
            }
        }
        var continuous = LineChart(
            name: "churn-continuous",
            title: String(format: "Continuous churn, %.2g%% of %d nodes per minute: names resolved", percentPerMinute, nodes),
            xLabel: "virtual hours", yLabel: "success rate")
        continuous.yRange = 0...1
        for (number, result) in gradual.enumerated() {
            continuous.add(
                "r = \(result.replicationFactor)", result.points.map { (x: $0.hours, y: $0.summary.successRate) },
                colour: number)
        }
        return gradual.isEmpty ? [loss] : [loss, continuous]
    }

    /// Publishes with factor `r`, then for each loss fraction removes those nodes and resolves,
    /// without and with a re-replication round.
    static func abrupt(
        base: NetworkSnapshot, owners: [Int], r: Int, losses: [Int], parameters: NetworkParameters, seed: UInt64
    ) -> [AbruptResult] {
        var parameters = parameters
        parameters.replicationFactor = r
        let publisher = Simulation(
            snapshot: base, parameters: parameters, seed: seed,
            generator: SimulationGenerator(seed: seed, 0x7075_62, UInt64(r)))
        for (offset, owner) in owners.enumerated() {
            publisher.assignName(simulatedName(of: publisher.nodes[owner].serial), to: owner)
            publisher.schedule(after: .milliseconds(20) * Int64(offset)) { $0.publishOwnRecord(of: owner) }
        }
        publisher.runUntilIdle()
        let published = publisher.snapshot

        var results: [AbruptResult] = []
        for loss in losses {
            // The same nodes leave for every r and both variants, so the rows compare like with like.
            var lossGenerator = SimulationGenerator(seed: seed, 0x6c6f_7373, UInt64(loss))
            let leaving = published.nodes.indices.shuffled(using: &lossGenerator)
                .prefix(published.nodes.count * loss / 100)
                .map { ($0, lossGenerator.chance(parameters.refusedFraction)) }
            for repaired in [false, true] {
                let simulation = Simulation(
                    snapshot: published, parameters: parameters, seed: seed,
                    generator: SimulationGenerator(seed: seed, 0x7265_73, UInt64(r), UInt64(loss), repaired ? 1 : 0))
                for (node, refuses) in leaving { simulation.leave(node, refuses: refuses) }
                var repairMessages = 0.0
                if repaired {
                    let unixNow = simulation.unixNow
                    let storers = simulation.onlineNodes.filter { storer in
                        simulation.storage("count records") { () throws(ResolutionError) in
                            try simulation.nodes[storer].records.count(now: unixNow) > 0
                        }
                    }
                    for (offset, storer) in storers.enumerated() {
                        simulation.schedule(after: .milliseconds(5) * Int64(offset)) {
                            $0.replicateStoredRecords(of: storer)
                        }
                    }
                    simulation.runUntilIdle()
                    repairMessages = Double(simulation.traffic.total) / Double(simulation.onlineCount)
                }
                let survivors = owners.filter { simulation.nodes[$0].isOnline }
                let summary = simulation.resolveNames(of: survivors)
                results.append(
                    AbruptResult(
                        replicationFactor: r, loss: loss, repaired: repaired, summary: summary,
                        repairMessagesPerNode: repairMessages))
            }
        }
        return results
    }

    private func abruptTable(_ results: [AbruptResult], repaired: Bool) -> ReportTable {
        let title =
            repaired
            ? "Abrupt loss, then one re-replication round by every surviving storer, then resolve"
            : "Abrupt loss of f of the nodes, no repair: resolving names of surviving owners from surviving nodes"
        var columns = [
            "r", "lost f", "resolves", "ok", "expected 1-f^r", "hops mean", "hops p99", "requests", "ms mean",
            "ms p99", "early stop",
        ]
        if repaired { columns.append("repair msgs/node") }
        var table = ReportTable(title: title, columns: columns)
        for result in results where result.repaired == repaired {
            let summary = result.summary
            let f = Double(result.loss) / 100
            var row: [ReportTable.Cell] = [
                .integer(result.replicationFactor), .text("\(result.loss)%"), .integer(summary.attempts),
                .ratio(summary.resolvedToHolder, of: summary.attempts),
                .percent(1 - pow(f, Double(result.replicationFactor))),
                .mean(summary.hops, decimals: 2), .percentile(summary.hops, 0.99, decimals: 0),
                .mean(summary.requests, decimals: 1), .mean(summary.milliseconds, decimals: 0),
                .percentile(summary.milliseconds, 0.99, decimals: 0),
                .ratio(summary.stoppedEarly, of: summary.attempts),
            ]
            if repaired { row.append(.number(result.repairMessagesPerNode, decimals: 1)) }
            table.add(row)
        }
        table.notes = [
            "ok: resolves that returned the owner's record. expected: chance that at least one of the r replicas survived.",
            "early stop: resolves that ended on 4 agreeing replicas (impossible when r < 4: those run until the 20 closest answered).",
        ]
        return table
    }
}
