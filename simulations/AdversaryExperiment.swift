import Foundation
import NIOCore
import Resolution

/// Resolves in a network where a fraction of the nodes are adversaries: they joined like everyone
/// else (and so sit in routing tables), then answer every GET_VALUE with a validly signed rival
/// claim for the name, and every request with junk peers (their fellow adversaries closest to the
/// target, and made-up peers placed near record keys that never answer). Honest owners publish
/// with r = 5 while the adversaries are active; honest nodes then resolve every name.
///
/// Two kinds of rival: each adversary signs with its own key (many small claims, each with one
/// vote), or all sign with one shared key (one operator running many nodes, so its claim collects
/// votes).
struct AdversaryExperiment: Sendable {
    let options: SimulationOptions
    let fractions: [Int]
    let paths: [Int]
    let quorum: Int

    struct Configuration: Sendable {
        let fraction: Int
        let sharedKey: Bool
    }

    struct Result: Sendable {
        let fraction: Int
        let sharedKey: Bool
        let paths: Int
        let summary: ResolveSummary
        /// Share of names whose r replicas (as published) include adversaries, on average.
        let adversaryReplicas: Double

        /// The figures `--json` and `--out` write; a success is a resolve that returned the true
        /// holder's record.
        func record(nodes: Int) -> ResultRecord {
            var record = summary.record(nodes: nodes)
            record["adversary_fraction"] = .number(Double(fraction) / 100)
            record["paths"] = .integer(paths)
            record["rival_keys"] = .text(sharedKey ? "shared" : "own")
            record["adversarial_replica_fraction"] = .number(adversaryReplicas)
            return record
        }
    }

    func run() async -> Report {
        let stopwatch = Stopwatch()
        let options = self.options
        let seed = options.seed
        var parameters = options.parameters
        parameters.valueQuorum = quorum
        let count = options.nodeCount
        var report = Report(experiment: "adversaries", parameters: options.summary)
        report.parameters["nodes"] = String(count)
        report.parameters["names"] = String(min(options.names, count))
        report.parameters["r"] = String(parameters.replicationFactor)
        report.parameters["value_quorum"] = String(quorum)

        let base = Simulation.build(nodes: count, parameters: parameters, seed: seed).snapshot
        var ownerGenerator = SimulationGenerator(seed: seed, 0x6f77_6e65_72)
        let owners = Array(base.nodes.indices.shuffled(using: &ownerGenerator).prefix(options.names)).sorted()
        // Made-up peers about as close to each record key as the closest real nodes.
        let junkSetup = Simulation(
            snapshot: base, parameters: parameters, seed: seed, generator: SimulationGenerator(seed: seed, 0x6a75_6e6b))
        let commonPrefix = max(Int(log2(Double(count))) - 2, 1)
        junkSetup.prepareJunk(
            near: owners.map { KademliaKey(hashing: simulatedName(of: base.nodes[$0].serial).recordKey) }, count: 4,
            commonPrefix: commonPrefix)
        let nearJunk = junkSetup.nearJunk

        let configurations = fractions.flatMap { fraction in
            [false, true].map { Configuration(fraction: fraction, sharedKey: $0) }
        }
        let paths = self.paths
        let settings = parameters
        let results = await parallelMap(configurations) { configuration in
            Self.run(
                configuration, base: base, owners: owners, nearJunk: nearJunk, paths: paths, parameters: settings,
                seed: seed)
        }.flatMap { $0 }
        report.results = results.map { $0.record(nodes: count) }
        report.charts = [Self.chart(results, nodes: count)]

        var table = ReportTable(
            title:
                "Resolves by honest nodes with adversaries in the network (r = \(parameters.replicationFactor), valueQuorum = \(quorum))",
            columns: [
                "adversaries", "rival keys", "paths", "resolves", "true holder", "rival chosen", "not found",
                "early stop", "requests", "hops mean", "ms mean", "ms p99", "replicas adversarial",
            ])
        for result in results {
            let summary = result.summary
            table.add([
                .text("\(result.fraction)%"), .text(result.sharedKey ? "one shared" : "own each"),
                .integer(result.paths),
                .integer(summary.attempts), .ratio(summary.resolvedToHolder, of: summary.attempts),
                .ratio(summary.rivalChosen, of: summary.attempts), .ratio(summary.notFound, of: summary.attempts),
                .ratio(summary.stoppedEarly, of: summary.attempts), .mean(summary.requests, decimals: 1),
                .mean(summary.hops, decimals: 2), .mean(summary.milliseconds, decimals: 0),
                .percentile(summary.milliseconds, 0.99, decimals: 0), .percent(result.adversaryReplicas),
            ])
        }
        table.notes = [
            "true holder: the resolve returned the owner's record. rival chosen: ReplicaSelection picked an adversary's claim.",
            "replicas adversarial: share of the nodes that took the owner's PUT that are adversaries (they store it, then lie).",
        ]
        report.tables.append(table)
        report.finish(stopwatch)
        return report
    }

    /// Success against the adversary fraction: a colour per path count d, solid for adversaries
    /// that each sign with their own key, dashed for one shared key.
    static func chart(_ results: [Result], nodes: Int) -> LineChart {
        var chart = LineChart(
            name: "adversaries", title: "Resolves among \(nodes) nodes with colluding adversaries",
            xLabel: "adversary fraction", yLabel: "true holder's record returned")
        chart.yRange = 0...1
        let pathCounts = Array(Set(results.map(\.paths))).sorted()
        for (number, d) in pathCounts.enumerated() {
            for shared in [false, true] {
                let points = results.filter { $0.paths == d && $0.sharedKey == shared }
                    .map { (x: Double($0.fraction) / 100, y: $0.summary.successRate) }
                guard !points.isEmpty else { continue }
                chart.add("d = \(d), " + (shared ? "one shared key" : "own keys"), points, dashed: shared, colour: number)
            }
        }
        return chart
    }

    static func run(
        _ configuration: Configuration, base: NetworkSnapshot, owners: [Int], nearJunk: [KademliaKey: [KademliaPeer]],
        paths: [Int], parameters: NetworkParameters, seed: UInt64
    ) -> [Result] {
        let label = UInt64(configuration.fraction) << 1 | (configuration.sharedKey ? 1 : 0)
        let simulation = Simulation(
            snapshot: base, parameters: parameters, seed: seed,
            generator: SimulationGenerator(seed: seed, 0x6164_76, label))
        simulation.nearJunk = nearJunk
        // The same adversaries for both kinds of rival; owners are honest.
        var chooser = SimulationGenerator(seed: seed, 0x6164_7665, UInt64(configuration.fraction))
        let ownerSet = Set(owners)
        let adversaries = base.nodes.indices.filter { !ownerSet.contains($0) }.shuffled(using: &chooser)
            .prefix(base.nodes.count * configuration.fraction / 100)
        for adversary in adversaries {
            simulation.setBehaviour(.adversary(sharedKey: configuration.sharedKey), of: adversary)
        }
        for (offset, owner) in owners.enumerated() {
            simulation.assignName(simulatedName(of: simulation.nodes[owner].serial), to: owner)
            simulation.schedule(after: .milliseconds(20) * Int64(offset)) { $0.publishOwnRecord(of: owner) }
        }
        simulation.runUntilIdle()
        let published = simulation.snapshot
        var stored = 0
        var storedByAdversaries = 0
        for node in published.nodes.indices {
            let held = simulation.storage("list records") { () throws(ResolutionError) in
                try published.nodes[node].records.records(now: simulation.unixNow, limit: .max)
            }
            for record in held where record.record.publicKey != published.nodes[node].publicKey {
                stored += 1
                if published.nodes[node].isAdversary { storedByAdversaries += 1 }
            }
        }

        return paths.map { paths in
            var parameters = parameters
            parameters.disjointPaths = paths
            let resolving = Simulation(
                snapshot: published, parameters: parameters, seed: seed,
                generator: SimulationGenerator(seed: seed, 0x7265_736f, label, UInt64(paths)))
            resolving.nearJunk = nearJunk
            let summary = resolving.resolveNames(of: owners) { !published.nodes[$0].isAdversary }
            return Result(
                fraction: configuration.fraction, sharedKey: configuration.sharedKey, paths: paths, summary: summary,
                adversaryReplicas: stored == 0 ? 0 : Double(storedByAdversaries) / Double(stored))
        }
    }
}
