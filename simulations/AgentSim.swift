import ArgumentParser

/// `agent-sim`: a discrete-event simulator that runs the real sans-I/O Kademlia code (routing
/// table, lookup, record selection, replica selection) on thousands of virtual nodes, with a
/// virtual clock, message latency, timeouts, churn and adversaries. Build with `-c release`.
@main
struct AgentSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-sim",
        abstract: "Simulates the .agent DHT with thousands of virtual nodes on a virtual clock.",
        discussion: """
            Every node runs agentd's own KademliaBehaviour: its routing table, FIND_NODE and GET_VALUE \
            queries, answers to FIND_NODE, GET_VALUE and PUT_VALUE, and its MemoryRecordStore; records \
            are real signed records chosen with RecordSelection and ReplicaSelection. Networks grow by joins (a \
            self-lookup through a bootstrap node, then bucket refresh). Messages take 5-50 ms one way; \
            a request holds its lookup slot 3 s; departed nodes never answer (10 s hard timeout) or \
            refuse at once (--refused). Output is deterministic for a given --seed.
            """,
        subcommands: [ChurnCommand.self, LookupsCommand.self, AdversariesCommand.self]
    )
}

struct ChurnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "churn",
        abstract: "What replication factor does churn need? Abrupt loss, repair, continuous churn.")

    @OptionGroup var options: SimulationOptions

    @Option(help: "Replication factors r for the abrupt-loss tables.")
    var replication = "1,2,3,5,8"

    @Option(help: "Percentages of nodes that leave at once.")
    var loss = "10,30,50"

    @Option(help: "Replication factors for continuous churn.")
    var gradualReplication = "3,5,8"

    @Option(help: "Continuous churn: percent of the nodes that leave (and as many that join) per virtual minute.")
    var churnRate = 1.0

    @Option(help: "Continuous churn: virtual hours simulated (0 skips it).")
    var hours = 3.0

    @Option(help: "Continuous churn: names resolved per probe (every 30 virtual minutes).")
    var probes = 100

    @Option(
        help:
            "How the network is made: joins (grown one join a virtual second, with bucket refresh) or direct (tables filled from the sorted keyspace as joins in node order leave them; for large N)."
    )
    var build = "joins"

    func validate() throws {
        guard !(try list(replication)).isEmpty, !(try list(loss)).isEmpty else {
            throw ValidationError("--replication and --loss need at least one value")
        }
        guard try list(loss).allSatisfy({ (1...99).contains($0) }) else {
            throw ValidationError("--loss values are percentages from 1 to 99")
        }
        guard LookupsExperiment.Build(rawValue: build) != nil else {
            throw ValidationError("--build must be joins or direct")
        }
        guard churnRate > 0, churnRate < 50 else { throw ValidationError("--churn-rate must be in (0, 50)") }
        // Routing-table entries store virtual time in 32-bit milliseconds (49.7 days): room for a
        // month of churn plus the network's build.
        guard hours >= 0, hours <= 720 else { throw ValidationError("--hours must be in [0, 720]") }
    }

    func run() async throws {
        let experiment = ChurnExperiment(
            options: options, replicationFactors: try list(replication), losses: try list(loss),
            gradualFactors: try list(gradualReplication), churnPercentPerMinute: churnRate, hours: hours,
            probes: probes, build: LookupsExperiment.Build(rawValue: build)!)
        try await experiment.run().output(options)
    }
}

struct LookupsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lookups", abstract: "Hops and messages of lookups against network size, with log2(N)/log2(k)+1.")

    @OptionGroup var options: SimulationOptions

    @Option(help: "Network sizes (with --nodes: the sizes below it, then --nodes).")
    var sizes = "100,500,1000,2000,5000"

    @Option(help: "Lookups per network size.")
    var lookups = 500

    @Option(
        help:
            "How networks are made: joins (grown one join a virtual second, with bucket refresh), direct (tables filled from the sorted keyspace as joins in node order leave them), both (each size both ways, side by side in the table and charts), or auto (joins up to 5000 nodes, direct above)."
    )
    var build = "auto"

    /// The builds `--build` names; empty for auto.
    var builds: [LookupsExperiment.Build] {
        switch build {
        case "both": LookupsExperiment.Build.allCases
        case "auto": []
        default: LookupsExperiment.Build(rawValue: build).map { [$0] } ?? []
        }
    }

    func validate() throws {
        guard ["auto", "both"].contains(build) || LookupsExperiment.Build(rawValue: build) != nil else {
            throw ValidationError("--build must be joins, direct, both or auto")
        }
        guard lookups > 0 else { throw ValidationError("--lookups must be positive") }
    }

    func run() async throws {
        var sizes = try list(sizes)
        if let nodes = options.nodes { sizes = sizes.filter { $0 < nodes } + [nodes] }
        let experiment = LookupsExperiment(
            options: options, sizes: sizes, lookups: lookups, builds: builds)
        try experiment.run().output(options)
    }
}

struct AdversariesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adversaries",
        abstract: "Resolves when a fraction of nodes answers with rival claims and junk peers.")

    @OptionGroup var options: SimulationOptions

    @Option(help: "Percentages of adversarial nodes (0-90), placed at random.")
    var fractions = "5,10,20"

    @Option(help: "Disjoint lookup paths to compare.")
    var paths = "1,3"

    @Option(
        help:
            "Value quorum: a resolve stops early once this many of the closest peers it knows answered, all under one key."
    )
    var quorum = 4

    @Option(help: "Replication factors r to compare: a record is put to the r closest nodes; the r closest replicas vote.")
    var replication = "5"

    @Option(help: "Rival keys of randomly placed adversaries: own (each its own), shared (one for all) or both.")
    var rivalKeys = "both"

    @Option(
        help:
            "Targeted (Sybil) placement: colluders per attacked name, placed closer to its point than every honest node (comma-separated; empty: none)."
    )
    var targeted = ""

    @Option(help: "Targeted placement: names attacked.")
    var targetedNames = 20

    @Option(help: "Targeted placement: resolves per attacked name by fresh resolvers.")
    var resolvesPerName = 10

    func validate() throws {
        guard targetedNames > 0, resolvesPerName > 0 else {
            throw ValidationError("--targeted-names and --resolves-per-name must be positive")
        }
        for fraction in try list(fractions, allowingZero: true) where fraction > 90 {
            throw ValidationError("--fractions values must be at most 90 (got \(fraction))")
        }
        guard ["own", "shared", "both"].contains(rivalKeys) else {
            throw ValidationError("--rival-keys must be own, shared or both")
        }
        for r in try list(replication) where r > 20 {
            throw ValidationError("--replication values must be at most k = 20 (got \(r))")
        }
    }

    func run() async throws {
        var experiment = AdversaryExperiment(
            options: options, fractions: try list(fractions, allowingZero: true), paths: try list(paths),
            quorum: quorum)
        experiment.replicationFactors = try list(replication)
        experiment.sharedKeys = rivalKeys == "both" ? [false, true] : [rivalKeys == "shared"]
        experiment.targetedNodes = targeted.isEmpty ? [] : try list(targeted)
        experiment.targetedNames = targetedNames
        experiment.resolvesPerTargetedName = resolvesPerName
        try await experiment.run().output(options)
    }
}

/// "1,2,3" as integers (positive ones, or with `allowingZero` also 0).
func list(_ text: String, allowingZero: Bool = false) throws -> [Int] {
    try text.split(separator: ",").map {
        guard let value = Int($0.trimmingPrefix(" ")), value > 0 || (allowingZero && value == 0) else {
            let kind = allowingZero ? "non-negative" : "positive"
            throw ValidationError("\"\(text)\" is not a comma-separated list of \(kind) integers")
        }
        return value
    }
}
