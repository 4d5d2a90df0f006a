import Foundation
import Identity
import NIOCore
import Resolution

/// Resolves in a network where some nodes are adversaries: they answer every GET_VALUE with a
/// validly signed rival claim for the name, and every request with junk peers (their fellow
/// adversaries closest to the target, and made-up peers placed near record keys that never
/// answer). Honest owners publish with r replicas; honest nodes then resolve the names.
///
/// Two placements:
/// - **random**: a fraction of the nodes, chosen at random, joined like everyone else (and so sit
///   in routing tables) before the owners publish. Two kinds of rival: each adversary signs with its
///   own key (many small claims, each with one vote), or all sign with one shared key (one operator
///   running many nodes, so its claim collects votes).
/// - **targeted** (Sybil placement): for each attacked name, m colluders sharing one rival key
///   whose node keys lie closer to the name's point than every honest node. A node's point is
///   SHA-256 of its peer id, so each such node costs key generations until one lands there (about
///   N for N nodes); the experiment generates them for real and counts. They join before the owner
///   publishes (and so take its PUTs) or after (the owner's replicas hold the record).
struct AdversaryExperiment: Sendable {
    let options: SimulationOptions
    let fractions: [Int]
    let paths: [Int]
    let quorum: Int
    /// r values to compare: a record is put to the r closest nodes, and the r closest replicas vote.
    var replicationFactors: [Int] = [5]
    /// Random placement: rival kinds to run (false: each adversary its own key; true: one shared).
    var sharedKeys: [Bool] = [false, true]
    /// Targeted placement: colluders placed next to each attacked name (empty: no targeted runs).
    var targetedNodes: [Int] = []
    /// Targeted placement: how many names are attacked, and resolves per attacked name.
    var targetedNames = 20
    var resolvesPerTargetedName = 10

    struct Configuration: Sendable {
        let fraction: Int
        let sharedKey: Bool
        let replication: Int
    }

    /// When targeted colluders come.
    enum Timing: String, Sendable, CaseIterable {
        /// Before the owner publishes: they are among the closest nodes its PUT goes to.
        case before
        /// After: the owner's replicas hold the record; the colluders are closer still.
        case after
    }

    /// Who resolves in a targeted run.
    enum Resolver: String, Sendable {
        /// Any honest node, with nothing of the name in its store.
        case fresh
        /// An honest node whose store holds the owner's record (a replica): key continuity, as far
        /// as agentd has it (spec/dht.md §8.3: the local record votes and wins ties).
        case holdsRecord = "holds_record"
    }

    struct Result: Sendable {
        let fraction: Double
        let sharedKey: Bool
        let paths: Int
        let replication: Int
        let summary: ResolveSummary
        /// Share of names whose r replicas (as published) include adversaries, on average.
        let adversaryReplicas: Double
        /// Targeted runs: colluders per name, when they came, who resolved, and key generations
        /// per colluder (mean).
        var targeted: (nodes: Int, timing: Timing, resolver: Resolver, keyGenerations: Double)?

        /// The figures `--json` and `--out` write; a success is a resolve that returned the true
        /// holder's record.
        func record(nodes: Int) -> ResultRecord {
            var record = summary.record(nodes: nodes)
            record["adversary_fraction"] = .number(fraction)
            record["paths"] = .integer(paths)
            record["replication"] = .integer(replication)
            record["rival_keys"] = .text(sharedKey ? "shared" : "own")
            record["adversarial_replica_fraction"] = .number(adversaryReplicas)
            record["placement"] = .text(targeted == nil ? "random" : "targeted")
            if let targeted {
                record["targeted_nodes"] = .integer(targeted.nodes)
                record["colluders_came"] = .text(targeted.timing == .before ? "before_publish" : "after_publish")
                record["resolver"] = .text(targeted.resolver.rawValue)
                record["key_generations_per_node"] = .number(targeted.keyGenerations)
            }
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
        report.parameters["r"] = replicationFactors.map(String.init).joined(separator: ",")
        report.parameters["value_quorum"] = String(quorum)
        // Joins up to 5000 nodes (as `lookups --build auto`); larger networks are built directly.
        let build = count <= 5000 ? "joins" : "direct"
        report.parameters["build"] = build

        let base =
            build == "joins"
            ? Simulation.build(nodes: count, parameters: parameters, seed: seed).snapshot
            : Simulation.buildDirect(nodes: count, parameters: parameters, seed: seed)
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
            replicationFactors.flatMap { replication in
                sharedKeys.map { Configuration(fraction: fraction, sharedKey: $0, replication: replication) }
            }
        }
        let paths = self.paths
        let settings = parameters
        var results = await parallelMap(configurations) { configuration in
            Self.run(
                configuration, base: base, owners: owners, nearJunk: nearJunk, paths: paths, parameters: settings,
                seed: seed)
        }.flatMap { $0 }

        if let most = targetedNodes.max() {
            let attacked = Array(owners.prefix(targetedNames))
            let placements = Self.placeColluders(
                near: attacked.map { KademliaKey(hashing: simulatedName(of: base.nodes[$0].serial).recordKey) },
                count: most, in: base, seed: seed)
            let runs = targetedNodes.flatMap { nodes in
                replicationFactors.flatMap { replication in
                    Timing.allCases.map { (nodes: nodes, replication: replication, timing: $0) }
                }
            }
            let perName = resolvesPerTargetedName
            results += await parallelMap(runs) { run in
                Self.runTargeted(
                    colluders: placements.map { Array($0.serials.prefix(run.nodes)) },
                    keyGenerations: placements.map { Array($0.generations.prefix(run.nodes)) },
                    timing: run.timing, replication: run.replication, base: base, owners: attacked,
                    nearJunk: nearJunk, paths: paths, resolvesPerName: perName, parameters: settings, seed: seed)
            }.flatMap { $0 }
        }
        report.results = results.map { $0.record(nodes: count) }
        report.charts = [Self.chart(results.filter { $0.targeted == nil }, nodes: count)]
        report.tables.append(Self.randomTable(results.filter { $0.targeted == nil }, quorum: quorum))
        if !targetedNodes.isEmpty {
            report.tables.append(Self.targetedTable(results.filter { $0.targeted != nil }, nodes: count))
        }
        report.finish(stopwatch)
        return report
    }

    static func randomTable(_ results: [Result], quorum: Int) -> ReportTable {
        var table = ReportTable(
            title: "Resolves by honest nodes with adversaries placed at random (valueQuorum = \(quorum))",
            columns: [
                "adversaries", "rival keys", "r", "paths", "resolves", "true holder", "rival chosen", "not found",
                "early stop", "requests", "hops mean", "ms mean", "ms p99", "replicas adversarial",
            ])
        for result in results {
            let summary = result.summary
            table.add([
                .percent(result.fraction), .text(result.sharedKey ? "one shared" : "own each"),
                .integer(result.replication), .integer(result.paths),
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
        return table
    }

    static func targetedTable(_ results: [Result], nodes: Int) -> ReportTable {
        var table = ReportTable(
            title: "Targeted (Sybil) placement: colluders closer to each attacked name than every honest node",
            columns: [
                "colluders / name", "key generations / colluder", "colluders came", "resolver", "r", "paths",
                "resolves", "true holder", "rival chosen", "requests",
            ])
        for result in results {
            guard let targeted = result.targeted else { continue }
            let summary = result.summary
            table.add([
                .integer(targeted.nodes), .number(targeted.keyGenerations, decimals: 0),
                .text(targeted.timing == .before ? "before publish" : "after publish"),
                .text(targeted.resolver == .fresh ? "fresh" : "holds the record"), .integer(result.replication),
                .integer(result.paths), .integer(summary.attempts),
                .ratio(summary.resolvedToHolder, of: summary.attempts),
                .ratio(summary.rivalChosen, of: summary.attempts), .mean(summary.requests, decimals: 1),
            ])
        }
        table.notes = [
            "key generations / colluder: Ed25519 keys generated until one's point (SHA-256 of its peer id) lay closer to the name's point than every honest node of \(nodes) (expected about N).",
            "holds the record: the resolver is one of the owner's honest replicas; its local record votes and wins ties (spec/dht.md §8.3).",
        ]
        return table
    }

    /// Success against the adversary fraction: a colour per (d, r), solid for adversaries that each
    /// sign with their own key, dashed for one shared key.
    static func chart(_ results: [Result], nodes: Int) -> LineChart {
        var chart = LineChart(
            name: "adversaries", title: "Resolves among \(nodes) nodes with colluding adversaries",
            xLabel: "adversary fraction", yLabel: "true holder's record returned")
        chart.yRange = 0...1
        let pathCounts = Array(Set(results.map(\.paths))).sorted()
        let replications = Array(Set(results.map(\.replication))).sorted()
        var colour = 0
        for r in replications {
            for d in pathCounts {
                for shared in [false, true] {
                    let points = results.filter { $0.paths == d && $0.replication == r && $0.sharedKey == shared }
                        .map { (x: $0.fraction, y: $0.summary.successRate) }
                    guard !points.isEmpty else { continue }
                    let label = replications.count > 1 ? "d = \(d), r = \(r), " : "d = \(d), "
                    chart.add(label + (shared ? "one shared key" : "own keys"), points, dashed: shared, colour: colour)
                }
                colour += 1
            }
        }
        return chart
    }

    static func run(
        _ configuration: Configuration, base: NetworkSnapshot, owners: [Int], nearJunk: [KademliaKey: [KademliaPeer]],
        paths: [Int], parameters: NetworkParameters, seed: UInt64
    ) -> [Result] {
        var parameters = parameters
        parameters.replicationFactor = configuration.replication
        let label = UInt64(configuration.fraction) << 1 | (configuration.sharedKey ? 1 : 0)
        // r = 5 keeps the generator streams of runs before r could be chosen.
        let stream = configuration.replication == 5 ? label : label | UInt64(configuration.replication) << 32
        let simulation = Simulation(
            snapshot: base, parameters: parameters, seed: seed,
            generator: SimulationGenerator(seed: seed, 0x6164_76, stream))
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
        let adversaryReplicas = Self.adversaryReplicaShare(simulation)

        return paths.map { paths in
            var parameters = parameters
            parameters.disjointPaths = paths
            let resolving = Simulation(
                snapshot: published, parameters: parameters, seed: seed,
                generator: SimulationGenerator(seed: seed, 0x7265_736f, stream, UInt64(paths)))
            resolving.nearJunk = nearJunk
            let summary = resolving.resolveNames(of: owners) { !published.nodes[$0].isAdversary }
            return Result(
                fraction: Double(configuration.fraction) / 100, sharedKey: configuration.sharedKey, paths: paths,
                replication: configuration.replication, summary: summary, adversaryReplicas: adversaryReplicas)
        }
    }

    /// Share of the stored copies of others' records that adversaries hold in `simulation`.
    static func adversaryReplicaShare(_ simulation: Simulation) -> Double {
        var stored = 0
        var storedByAdversaries = 0
        for node in simulation.nodes.indices {
            let held = simulation.storage("list records") { () throws(ResolutionError) in
                try simulation.nodes[node].records.records(now: simulation.unixNow, limit: .max)
            }
            for record in held where record.record.publicKey != simulation.nodes[node].publicKey {
                stored += 1
                if simulation.nodes[node].isAdversary { storedByAdversaries += 1 }
            }
        }
        return stored == 0 ? 0 : Double(storedByAdversaries) / Double(stored)
    }

    /// Identities (serials) whose points lie closer to each target than every node of `network`:
    /// keys are generated, from serial `2^40` up, until `count` such keys are found per target.
    /// Returns the serials and how many keys each one took.
    static func placeColluders(
        near targets: [KademliaKey], count: Int, in network: NetworkSnapshot, seed: UInt64
    ) -> [(serials: [UInt64], generations: [Int])] {
        var serial: UInt64 = 1 << 40
        return targets.map { target in
            var bound = target.distance(to: network.nodes[0].peer.key)
            for node in network.nodes where target.distance(to: node.peer.key) < bound {
                bound = target.distance(to: node.peer.key)
            }
            var serials: [UInt64] = []
            var generations: [Int] = []
            var tries = 0
            while serials.count < count {
                tries += 1
                if target.distance(to: Self.key(seed: seed, serial: serial)) < bound {
                    serials.append(serial)
                    generations.append(tries)
                    tries = 0
                }
                serial += 1
            }
            return (serials, generations)
        }
    }

    /// The point of the node with identity `serial`: SHA-256 of its peer id, after one key
    /// generation (the attacker's unit of cost).
    static func key(seed: UInt64, serial: UInt64) -> KademliaKey {
        KademliaKey(peer: PeerID(publicKey: VirtualNode.privateKey(seed: seed, serial: serial).publicKey))
    }

    static func runTargeted(
        colluders: [[UInt64]], keyGenerations: [[Int]], timing: Timing, replication: Int, base: NetworkSnapshot,
        owners: [Int], nearJunk: [KademliaKey: [KademliaPeer]], paths: [Int], resolvesPerName: Int,
        parameters: NetworkParameters, seed: UInt64
    ) -> [Result] {
        var parameters = parameters
        parameters.replicationFactor = replication
        let nodesPerName = colluders.first?.count ?? 0
        let stream = UInt64(nodesPerName) << 8 | UInt64(replication) << 16 | (timing == .before ? 0 : 1)
        let simulation = Simulation(
            snapshot: base, parameters: parameters, seed: seed,
            generator: SimulationGenerator(seed: seed, 0x7379_6269_6c, stream))
        simulation.nearJunk = nearJunk
        let honest = base.nodes.indices.filter { base.nodes[$0].isOnline }
        let arrive = {
            for serial in colluders.joined() {
                let index = simulation.createNode(serial: serial)
                simulation.setBehaviour(.adversary(sharedKey: true), of: index)
                let bootstrap = honest[Int.random(in: 0..<honest.count, using: &simulation.generator)]
                simulation.join(index, through: bootstrap)
            }
            simulation.runUntilIdle()
        }
        if timing == .before { arrive() }
        for (offset, owner) in owners.enumerated() {
            simulation.assignName(simulatedName(of: simulation.nodes[owner].serial), to: owner)
            simulation.schedule(after: .milliseconds(20) * Int64(offset)) { $0.publishOwnRecord(of: owner) }
        }
        simulation.runUntilIdle()
        if timing == .after { arrive() }
        let attacked = simulation.snapshot
        let adversaryReplicas = Self.adversaryReplicaShare(simulation)
        let attackedNames = owners.compactMap { simulation.nodes[$0].ownName }
        let generations = keyGenerations.joined()
        let meanGenerations = generations.isEmpty ? 0 : Double(generations.reduce(0, +)) / Double(generations.count)

        return paths.flatMap { paths in
            [Resolver.fresh, .holdsRecord].map { resolver in
                var parameters = parameters
                parameters.disjointPaths = paths
                let resolving = Simulation(
                    snapshot: attacked, parameters: parameters, seed: seed,
                    generator: SimulationGenerator(
                        seed: seed, 0x7379_6272, stream, UInt64(paths), resolver == .fresh ? 0 : 1))
                resolving.nearJunk = nearJunk
                let summary: ResolveSummary
                switch resolver {
                case .fresh:
                    let repeated = Array(owners.map { Array(repeating: $0, count: resolvesPerName) }.joined())
                    summary = resolving.resolveNames(of: repeated) { index in
                        !attacked.nodes[index].isAdversary
                            && attackedNames.allSatisfy { simulation.storedRecord(at: index, for: $0) == nil }
                    }
                case .holdsRecord:
                    summary = resolving.resolveFromReplicas(of: owners)
                }
                var result = Result(
                    fraction: Double(colluders.joined().count) / Double(attacked.nodes.count), sharedKey: true,
                    paths: paths, replication: replication, summary: summary, adversaryReplicas: adversaryReplicas)
                result.targeted = (nodesPerName, timing, resolver, meanGenerations)
                return result
            }
        }
    }
}

extension Simulation {
    /// Resolves each owner's name from every honest node whose store holds the owner's record
    /// (its replicas), one every `spacing`, and runs until idle.
    func resolveFromReplicas(of owners: [Int], spacing: TimeAmount = .milliseconds(20)) -> ResolveSummary {
        let summary = Collector(ResolveSummary())
        var offset: Int64 = 0
        for owner in owners {
            guard let name = nodes[owner].ownName else { continue }
            let holder = nodes[owner].publicKey
            for resolver in nodes.indices
            where resolver != owner && nodes[resolver].isOnline && !nodes[resolver].isAdversary
                && storedRecord(at: resolver, for: name)?.record.publicKey == holder
            {
                schedule(after: spacing * offset) { simulation in
                    simulation.resolve(name, from: resolver, holder: holder) { _, outcome in
                        summary.value.add(outcome)
                    }
                }
                offset += 1
            }
        }
        runUntilIdle()
        return summary.value
    }
}
