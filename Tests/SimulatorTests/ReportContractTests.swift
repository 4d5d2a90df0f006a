import Foundation
import Resolution
import Testing

@testable import agent_sim

/// The `--json` contract of issue #14: one document whose `results` hold one object per
/// configuration with `nodes`, `success_rate` (0-1), `hops_median`, `hops_mean`, `messages_mean`;
/// adversaries add `adversary_fraction` (0-1) and `paths`, churn adds `replication`; the document
/// has `wall_seconds` and `peak_rss_bytes`. Checked on small real runs of each experiment.
@Suite("agent-sim --json: the results contract, CSV, and --out")
struct ReportContractTests {
    static let common = ["nodes", "success_rate", "hops_median", "hops_mean", "messages_mean"]

    /// The report as `--json` prints it, parsed back.
    static func document(_ report: Report) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(report.json.utf8))
        return try #require(object as? [String: Any])
    }

    /// Checks the contract's fields in every result and returns the results.
    static func results(of report: Report, adding extra: [String], nodes: Set<Int>) throws -> [[String: Any]] {
        let document = try Self.document(report)
        #expect((document["wall_seconds"] as? Double).map { $0 > 0 } == true)
        #expect((document["peak_rss_bytes"] as? Int).map { $0 > 0 } == true)
        #expect(document["experiment"] as? String == report.experiment)
        let results = try #require(document["results"] as? [[String: Any]])
        #expect(!results.isEmpty)
        for result in results {
            for name in Self.common + extra {
                #expect(result[name] is NSNumber, "\(name) missing or not a number in \(result)")
            }
            #expect(nodes.contains(try #require(result["nodes"] as? Int)))
            let success = try #require(result["success_rate"] as? Double)
            #expect((0...1).contains(success))
            let median = try #require(result["hops_median"] as? Double)
            let mean = try #require(result["hops_mean"] as? Double)
            #expect(median >= 0 && mean >= 0 && median <= 20 && mean <= 20)
            #expect(try #require(result["messages_mean"] as? Double) >= mean)
        }
        return results
    }

    @Test("lookups: one result per network size, success = the exact k closest found")
    func lookups() throws {
        let options = try SimulationOptions.parse(["--seed", "7"])
        let report = LookupsExperiment(options: options, sizes: [80, 150], lookups: 40, builds: [.direct]).run()
        let results = try Self.results(of: report, adding: ["hops_theory", "build_seconds"], nodes: [80, 150])
        #expect(results.map { $0["nodes"] as? Int } == [80, 150])
        for result in results {
            // In networks this small every lookup finds the true 20 closest.
            #expect(result["success_rate"] as? Double == 1)
            #expect(result["build"] as? String == "direct")
            #expect(result["attempts"] as? Int == 40)
        }
        // The tables people read are still there.
        #expect((try Self.document(report)["tables"] as? [[String: Any]])?.isEmpty == false)
        #expect(report.charts.map(\.name) == ["lookups-hops", "lookups-memory", "lookups-time"])
    }

    @Test("lookups --build both: each size grown by joins and built directly, one series each in the hops chart")
    func lookupsBothBuilds() throws {
        let options = try SimulationOptions.parse(["--seed", "7"])
        let report = LookupsExperiment(options: options, sizes: [60, 120], lookups: 20, builds: [.joins, .direct]).run()
        let results = try Self.results(of: report, adding: ["hops_theory", "build_messages_per_node"], nodes: [60, 120])
        #expect(results.map { $0["nodes"] as? Int } == [60, 60, 120, 120])
        #expect(results.map { $0["build"] as? String } == ["joins", "direct", "joins", "direct"])
        // Joins send messages to grow the network; the direct build sends none.
        let joinMessages = results.map { $0["build_messages_per_node"] as? Double ?? -1 }
        #expect(joinMessages[0] > 0 && joinMessages[2] > 0 && joinMessages[1] == 0 && joinMessages[3] == 0)
        let hops = try #require(report.charts.first { $0.name == "lookups-hops" })
        let names = hops.series.map(\.name)
        #expect(names.contains("mean (joins)") && names.contains("mean (direct)"), "\(names)")
    }

    @Test("churn: replication in every result, one per (r, loss, repair)")
    func churn() async throws {
        let options = try SimulationOptions.parse(["--nodes", "60", "--names", "12", "--seed", "3"])
        let report = await ChurnExperiment(
            options: options, replicationFactors: [1, 3], losses: [30], gradualFactors: [], churnPercentPerMinute: 1,
            hours: 0, probes: 10
        ).run()
        let results = try Self.results(of: report, adding: ["replication", "loss_fraction"], nodes: [60])
        #expect(results.count == 4)
        #expect(Set(results.compactMap { $0["replication"] as? Int }) == [1, 3])
        #expect(Set(results.compactMap { $0["scenario"] as? String }) == ["abrupt_loss", "abrupt_loss_repaired"])
        #expect(report.charts.map(\.name) == ["churn-abrupt"])
    }

    @Test("adversaries: adversary_fraction and paths in every result")
    func adversaries() async throws {
        let options = try SimulationOptions.parse(["--nodes", "60", "--names", "12", "--seed", "5"])
        let report = await AdversaryExperiment(options: options, fractions: [10], paths: [1, 2], quorum: 4).run()
        let results = try Self.results(of: report, adding: ["adversary_fraction", "paths"], nodes: [60])
        // Own keys and one shared key, each with 1 and 2 paths.
        #expect(results.count == 4)
        #expect(results.allSatisfy { $0["adversary_fraction"] as? Double == 0.1 })
        #expect(results.compactMap { $0["paths"] as? Int }.sorted() == [1, 1, 2, 2])
    }

    @Test("adversaries, targeted placement: the contract, r, and the colluders' key generations")
    func targetedAdversaries() async throws {
        let options = try SimulationOptions.parse(["--nodes", "60", "--names", "6", "--seed", "5"])
        var experiment = AdversaryExperiment(options: options, fractions: [10], paths: [1], quorum: 4)
        experiment.replicationFactors = [3]
        // One colluder per name: some honest replica holds the record in every run, so every
        // configuration has resolves (a configuration without any reports null figures).
        experiment.targetedNodes = [1]
        experiment.targetedNames = 2
        experiment.resolvesPerTargetedName = 2
        let report = await experiment.run()
        let results = try Self.results(of: report, adding: ["adversary_fraction", "paths", "replication"], nodes: [60])
        #expect(results.allSatisfy { $0["replication"] as? Int == 3 })
        let random = results.filter { $0["placement"] as? String == "random" }
        let targeted = results.filter { $0["placement"] as? String == "targeted" }
        #expect(random.count == 2)
        // (before or after publishing) x (fresh resolver or a replica).
        #expect(targeted.count == 4)
        for result in targeted {
            #expect((result["key_generations_per_node"] as? Double).map { $0 >= 1 } == true)
            #expect(result["targeted_nodes"] as? Int == 1)
            #expect(["before_publish", "after_publish"].contains(result["colluders_came"] as? String ?? ""))
        }
        // Fresh resolvers: 2 names x 2 resolves each.
        #expect(targeted.filter { $0["resolver"] as? String == "fresh" }.allSatisfy { $0["attempts"] as? Int == 4 })
        #expect(report.tables.count == 2)
    }

    @Test("targeted placement: every colluder's point is closer to its target than every node's")
    func colludersArePlacedClosest() {
        let network = Simulation.buildDirect(nodes: 60, parameters: NetworkParameters(), seed: 9)
        let targets = (0..<3).map { KademliaKey(hashing: [UInt8]("target \($0)".utf8)) }
        let placements = AdversaryExperiment.placeColluders(near: targets, count: 2, in: network, seed: 9)
        #expect(placements.count == 3)
        var serials = Set<UInt64>()
        for (target, placement) in zip(targets, placements) {
            #expect(placement.serials.count == 2 && placement.generations.allSatisfy { $0 >= 1 })
            for serial in placement.serials {
                #expect(serials.insert(serial).inserted)
                let key = AdversaryExperiment.key(seed: 9, serial: serial)
                #expect(network.nodes.allSatisfy { target.distance(to: key) < target.distance(to: $0.peer.key) })
            }
        }
    }

    @Test("a figure with nothing measured is null, never NaN (which JSON cannot hold)")
    func nothingMeasured() throws {
        let record = ResultRecord(nodes: 10, successes: 0, attempts: 0, hops: Distribution(), messages: Distribution())
        var report = Report(experiment: "lookups", parameters: [:])
        report.results = [record]
        report.tables = [ReportTable(title: "t", columns: ["a"])]
        report.tables[0].add([.number(.nan, decimals: 1)])
        let document = try Self.document(report)
        let result = try #require((document["results"] as? [[String: Any]])?.first)
        for name in ["success_rate", "hops_median", "hops_mean", "messages_mean"] {
            #expect(result[name] is NSNull, "\(name)")
        }
        #expect(result["nodes"] as? Int == 10)
    }

    @Test("CSV: a column for every figure any result has, fields quoted where needed")
    func csv() {
        var first = ResultRecord(nodes: 5, successes: 1, attempts: 2, hops: Distribution(), messages: Distribution())
        first["label"] = .text("a, \"b\"")
        var second = ResultRecord(nodes: 6, successes: 2, attempts: 2, hops: Distribution(), messages: Distribution())
        second["series"] = .numbers([0.5, 1])
        var report = Report(experiment: "x", parameters: [:])
        report.results = [first, second]
        let lines = report.csv.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 4 && lines[3].isEmpty)
        #expect(
            lines[0] == "nodes,success_rate,hops_median,hops_mean,messages_mean,attempts,label,series")
        #expect(lines[1] == "5,0.5,,,,2,\"a, \"\"b\"\"\",")
        #expect(lines[2] == "6,1.0,,,,2,,0.5 1.0")
    }

    @Test("--out writes the CSV and every chart; an unwritable directory is a clear error")
    func out() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("agent-sim-out-\(UInt64.random(in: 0...UInt64.max))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let options = try SimulationOptions.parse(["--seed", "7"])
        let report = LookupsExperiment(options: options, sizes: [60], lookups: 10, builds: [.direct]).run()
        let written = try report.write(to: directory.path)
        #expect(written.map { URL(fileURLWithPath: $0).lastPathComponent }.sorted()
            == ["lookups-hops.svg", "lookups-memory.svg", "lookups-time.svg", "lookups.csv"])
        let csv = try String(contentsOf: directory.appendingPathComponent("lookups.csv"), encoding: .utf8)
        #expect(csv.hasPrefix("nodes,success_rate,hops_median,hops_mean,messages_mean,"))
        #expect(csv.split(separator: "\n").count == 2)

        // A directory below a regular file cannot be made.
        let file = directory.appendingPathComponent("lookups.csv").path
        #expect(throws: OutputError.self) { try report.write(to: file + "/below") }
        #expect(throws: (any Error).self) { try SimulationOptions.parse(["--out", ""]) }
    }
}
