import Foundation

/// Latency, messages, hops and success of a series of lookups.
struct LookupSummary: Codable, Sendable {
    var lookups: Int
    var succeeded: Int
    var successRate: Double
    /// Latency percentiles over all lookups, failed ones included (as py's bench counts them).
    var p50Seconds: Double
    var p90Seconds: Double
    var p99Seconds: Double
    var meanSeconds: Double
    /// Requests (FIND_NODE or GET_VALUE) sent per lookup.
    var meanMessages: Double
    /// Ours only: the lookup's hop count (`LookupStatistics.hops`).
    var meanHops: Double?
    var maximumHops: Int?
    /// Ours only: connections the source host opened per lookup, and the lookups that opened any.
    var newConnectionsPerLookup: Double?
    var dialingLookups: Int?
    /// Ours only: median latency of the lookups that opened no connection.
    var p50WithoutDialsSeconds: Double?
    /// CPU time the whole process (every node, client and server side) used per lookup.
    var cpuSecondsPerLookup: Double?

    init(_ samples: [DHTBenchNetwork.Sample]) {
        precondition(!samples.isEmpty, "a summary of no lookups")
        let latencies = samples.map(\.seconds)
        self.init(
            latencies: latencies, messages: samples.map { Double($0.requests) },
            succeeded: samples.filter(\.succeeded).count)
        let hops = samples.filter(\.succeeded).map(\.hops)
        meanHops = hops.isEmpty ? nil : Double(hops.reduce(0, +)) / Double(hops.count)
        maximumHops = hops.max()
        newConnectionsPerLookup = Double(samples.map(\.newConnections).reduce(0, +)) / Double(samples.count)
        dialingLookups = samples.filter { $0.newConnections > 0 }.count
        let withoutDials = samples.filter { $0.newConnections == 0 }.map(\.seconds)
        p50WithoutDialsSeconds = withoutDials.isEmpty ? nil : median(withoutDials)
    }

    init(latencies: [Double], messages: [Double], succeeded: Int) {
        precondition(!latencies.isEmpty, "a summary of no lookups")
        lookups = latencies.count
        self.succeeded = succeeded
        successRate = Double(succeeded) / Double(latencies.count)
        p50Seconds = percentile(latencies, 0.5)
        p90Seconds = percentile(latencies, 0.9)
        p99Seconds = percentile(latencies, 0.99)
        meanSeconds = latencies.reduce(0, +) / Double(latencies.count)
        meanMessages = messages.isEmpty ? 0 : messages.reduce(0, +) / Double(messages.count)
    }
}

struct RoutingTableSizes: Codable, Sendable {
    var minimum: Int
    var mean: Double
    var maximum: Int
}

/// What one kind of kad exchange costs on an open connection (`requestBreakdown`): median
/// latency, and per exchange the CPU, system calls and context switches of the whole process (both
/// sides).
struct RequestCost: Codable, Sendable {
    var label: String
    var medianSeconds: Double
    var cpuSeconds: Double
    var writeCalls: Double
    var readCalls: Double
    var contextSwitches: Double

    init(label: String, medianSeconds: Double, _ counters: ProcessCounters) {
        self.label = label
        self.medianSeconds = medianSeconds
        cpuSeconds = counters.cpuSeconds
        writeCalls = counters.writeCalls
        readCalls = counters.readCalls
        contextSwitches = counters.contextSwitches
    }
}

struct RequestBreakdown: Codable, Sendable {
    /// Exchanges measured per row.
    var samples: Int
    var rows: [RequestCost]
}

/// The figures of one DHT network: ours or py-libp2p's, at one size.
struct DHTNetworkFigures: Codable, Sendable {
    /// `ours.<n>` or `py.<n>`.
    let key: String
    let label: String
    let nodes: Int
    /// Starting the nodes and bootstrapping them, refresh round included.
    var setupSeconds: Double
    /// Ours: every node registering its name, 8 at a time.
    var registerSeconds: Double?
    var closest: LookupSummary?
    var resolve: LookupSummary?
    /// Resident memory growth per node: ours (RSS after setup − RSS before) / nodes; py
    /// (RSS of the P-node process − RSS of a 1-node process) / (P − 1).
    var memoryGrowthPerNode: Double?
    /// Process RSS after setup / nodes (includes the runtime: Swift and NIO, or the py interpreter).
    var memoryPerNode: Double?
    /// Process RSS after setup.
    var residentBytes: Int?
    /// Ours: process RSS before the first node started; py: RSS of a one-node py process.
    var residentBeforeBytes: Int?
    /// Process RSS after the lookups (which open connections: see `connectionsAfterLookups`).
    var residentAfterLookupsBytes: Int?
    /// Established connections after setup and after the lookups, both ends counted.
    var connections: Int?
    var connectionsAfterLookups: Int?
    var routingTable: RoutingTableSizes?
}

/// The figures of one `agent-bench dht` run, printed as a table or as one JSON document.
struct DHTReport: Codable, Sendable {
    let machine: BenchmarkReport.Machine
    /// Cores other processes kept busy on average while the run lasted (Linux only).
    var otherProcessesCores: Double?
    var parameters: [String: String] = [:]
    var networks: [DHTNetworkFigures] = []
    /// Ours over py-libp2p at the same size: below 1, ours is ahead.
    var ratios: [Figure.Ratio] = []
    var breakdown: RequestBreakdown?
    private(set) var notes: [String] = []

    init(machine: BenchmarkReport.Machine) {
        self.machine = machine
    }

    mutating func note(_ text: String) { notes.append(text) }

    /// ours÷py of each comparable figure of `ours` and `py` (same size).
    mutating func addRatios(ours: DHTNetworkFigures, py: DHTNetworkFigures) {
        func ratio(_ name: String, _ value: (DHTNetworkFigures) -> Double?) {
            guard let mine = value(ours), let theirs = value(py), theirs > 0 else { return }
            ratios.append(Figure.Ratio(name: name, value: mine / theirs))
        }
        ratio("setup") { $0.setupSeconds }
        ratio("latency.p50") { $0.closest?.p50Seconds }
        ratio("latency.p99") { $0.closest?.p99Seconds }
        ratio("messages") { $0.closest?.meanMessages }
        ratio("cpu-per-lookup") { $0.closest?.cpuSecondsPerLookup }
        ratio("memory.growth-per-node") { $0.memoryGrowthPerNode }
        ratio("memory.rss-per-node") { $0.memoryPerNode }
    }

    // MARK: Output

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func table() -> String {
        var lines = machine.header(benchmark: "dht", otherProcessesCores: otherProcessesCores, parameters: parameters)

        let rows: [(String, (DHTNetworkFigures) -> String?)] = [
            ("setup (start + bootstrap)", { Self.time($0.setupSeconds) }),
            ("register every name", { $0.registerSeconds.map(Self.time) }),
            ("closest-peer lookup p50", { $0.closest.map { Self.time($0.p50Seconds) } }),
            ("  p90 / p99", { $0.closest.map { Self.time($0.p90Seconds) + " / " + Self.time($0.p99Seconds) } }),
            ("  p50 of lookups without new dials", { $0.closest?.p50WithoutDialsSeconds.map(Self.time) }),
            ("  messages per lookup (mean)", { $0.closest.map { String(format: "%.1f", $0.meanMessages) } }),
            ("  hops (mean / max)", { $0.closest.flatMap(Self.hops) }),
            ("  target among the k closest", { $0.closest.map(Self.success) }),
            (
                "  new connections per lookup",
                { $0.closest?.newConnectionsPerLookup.map { String(format: "%.2f", $0) } }
            ),
            ("  CPU per lookup (all nodes)", { $0.closest?.cpuSecondsPerLookup.map(Self.time) }),
            ("resolve, no cache, p50", { $0.resolve.map { Self.time($0.p50Seconds) } }),
            ("  p90 / p99", { $0.resolve.map { Self.time($0.p90Seconds) + " / " + Self.time($0.p99Seconds) } }),
            ("  messages per resolve (mean)", { $0.resolve.map { String(format: "%.1f", $0.meanMessages) } }),
            ("  hops (mean / max)", { $0.resolve.flatMap(Self.hops) }),
            ("  resolved to the owner's key", { $0.resolve.map(Self.success) }),
            ("  CPU per resolve (all nodes)", { $0.resolve?.cpuSecondsPerLookup.map(Self.time) }),
            ("memory per node: RSS growth", { $0.memoryGrowthPerNode.map(Self.megabytes) }),
            ("memory per node: process RSS / nodes", { $0.memoryPerNode.map(Self.megabytes) }),
            (
                "  the same after the lookups",
                { figures in
                    figures.residentAfterLookupsBytes.map { Self.megabytes(Double($0) / Double(figures.nodes)) }
                }
            ),
            (
                "connections after setup / lookups",
                { figures in
                    figures.connections.map { "\($0) / " + (figures.connectionsAfterLookups.map(String.init) ?? "?") }
                }
            ),
            (
                "routing table min / mean / max",
                { table in
                    table.routingTable.map { String(format: "%d / %.1f / %d", $0.minimum, $0.mean, $0.maximum) }
                }
            ),
        ]
        let table = rows.compactMap { label, cell -> (String, [String])? in
            let cells = networks.map { cell($0) }
            guard cells.contains(where: { $0 != nil }) else { return nil }
            return (label, cells.map { $0 ?? "–" })
        }
        let labelWidth = table.map(\.0.count).max() ?? 0
        let columnWidth = (table.flatMap(\.1) + networks.map(\.label)).map(\.count).max().map { $0 + 3 } ?? 0
        lines.append(pad("", labelWidth) + networks.map { leftPad($0.label, columnWidth) }.joined())
        for (label, cells) in table {
            lines.append(pad(label, labelWidth) + cells.map { leftPad($0, columnWidth) }.joined())
        }
        if !ratios.isEmpty {
            lines.append("")
            lines.append(
                "ours ÷ py-libp2p at equal size (below 1: ours ahead): "
                    + ratios.map { $0.name + " " + String(format: "%.3g", $0.value) }.joined(separator: "  "))
        }
        if let breakdown {
            lines.append("")
            lines.append(
                "where a kad request's time goes (ours, node 0 → connected peers, \(breakdown.samples) each; "
                    + "CPU, syscalls, switches: whole process, both sides, per exchange):")
            let width = breakdown.rows.map(\.label.count).max() ?? 0
            lines.append(
                pad("", width) + leftPad("median", 10) + leftPad("CPU", 10) + leftPad("writes", 8) + leftPad("reads", 8)
                    + leftPad("switches", 10))
            for row in breakdown.rows {
                lines.append(
                    pad(row.label, width) + leftPad(Self.time(row.medianSeconds), 10)
                        + leftPad(Self.time(row.cpuSeconds), 10) + leftPad(String(format: "%.1f", row.writeCalls), 8)
                        + leftPad(String(format: "%.1f", row.readCalls), 8)
                        + leftPad(String(format: "%.1f", row.contextSwitches), 10))
            }
        }
        if !notes.isEmpty {
            lines.append("")
            lines += notes.map { "- " + $0 }
        }
        return lines.joined(separator: "\n")
    }

    static func time(_ seconds: Double) -> String {
        if seconds >= 10 { return String(format: "%.1f s", seconds) }
        if seconds >= 1 { return String(format: "%.2f s", seconds) }
        if seconds >= 1e-3 { return String(format: "%.2f ms", seconds * 1e3) }
        return String(format: "%.0f µs", seconds * 1e6)
    }

    static func megabytes(_ bytes: Double) -> String { String(format: "%.2f MB", bytes / 1e6) }

    private static func hops(_ summary: LookupSummary) -> String? {
        guard let mean = summary.meanHops, let maximum = summary.maximumHops else { return nil }
        return String(format: "%.2f / %d", mean, maximum)
    }

    private static func success(_ summary: LookupSummary) -> String {
        String(format: "%d/%d (%.1f%%)", summary.succeeded, summary.lookups, summary.successRate * 100)
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private func leftPad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
