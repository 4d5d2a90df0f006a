import Foundation
import Identity

/// One measured figure of a benchmark run, with its ratios against the baselines of the same run.
struct Figure: Codable, Sendable {
    enum Unit: String, Codable, Sendable {
        case bytesPerSecond = "bytes/s"
        case perSecond = "1/s"
        case seconds = "s"
    }

    /// Stable key for `--json` consumers (`ours.perf.single`, `baseline.aead`, …).
    let key: String
    /// Short tag shown in the table and used by other rows' ratios (`A`, `B`, …), if this is a baseline.
    let tag: String?
    let label: String
    let value: Double
    let unit: Unit
    let ratios: [Ratio]

    /// A quotient of two figures of the run, named for what it divides: `÷A` is this figure over
    /// baseline A (for a time, above 1 means slower than the baseline); `ours÷py` is our figure over
    /// py-libp2p's.
    struct Ratio: Codable, Sendable {
        let name: String
        let value: Double
    }
}

/// The figures of one `agent-bench session` (or `messages`) run, printed as a table or as one JSON document.
struct BenchmarkReport: Codable, Sendable {
    struct Machine: Codable, Sendable {
        /// The lines every benchmark's table starts with: what ran where, how busy the machine
        /// was, with which parameters; then a blank line.
        func header(benchmark: String, otherProcessesCores: Double?, parameters: [String: String]) -> [String] {
            var lines = [
                "agent-bench \(benchmark) — \(cores) cores (\(cpu)), load \(loadAverage), libsodium \(libsodium), "
                    + "\(build) build" + (build == "release" ? "" : " (figures mean nothing: build with -c release)")
            ]
            if let otherProcessesCores {
                lines.append(
                    String(format: "other processes kept %.2f of %d cores busy during the run", otherProcessesCores, cores))
            }
            if !parameters.isEmpty {
                lines.append(parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "  "))
            }
            lines.append("")
            return lines
        }

        let cores: Int
        let cpu: String
        let loadAverage: String
        let libsodium: String
        let build: String
    }

    let machine: Machine
    /// The subcommand that measured, named in the table's first line.
    var benchmark = "session"
    /// Cores other processes kept busy on average while the run lasted (Linux only): a run on a busy
    /// machine understates every figure that needs both cores.
    var otherProcessesCores: Double?
    var parameters: [String: String] = [:]
    private(set) var figures: [Figure] = []
    private(set) var notes: [String] = []

    init(machine: Machine) {
        self.machine = machine
    }

    /// The value of the figure with `key`, if measured.
    func value(_ key: String) -> Double? { figures.first { $0.key == key }?.value }

    /// Adds a figure with its ratios to the baselines named by key in `over` (shown as `÷tag`;
    /// baselines not measured are skipped) and any `extra` ratios.
    mutating func add(
        _ key: String, tag: String? = nil, _ label: String, _ value: Double, _ unit: Figure.Unit,
        over baselines: [String] = [], extra: [Figure.Ratio] = []
    ) {
        let ratios = baselines.compactMap { baselineKey -> Figure.Ratio? in
            guard let baseline = figures.first(where: { $0.key == baselineKey }), baseline.value > 0 else { return nil }
            return Figure.Ratio(name: "÷" + (baseline.tag ?? baseline.key), value: value / baseline.value)
        }
        figures.append(Figure(key: key, tag: tag, label: label, value: value, unit: unit, ratios: ratios + extra))
    }

    mutating func note(_ text: String) { notes.append(text) }

    // MARK: Output

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func table() -> String {
        var lines = machine.header(
            benchmark: benchmark, otherProcessesCores: otherProcessesCores, parameters: parameters)
        let labelWidth = max(40, figures.map(\.label.count).max() ?? 0)
        lines.append(pad("", 4) + pad("figure", labelWidth) + "  " + leftPad("value", 14) + "   ratios")
        for figure in figures {
            let ratios = figure.ratios.map { $0.name + " " + String(format: "%.2f", $0.value) }.joined(separator: "  ")
            lines.append(
                pad(figure.tag ?? "", 4) + pad(figure.label, labelWidth) + "  "
                    + leftPad(Self.format(figure.value, figure.unit), 14) + "   " + ratios)
        }
        if !notes.isEmpty {
            lines.append("")
            lines += notes.map { "- " + $0 }
        }
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Double, _ unit: Figure.Unit) -> String {
        switch unit {
        case .bytesPerSecond: String(format: "%.1f MB/s", value / 1e6)
        case .perSecond: String(format: "%.0f /s", value)
        case .seconds: value < 1e-3 ? String(format: "%.1f µs", value * 1e6) : String(format: "%.2f ms", value * 1e3)
        }
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private func leftPad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}

extension BenchmarkReport.Machine {
    /// Facts about this machine and build, read once at the start.
    static func current() -> Self {
        let cpuInfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        let load =
            ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "")
            .split(separator: " ").prefix(3).joined(separator: " ")
        #if DEBUG
            let build = "debug"
        #else
            let build = "release"
        #endif
        return Self(
            cores: ProcessInfo.processInfo.activeProcessorCount, cpu: model, loadAverage: load.isEmpty ? "?" : load,
            libsodium: Sodium.version, build: build)
    }
}
