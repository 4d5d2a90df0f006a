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
    /// The builds each size is measured with; empty: joins up to `largestGrownByJoins` nodes,
    /// direct above. Both: the same sizes (and seeds, so the same keys) built both ways, side by
    /// side in the table and the charts.
    var builds: [Build]

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
        /// Wall-clock seconds the network's build took, and the lookups after it.
        var buildSeconds = 0.0
        var lookupSeconds = 0.0

        /// log2(N)/log2(k)+1 (DESIGN §6).
        func theory(bucketSize k: Int) -> Double { log2(Double(nodes)) / log2(Double(k)) + 1 }

        /// The figures `--json` and `--out` write; a success is a lookup that found exactly the
        /// true k closest.
        func record(bucketSize k: Int) -> ResultRecord {
            var record = ResultRecord(
                nodes: nodes, successes: exact, attempts: hopsSeen.count, hops: hopsSeen, messages: requests)
            record["build"] = .text(build.rawValue)
            record["hops_theory"] = .number(theory(bucketSize: k))
            record["hops_p99"] = .number(hopsSeen.percentile(0.99))
            record["messages_p99"] = .number(requests.percentile(0.99))
            record["milliseconds_mean"] = .number(milliseconds.mean)
            record["milliseconds_p99"] = .number(milliseconds.percentile(0.99))
            record["recall"] = .number(recall.mean)
            record["table_entries_mean"] = .number(tableSize.mean)
            record["table_bytes_per_node"] = .number(tableBytes.mean)
            record["rss_bytes_per_node"] = .number(residentBytesPerNode ?? .nan)
            record["build_messages_per_node"] = .number(buildMessagesPerNode)
            record["build_seconds"] = .number(buildSeconds)
            record["build_microseconds_per_node"] = .number(buildSeconds * 1e6 / Double(nodes))
            record["lookup_seconds"] = .number(lookupSeconds)
            return record
        }
    }

    func run() -> Report {
        let stopwatch = Stopwatch()
        var report = Report(experiment: "lookups", parameters: options.summary)
        report.parameters["lookups_per_size"] = String(lookups)
        report.parameters["build"] =
            builds.isEmpty
            ? "joins up to \(Self.largestGrownByJoins) nodes, direct above" : builds.map(\.rawValue).joined(separator: ",")
        let options = self.options
        let lookups = self.lookups
        // One size at a time, so that each one's resident memory per node is its own (and the time
        // of a size is not shared with another's): the largest size dominates the run anyway.
        var results: [Result] = []
        for size in sizes {
            for build in builds.isEmpty ? [size <= Self.largestGrownByJoins ? .joins : .direct] : builds {
                results.append(Self.measure(nodes: size, lookups: lookups, options: options, build: build))
            }
        }

        var table = ReportTable(
            title: "FIND_NODE lookups from random nodes to random keys and node keys",
            columns: [
                "N", "build", "theory", "hops mean", "hops p50", "hops p99", "requests mean", "requests p99", "ms mean",
                "ms p99", "exact k closest", "recall", "table size", "join msgs/node", "table B/node",
                "RSS B/node",
            ])
        let k = options.parameters.bucketSize
        report.results = results.map { $0.record(bucketSize: k) }
        report.charts = Self.charts(results, bucketSize: k)
        for result in results {
            let theory = result.theory(bucketSize: k)
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
            "RSS B/node: resident memory the built network added / N (the whole node: table, store, identity, index),",
            "  measured around the build after returning freed memory to the system (malloc_trim); exact for a run of one",
            "  size (--sizes N): with several, a later size reuses pages an earlier one freed and reads low.",
        ]
        report.tables.append(table)
        report.finish(stopwatch)
        return report
    }

    /// Hops against N beside the theory, memory per node against N, time against N; a series per
    /// build when sizes were built both ways.
    static func charts(_ results: [Result], bucketSize k: Int) -> [LineChart] {
        var hops = LineChart(
            name: "lookups-hops", title: "FIND_NODE lookups: hops against network size (k = \(k))",
            xLabel: "nodes N", yLabel: "hops")
        var memory = LineChart(
            name: "lookups-memory", title: "Memory per virtual node against network size", xLabel: "nodes N",
            yLabel: "bytes per node")
        var time = LineChart(
            name: "lookups-time", title: "Wall-clock time against network size", xLabel: "nodes N",
            yLabel: "seconds")
        hops.xScale = .logarithmic
        memory.xScale = .logarithmic
        time.xScale = .logarithmic
        time.yScale = .logarithmic
        hops.yRange = 0...1
        memory.yRange = 0...8192
        let builds = Build.allCases.filter { build in results.contains { $0.build == build } }
        for (number, build) in builds.enumerated() {
            let part = results.filter { $0.build == build }
            let suffix = builds.count > 1 ? " (\(build.rawValue))" : ""
            func series(_ value: (Result) -> Double?) -> [(x: Double, y: Double)] {
                part.compactMap { result in value(result).map { (Double(result.nodes), $0) } }
            }
            let colour = 2 * number
            hops.add("mean" + suffix, series { $0.hopsSeen.mean }, colour: colour)
            hops.add("p99" + suffix, series { $0.hopsSeen.percentile(0.99) }, dashed: true, colour: colour)
            // Resident growth is the network's own only in a run of one size: with several, the
            // allocator reuses pages an earlier size freed (even after malloc_trim), so later sizes
            // would read low. The table's bytes are exact in every run.
            if results.count == 1 {
                memory.add("RSS growth" + suffix, series { $0.residentBytesPerNode }, colour: colour)
            }
            memory.add("routing table" + suffix, series { $0.tableBytes.mean }, dashed: true, colour: colour)
            time.add("build" + suffix, series { $0.buildSeconds }, colour: colour)
            time.add("lookups" + suffix, series { $0.lookupSeconds }, dashed: true, colour: colour)
        }
        let sizes = results.map { Double($0.nodes) }
        hops.add(
            "log2(N)/log2(k)+1", sizes.map { ($0, log2($0) / log2(Double(k)) + 1) }, dashed: true, colour: 7)
        memory.add("goal: 8 KiB", sizes.map { ($0, 8192) }, dashed: true, colour: 7)
        return [hops, memory, time]
    }

    static func measure(nodes count: Int, lookups: Int, options: SimulationOptions, build: Build) -> Result {
        ProcessMemory.releaseFreeMemory()
        let residentBefore = ProcessMemory.residentBytes
        let buildStopwatch = Stopwatch()
        let (base, buildTraffic) =
            switch build {
            case .joins: Simulation.build(nodes: count, parameters: options.parameters, seed: options.seed)
            case .direct:
                (Simulation.buildDirect(nodes: count, parameters: options.parameters, seed: options.seed), TrafficCounters())
            }
        var result = Result(nodes: count, build: build)
        result.buildSeconds = buildStopwatch.seconds
        // What the build freed (the sorted keys, its bookkeeping) is not the network's.
        ProcessMemory.releaseFreeMemory()
        let lookupStopwatch = Stopwatch()
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
            // FIND_NODE keys, as agentd sends them: random bytes, or a node's peer id (whose hash
            // is its key).
            let key =
                number % 2 == 0
                ? simulation.generator.bytes(32)
                : base.nodes[Int.random(in: 0..<count, using: &simulation.generator)].peer.id.multihash.bytes
            let target = KademliaKey(hashing: key)
            let truth = Set(sorted.closest(to: target, count: k, excluding: origin).map { base.nodes[$0].peer.key })
            simulation.schedule(after: .milliseconds(50) * Int64(number)) { simulation in
                simulation.findClosest(from: origin, key: key) { simulation, result in
                    let statistics = result.statistics
                    collected.value.hopsSeen.add(statistics.hops)
                    collected.value.requests.add(statistics.requests)
                    collected.value.milliseconds.add(Double(statistics.duration.nanoseconds) / 1e6)
                    let found = Set(result.closest.map { simulation.keySpace.keys[$0.index] })
                    if found == truth { collected.value.exact += 1 }
                    collected.value.recall.add(Double(found.intersection(truth).count) / Double(truth.count))
                }
            }
        }
        simulation.runUntilIdle()
        collected.value.lookupSeconds = lookupStopwatch.seconds
        return collected.value
    }
}
