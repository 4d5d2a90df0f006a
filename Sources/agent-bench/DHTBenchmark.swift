import ArgumentParser
import Foundation
import Logging
import Network
import Resolution

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-bench dht`: DHT networks in one process over loopback TCP — ours at N nodes and, side by
/// side, ours and py-libp2p's at P nodes — with lookup latency, messages, hops, success and memory
/// per node (DESIGN §6: "100-node network").
struct DHTBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dht",
        abstract: "Lookups in a 100-node DHT over loopback, and side by side with py-libp2p's kad-dht at equal size.",
        discussion: """
            Our network: N nodes in this process, each a Host on 127.0.0.1 (TCP, Noise, yamux) with an \
            in-memory record store and a server-mode DHT, bootstrapped as the 100-node test does. Every \
            node registers a name; then closest-peer lookups (FIND_NODE for a random node's peer id, \
            from another random node) and resolves without the cache (GET_VALUE), one at a time. \
            py-libp2p: kad_peer.py --network P builds P py nodes in one py process the same way and \
            runs the same closest-peer lookups; ours is built at P nodes too, so the ratios compare \
            equal sizes. Memory per node: RSS growth while building, over the nodes. Build with -c \
            release.
            """
    )

    @Option(help: "Nodes of our large network. Default 100; --quick 30.")
    var nodes: Int?

    @Option(help: "Nodes of the side-by-side networks (ours and py-libp2p's). Default 20; --quick 10.")
    var pyNodes: Int?

    @Option(help: "Lookups measured per series. Default 500; --quick 100.")
    var lookups: Int?

    @Option(
        help:
            "Unreported closest-peer lookups before each series (they dial peers not yet connected). Default 20; --quick 10."
    )
    var warmup: Int?

    @Option(help: "Event loop threads of our networks.")
    var threads = 2

    @Option(help: "Seed of the choice of lookup source and target (and of py's node keys).")
    var seed: UInt64 = 1

    @Option(help: "Repository root holding .venv and Tests/Interop/py/kad_peer.py (default: found from here).")
    var root: String?

    @Flag(help: "Small sizes throughout (smoke test).")
    var quick = false

    @Flag(help: "Skip the py-libp2p comparison.")
    var noPython = false

    @Flag(help: "Print one JSON document instead of the table.")
    var json = false

    mutating func validate() throws {
        guard [nodes, pyNodes].compactMap({ $0 }).allSatisfy({ $0 >= 2 }) else {
            throw ValidationError("networks need at least 2 nodes")
        }
        guard (lookups ?? 1) > 0, (warmup ?? 0) >= 0, threads > 0 else {
            throw ValidationError("--lookups and --threads must be positive, --warmup not negative")
        }
    }

    private struct Settings {
        var nodes: Int
        var pyNodes: Int
        var lookups: Int
        var warmup: Int
    }

    /// The sizes of this run: the options given, else the defaults of the mode.
    private var settings: Settings {
        Settings(
            nodes: nodes ?? (quick ? 30 : 100), pyNodes: pyNodes ?? (quick ? 10 : 20),
            lookups: lookups ?? (quick ? 100 : 500), warmup: warmup ?? (quick ? 10 : 20))
    }

    func run() async throws {
        // The node's allocator settings (agentd applies the same at start).
        MemoryTuning.apply()
        // A py peer that dies must not take us down when we write its next command.
        signal(SIGPIPE, SIG_IGN)
        let settings = self.settings
        let foreignLoad = ForeignLoad()
        var report = DHTReport(machine: .current())
        report.parameters = [
            "nodes": "\(settings.nodes)", "py-nodes": "\(settings.pyNodes)", "lookups": "\(settings.lookups)",
            "warmup": "\(settings.warmup)", "threads": "\(threads)", "seed": "\(seed)", "quick": "\(quick)",
        ]
        var logger = Logger(label: "agent-bench")
        logger.logLevel = .critical
        var random = SplitMix64(seed: seed)

        // The small network first: its memory figure then comes from a fresh process; the large one
        // reuses at most the small one's leftovers.
        let small = try await measureOurs(
            nodes: settings.pyNodes, settings: settings, full: false, into: &report, random: &random, logger: logger)
        let large = try await measureOurs(
            nodes: settings.nodes, settings: settings, full: true, into: &report, random: &random, logger: logger)
        report.networks += [large, small]
        if let py = await measurePython(settings, into: &report) {
            report.networks.append(py)
            report.addRatios(ours: small, py: py)
        }

        report.otherProcessesCores = foreignLoad.cores()
        addNotes(to: &report, settings: settings)
        print(json ? try report.json() : report.table())
    }

    // MARK: Measurements

    /// Builds our network of `nodes`, measures it and shuts it down. `full` adds the registrations,
    /// the resolves and the request breakdown.
    private func measureOurs<Random: RandomNumberGenerator>(
        nodes count: Int, settings: Settings, full: Bool, into report: inout DHTReport, random: inout Random,
        logger: Logger
    ) async throws -> DHTNetworkFigures {
        progress("ours: building \(count) nodes")
        let network = try await DHTBenchNetwork.build(count: count, threads: threads, random: &random, logger: logger)
        var figures = DHTNetworkFigures(
            key: "ours.\(count)", label: "ours, \(count) nodes", nodes: count, setupSeconds: network.setupSeconds)
        if let before = network.residentBefore, let after = network.residentAfter {
            figures.residentBytes = after
            figures.residentBeforeBytes = before
            figures.memoryGrowthPerNode = Double(after - before) / Double(count)
            figures.memoryPerNode = Double(after) / Double(count)
        }
        figures.connections = await network.connectionCount()
        figures.routingTable = network.routingTableSizes()

        if full {
            progress("ours: \(count) nodes register their names")
            let clock = ContinuousClock()
            let start = clock.now
            let (failures, replicas) = await network.registerNames()
            figures.registerSeconds = (clock.now - start).seconds
            if !failures.isEmpty {
                report.note("ours, \(count) nodes: \(failures.count) registrations failed, e.g. \(failures[0])")
            }
            if let fewest = replicas.min(), fewest < DHTBenchNetwork.dhtConfiguration.replicationFactor {
                report.note("ours, \(count) nodes: some names were stored at only \(fewest) replicas")
            }
        }
        progress("ours: \(settings.warmup) + \(settings.lookups) closest-peer lookups on \(count) nodes")
        _ = await network.closestPeerLookups(count: settings.warmup, random: &random)
        var cpuBefore = CPUClock.process()
        figures.closest = LookupSummary(await network.closestPeerLookups(count: settings.lookups, random: &random))
        figures.closest?.cpuSecondsPerLookup = (CPUClock.process() - cpuBefore) / Double(settings.lookups)
        if full {
            progress("ours: \(settings.lookups) resolves on \(count) nodes")
            cpuBefore = CPUClock.process()
            figures.resolve = LookupSummary(await network.resolves(count: settings.lookups, random: &random))
            figures.resolve?.cpuSecondsPerLookup = (CPUClock.process() - cpuBefore) / Double(settings.lookups)
            do {
                report.breakdown = try await network.requestBreakdown(count: 200)
            } catch {
                report.note("request breakdown failed: \(error)")
            }
        }
        figures.connectionsAfterLookups = await network.connectionCount()
        figures.residentAfterLookupsBytes = ProcessMemory.residentBytes()
        await network.shutdown()
        return figures
    }

    /// py-libp2p's network at `pyNodes`, or nil when skipped or failed (said in a note).
    private func measurePython(_ settings: Settings, into report: inout DHTReport) async -> DHTNetworkFigures? {
        guard !noPython else {
            report.note("py-libp2p comparison skipped (--no-python).")
            return nil
        }
        let root = PyPeerProcess.repositoryRoot(self.root)
        guard let py = PyKadNetwork.locate(root: root) else {
            report.note(
                "py-libp2p comparison skipped: no .venv/bin/python3 and Tests/Interop/py/kad_peer.py under "
                    + "\(root.path) (run scripts/install-deps.sh, or pass --root).")
            return nil
        }
        do {
            progress("py-libp2p: one node, for the interpreter's memory")
            let baseline = try await py.singleNodeResidentBytes()
            progress(
                "py-libp2p: building \(settings.pyNodes) nodes, then \(settings.warmup) + \(settings.lookups) "
                    + "closest-peer lookups")
            var figures = try await py.run(
                nodes: settings.pyNodes, lookups: settings.lookups, warmup: settings.warmup, seed: seed)
            figures.residentBeforeBytes = baseline
            if let resident = figures.residentBytes {
                figures.memoryGrowthPerNode = Double(resident - baseline) / Double(settings.pyNodes - 1)
            }
            return figures
        } catch {
            report.note("py-libp2p comparison failed: \(error)")
            return nil
        }
    }

    private func addNotes(to report: inout DHTReport, settings: Settings) {
        report.note(
            "Lookups run one at a time from a random node for another random node; latency percentiles "
                + "include failed lookups. Messages: requests the lookup sent (FIND_NODE, or GET_VALUE for resolves). "
                + "Hops: the longest chain of referrals to a peer of the result (request to a seed = 1).")
        report.note(
            "Ours: α = 3, k = 20; a lookup ends when the k closest peers seen have answered (in a network of "
                + "≤ k + 1 nodes: every other node), and its result holds only peers that answered. py-libp2p 0.8.1: "
                + "rounds of up to α = 10 requests, ends when a round brings no closer peer; its result may hold "
                + "peers it never asked.")
        let oursBefore = report.networks.filter { $0.key.hasPrefix("ours") }.compactMap(\.residentBeforeBytes).min()
        let pyBefore = report.networks.first { $0.key.hasPrefix("py") }?.residentBeforeBytes
        report.note(
            "Memory per node: RSS growth while building (ours: after malloc_trim, from "
                + Self.megabytes(oursBefore) + " before the first network"
                + (pyBefore.map { "; py: P-node process − 1-node process of " + DHTReport.megabytes(Double($0)) } ?? "")
                + "). 'Process RSS / nodes' includes that runtime.")
        for figures in report.networks where figures.key.hasPrefix("ours") {
            guard let closest = figures.closest, let hops = closest.meanHops else { continue }
            let theory = log2(Double(figures.nodes)) / log2(20) + 1
            report.note(
                String(
                    format: "DESIGN §6, %@: hops %.2f (theory log2(N)/log2(k)+1 = %.2f), p50 %@%@.", figures.label,
                    hops, theory, DHTReport.time(closest.p50Seconds),
                    figures.resolve.map {
                        String(format: "; resolves: %.1f%% resolved", $0.successRate * 100)
                    } ?? ""))
        }
        if let others = report.otherProcessesCores, others > 0.2 {
            report.note(
                String(
                    format: "Other processes used %.2f cores meanwhile: latencies are overstated, ours and py's alike.",
                    others))
        }
        if quick { report.note("--quick: small sizes, figures are indicative only.") }
    }

    private static func megabytes(_ bytes: Int?) -> String { bytes.map { DHTReport.megabytes(Double($0)) } ?? "?" }

    private func progress(_ text: String) {
        FileHandle.standardError.write(Data("agent-bench: \(text)\n".utf8))
    }
}
