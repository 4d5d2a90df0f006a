import Foundation
import NIOCore
import Resolution

/// Hops and messages of FIND_NODE lookups against the network size, next to the theory of
/// DESIGN §6 (log2(N)/log2(k)+1), in networks grown by joins or built directly.
struct LookupsExperiment: Sendable {
    /// How the network under test comes to be.
    enum Build: String, Sendable, CaseIterable {
        /// Grown by joins, one a virtual second, with bucket refresh (`Simulation.build`).
        case joins
        /// Tables filled from the sorted keyspace as joins leave them (`Simulation.buildDirect`).
        case direct
    }

    /// Joins up to this many nodes when no build is chosen, direct above (growing 20,000 nodes by
    /// joins took 390 s; growth time rises faster than N, since every node refreshes hourly).
    static let largestGrownByJoins = 5000

    let options: SimulationOptions
    let sizes: [Int]
    let lookups: Int
    /// nil: joins up to `largestGrownByJoins` nodes, direct above.
    var build: Build?

    struct Result: Sendable {
        let nodes: Int
        let build: Build
        var hopsSeen = Distribution()
        var requests = Distribution()
        var milliseconds = Distribution()
        /// Lookups whose result was exactly the k closest nodes of the network.
        var exact = 0
        /// Mean share of the true k closest that the result held.
        var recall = Distribution()
        var tableSize = Distribution()
        var buildMessagesPerNode = 0.0
        /// Heap bytes of each node's routing-table buckets (`KBucketsTable.footprint`).
        var tableBytes = Distribution()
        /// Resident memory the built network added, per node (nil where it cannot be read).
        var residentBytesPerNode: Double?
    }

    func run() async -> Report {
        let stopwatch = Stopwatch()
        var report = Report(experiment: "lookups", parameters: options.summary)
        report.parameters["lookups_per_size"] = String(lookups)
        report.parameters["build"] = build?.rawValue ?? "joins up to \(Self.largestGrownByJoins) nodes, direct above"
        let options = self.options
        let lookups = self.lookups
        let build = self.build
        let results = await parallelMap(sizes) { size in
            Self.measure(
                nodes: size, lookups: lookups, options: options,
                build: build ?? (size <= Self.largestGrownByJoins ? .joins : .direct))
        }

        var table = ReportTable(
            title: "FIND_NODE lookups from random nodes to random keys and node keys",
            columns: [
                "N", "build", "theory", "hops mean", "hops p50", "hops p99", "requests mean", "requests p99", "ms mean",
                "ms p99", "exact k closest", "recall", "table size", "join msgs/node", "table B/node",
                "RSS B/node",
            ])
        for result in results {
            let theory = log2(Double(result.nodes)) / log2(20) + 1
            table.add([
                .integer(result.nodes), .text(result.build.rawValue), .number(theory, decimals: 2), .mean(result.hopsSeen, decimals: 2),
                .percentile(result.hopsSeen, 0.5, decimals: 0), .percentile(result.hopsSeen, 0.99, decimals: 0),
                .mean(result.requests, decimals: 1), .percentile(result.requests, 0.99, decimals: 0),
                .mean(result.milliseconds, decimals: 0), .percentile(result.milliseconds, 0.99, decimals: 0),
                .ratio(result.exact, of: result.hopsSeen.count), .percent(result.recall.mean),
                .mean(result.tableSize, decimals: 0), .number(result.buildMessagesPerNode, decimals: 0),
                .mean(result.tableBytes, decimals: 0),
                result.residentBytesPerNode.map { .number($0, decimals: 0) } ?? .missing,
            ])
        }
        table.notes = [
            "theory: log2(N)/log2(k)+1 with k = 20 (DESIGN §6). hops: LookupStatistics.hops, the longest chain of",
            "referrals to a peer in the result. exact: result = the true 20 closest (brute force); recall: share of them found.",
            "join msgs/node: messages per node while the network grew (self-lookup, bucket refresh, pings).",
            "table B/node: heap bytes of a node's buckets (entries, replacement caches, bucket records; peers are shared).",
            "RSS B/node: resident memory the built network added / N (the whole node: table, store, identity, index);",
            "  measured around the build, so exact only when one size runs (--sizes N): sizes run in parallel.",
        ]
        report.tables.append(table)
        report.finish(stopwatch)
        return report
    }

    static func measure(nodes count: Int, lookups: Int, options: SimulationOptions, build: Build) -> Result {
        let residentBefore = ProcessMemory.residentBytes
        let (base, buildTraffic) =
            switch build {
            case .joins: Simulation.build(nodes: count, parameters: options.parameters, seed: options.seed)
            case .direct:
                (Simulation.buildDirect(nodes: count, parameters: options.parameters, seed: options.seed), TrafficCounters())
            }
        var result = Result(nodes: count, build: build)
        if let before = residentBefore, let after = ProcessMemory.residentBytes {
            result.residentBytesPerNode = Double(after - before) / Double(count)
        }
        result.buildMessagesPerNode = Double(buildTraffic.total) / Double(count)
        for node in base.nodes {
            result.tableSize.add(node.table.count)
            result.tableBytes.add(node.table.footprint.bytes)
        }

        let simulation = Simulation(
            snapshot: base, parameters: options.parameters, seed: options.seed,
            generator: SimulationGenerator(seed: options.seed, 0x6c6f_6f6b, UInt64(count)))
        let collected = Collector(result)
        let k = options.parameters.bucketSize
        let sorted = SortedKeys(base.keySpace.keys)
        for number in 0..<lookups {
            let origin = Int.random(in: 0..<count, using: &simulation.generator)
            let target =
                number % 2 == 0
                ? KademliaKey.random(using: &simulation.generator)
                : base.nodes[Int.random(in: 0..<count, using: &simulation.generator)].peer.key
            let truth = Set(sorted.closest(to: target, count: k, excluding: origin).map { base.nodes[$0].peer.key })
            simulation.schedule(after: .milliseconds(50) * Int64(number)) { simulation in
                simulation.startLookup(from: origin, target: target, request: .findNode) { _, outcome in
                    let statistics = outcome.result.statistics
                    collected.value.hopsSeen.add(statistics.hops)
                    collected.value.requests.add(statistics.requests)
                    collected.value.milliseconds.add(Double(statistics.duration.nanoseconds) / 1e6)
                    let found = Set(outcome.result.closest.map(\.key))
                    if found == truth { collected.value.exact += 1 }
                    collected.value.recall.add(Double(found.intersection(truth).count) / Double(truth.count))
                }
            }
        }
        simulation.runUntilIdle()
        return collected.value
    }
}
