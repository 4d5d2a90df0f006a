import ArgumentParser
import NIOCore
import Resolution

/// Options every experiment takes.
struct SimulationOptions: ParsableArguments {
    @Option(help: "Virtual nodes in the network (default 2000; for `lookups`: the largest network size).")
    var nodes: Int?

    @Option(help: "Seed of every random choice; a run is reproduced exactly by its seed.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON document with all tables instead of text.")
    var json = false

    @Option(
        help: "Directory to write the results (<experiment>.csv) and charts (*.svg) into; created if missing.")
    var out: String?

    @Option(help: "One-way message latency in milliseconds, uniform in MIN-MAX.")
    var latency = "5-50"

    @Option(
        help:
            "Fraction of departed nodes (and made-up peers) that refuse connections at once; the others never answer, so requests to them fail at the 10 s hard timeout."
    )
    var refused = 0.2

    @Option(help: "Names published: owners are a random sample of this many nodes.")
    var names = 500

    func validate() throws {
        if let nodes, nodes < 30 { throw ValidationError("--nodes must be at least 30") }
        guard latencyRange != nil else { throw ValidationError("--latency must be MIN-MAX in ms, e.g. 5-50") }
        guard (0...1).contains(refused) else { throw ValidationError("--refused must be between 0 and 1") }
        guard names > 0 else { throw ValidationError("--names must be positive") }
        if let out, out.isEmpty { throw ValidationError("--out must name a directory") }
    }

    var nodeCount: Int { nodes ?? 2000 }

    var latencyRange: ClosedRange<Int64>? {
        let parts = latency.split(separator: "-").compactMap { Int64($0) }
        guard parts.count == 2, parts[0] >= 0, parts[0] <= parts[1] else { return nil }
        return parts[0]...parts[1]
    }

    /// The network parameters these options select, the real node's defaults otherwise.
    var parameters: NetworkParameters {
        var parameters = NetworkParameters()
        parameters.latencyMilliseconds = latencyRange!
        parameters.refusedFraction = refused
        return parameters
    }

    /// Parameters shown at the top of every report.
    var summary: [String: String] {
        [
            "seed": String(seed), "latency_ms": latency, "refused": String(refused), "k": "20", "alpha": "3",
            "request_timeout_s": "3", "hard_timeout_s": "10",
        ]
    }
}

/// The name owned by the node with identity `serial`.
func simulatedName(of serial: UInt64) -> AgentName {
    try! AgentName("node-\(serial)")
}

/// Runs `body` over `items` on the cooperative pool (one simulation per task), results in the
/// order of `items`.
func parallelMap<Item: Sendable, Result: Sendable>(
    _ items: [Item], _ body: @escaping @Sendable (Item) -> Result
) async -> [Result] {
    await withTaskGroup(of: (Int, Result).self) { group in
        for (offset, item) in items.enumerated() {
            group.addTask { (offset, body(item)) }
        }
        var results: [(Int, Result)] = []
        for await result in group { results.append(result) }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }
}

/// A wall-clock stopwatch for the report footer.
struct Stopwatch {
    private let start = ContinuousClock.now

    var seconds: Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
