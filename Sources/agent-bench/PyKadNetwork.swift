import Foundation

/// py-libp2p 0.8.1's kad-dht at the same size as ours, through `Tests/Interop/py/kad_peer.py
/// --network P`: P py nodes in one py process, bootstrapped as ours are (node i meets node 0 and one
/// random earlier node and looks itself up; then one self-lookup round, 8 nodes at a time), then its
/// `bench` command: sequential closest-peer lookups of a random node's peer id from another random
/// node.
struct PyKadNetwork {
    let python: String
    let script: String

    /// The venv interpreter and the kad peer under `root`, if both exist.
    static func locate(root: URL) -> PyKadNetwork? {
        let python = root.appendingPathComponent(".venv/bin/python3").path
        let script = root.appendingPathComponent("Tests/Interop/py/kad_peer.py").path
        guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: script)
        else { return nil }
        return PyKadNetwork(python: python, script: script)
    }

    /// Resident bytes of a py process running one node: the interpreter and libraries, which the
    /// per-node growth leaves out.
    func singleNodeResidentBytes() async throws -> Int {
        let ready = try await withProcess(arguments: ["--network", "1"]) { process in
            try await process.event("ready", timeout: .seconds(120))
        }
        guard let rss = ready.number("rss_bytes"), rss > 0 else {
            throw BenchmarkError("kad_peer.py --network 1 reported no rss_bytes: \(ready.line)")
        }
        return Int(rss)
    }

    /// Builds a network of `nodes` and runs `warmup` unreported and `lookups` reported lookups.
    func run(nodes: Int, lookups: Int, warmup: Int, seed: UInt64) async throws -> DHTNetworkFigures {
        // py's lookups take tens of milliseconds at this size; leave ample room before giving up.
        let benchTimeout = max(300, 2 * (lookups + warmup))
        let arguments = ["--network", "\(nodes)", "--seed-base", "\(seed)", "--fanout", "1", "--parallel", "8"]
        return try await withProcess(arguments: arguments) { process in
            let ready = try await process.event("ready", timeout: .seconds(900))
            let cpuBefore = process.cpuSeconds()
            let answer = try await process.command(
                [
                    "id": 1, "cmd": "bench", "lookups": lookups, "seed": Int(truncatingIfNeeded: seed),
                    "warmup": warmup, "timeout": benchTimeout,
                ], timeout: .seconds(benchTimeout + 30))
            let latencies = answer.numbers("latencies_ms").map { $0 / 1e3 }
            guard !latencies.isEmpty, let setup = ready.number("setup_s") else {
                throw BenchmarkError("kad_peer.py bench answered without latencies or setup time: \(answer.line)")
            }
            var figures = DHTNetworkFigures(
                key: "py.\(nodes)", label: "py-libp2p, \(nodes) nodes", nodes: nodes, setupSeconds: setup)
            figures.closest = LookupSummary(
                latencies: latencies, messages: answer.numbers("messages"),
                succeeded: Int(answer.number("found") ?? 0))
            if let before = cpuBefore, let after = process.cpuSeconds() {
                // Warm-up lookups included: py reports no split.
                figures.closest?.cpuSecondsPerLookup = (after - before) / Double(lookups + warmup)
            }
            if let rss = ready.number("rss_bytes"), rss > 0 {
                figures.residentBytes = Int(rss)
                figures.memoryPerNode = rss / Double(nodes)
            }
            figures.connections = answer.number("connections_before").map(Int.init)
            figures.connectionsAfterLookups = answer.number("connections_after").map(Int.init)
            figures.residentAfterLookupsBytes = answer.number("rss_bytes").map(Int.init)
            return figures
        }
    }

    /// Runs `body` with a started kad_peer.py, and stops the process (stdin closed, killed by PID
    /// after 5 s) however `body` ends.
    private func withProcess<Result>(arguments: [String], _ body: (PyPeerProcess) async throws -> Result)
        async throws -> Result
    {
        let process = try PyPeerProcess(python: python, script: script, arguments: arguments)
        do {
            let result = try await body(process)
            await process.stop()
            return result
        } catch {
            await process.stop()
            throw error
        }
    }
}
