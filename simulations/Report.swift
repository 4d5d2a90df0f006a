import Foundation

/// A table of results: printed aligned for people, encoded as JSON with `--json`.
struct ReportTable: Encodable, Sendable {
    enum Cell: Encodable, Sendable {
        case text(String)
        case integer(Int)
        /// A number and the decimals to print it with.
        case number(Double, decimals: Int)
        /// A fraction in [0, 1], printed as a percentage.
        case percent(Double)
        case missing

        var text: String {
            switch self {
            case .text(let text): return text
            case .integer(let value): return String(value)
            case .number(let value, let decimals): return String(format: "%.\(decimals)f", value)
            case .percent(let value): return String(format: "%.1f%%", value * 100)
            case .missing: return "-"
            }
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let text): try container.encode(text)
            case .integer(let value): try container.encode(value)
            case .number(let value, _) where !value.isFinite, .percent(let value) where !value.isFinite:
                try container.encodeNil()
            case .number(let value, let decimals):
                let scale = pow(10, Double(decimals))
                try container.encode((value * scale).rounded() / scale)
            case .percent(let value): try container.encode((value * 10_000).rounded() / 10_000)
            case .missing: try container.encodeNil()
            }
        }
    }

    let title: String
    let columns: [String]
    var rows: [[Cell]] = []
    var notes: [String] = []

    init(title: String, columns: [String]) {
        self.title = title
        self.columns = columns
    }

    mutating func add(_ row: [Cell]) {
        precondition(row.count == columns.count, "row has \(row.count) cells for \(columns.count) columns")
        rows.append(row)
    }

    /// The table as aligned text: the first column left-aligned, the others right-aligned.
    var text: String {
        let cells = [columns] + rows.map { $0.map(\.text) }
        let widths = columns.indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        var lines = [title]
        for (number, row) in cells.enumerated() {
            let line = row.enumerated().map { column, text in
                let padding = String(repeating: " ", count: widths[column] - text.count)
                return column == 0 ? text + padding : padding + text
            }.joined(separator: "  ")
            lines.append("  " + line)
            if number == 0 {
                lines.append("  " + widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
            }
        }
        lines += notes.map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    enum CodingKeys: String, CodingKey { case title, columns, rows, notes }
}

/// The figures of one configuration (a network size, an (r, loss) pair, an adversary fraction and
/// path count), as `--json` writes them in `results` and `--out` in CSV: the names issue #14's
/// contract fixes (`nodes`, `success_rate`, `hops_median`, `hops_mean`, `messages_mean`, and per
/// experiment `replication`, `adversary_fraction`, `paths`) and whatever else the experiment adds.
/// Shares are fractions in [0, 1]; a figure with no measurement behind it (no resolves) is null.
struct ResultRecord: Encodable, Sendable {
    enum Value: Encodable, Sendable, Equatable {
        case integer(Int)
        case number(Double)
        case text(String)
        /// A series, such as the success rate of each churn probe.
        case numbers([Double])

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .integer(let value): try container.encode(value)
            // JSON has no NaN or infinity: a mean of nothing is null.
            case .number(let value): value.isFinite ? try container.encode(value) : try container.encodeNil()
            case .text(let text): try container.encode(text)
            case .numbers(let values): try container.encode(values.map { $0.isFinite ? $0 : nil })
            }
        }

        /// The value as a CSV field (a series as its values joined by spaces; NaN as empty).
        var csvField: String {
            func number(_ value: Double) -> String { value.isFinite ? String(value) : "" }
            switch self {
            case .integer(let value): return String(value)
            case .number(let value): return number(value)
            case .text(let text):
                guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) else { return text }
                return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            case .numbers(let values): return values.map(number).joined(separator: " ")
            }
        }

        /// The value as a number, for plotting; nil for text and series.
        var number: Double? {
            switch self {
            case .integer(let value): return Double(value)
            case .number(let value): return value.isFinite ? value : nil
            case .text, .numbers: return nil
            }
        }
    }

    /// Names in the order they were set (CSV columns follow it; JSON sorts them).
    private(set) var names: [String] = []
    private var values: [String: Value] = [:]

    /// The contract's common figures: `successes` of `attempts` succeeded, with the hops and the
    /// messages (requests sent) of each.
    init(nodes: Int, successes: Int, attempts: Int, hops: Distribution, messages: Distribution) {
        self["nodes"] = .integer(nodes)
        self["success_rate"] = .number(attempts == 0 ? .nan : Double(successes) / Double(attempts))
        self["hops_median"] = .number(hops.count == 0 ? .nan : hops.percentile(0.5))
        self["hops_mean"] = .number(hops.mean)
        self["messages_mean"] = .number(messages.mean)
        self["attempts"] = .integer(attempts)
    }

    subscript(name: String) -> Value? {
        get { values[name] }
        set {
            if values[name] == nil, newValue != nil { names.append(name) }
            if newValue == nil { names.removeAll { $0 == name } }
            values[name] = newValue
        }
    }

    private struct Name: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Name.self)
        for name in names { try container.encode(values[name], forKey: Name(stringValue: name)) }
    }
}

/// Everything one subcommand found: its parameters, one `ResultRecord` per configuration, and the
/// tables printed for people.
struct Report: Encodable, Sendable {
    let experiment: String
    var parameters: [String: String]
    var results: [ResultRecord] = []
    var tables: [ReportTable] = []
    /// The charts `--out` writes as SVG (not part of the JSON document).
    var charts: [LineChart] = []
    /// Wall-clock seconds the run took.
    var seconds: Double = 0
    /// The process's peak resident memory when the run ended (nil where it cannot be read).
    var peakResidentBytes: Int?

    /// Notes the wall-clock time and the peak resident memory at the end of the run.
    mutating func finish(_ stopwatch: Stopwatch) {
        seconds = stopwatch.seconds
        peakResidentBytes = ProcessMemory.peakResidentBytes
    }

    enum CodingKeys: String, CodingKey {
        case experiment, parameters, results, tables
        case seconds = "wall_seconds"
        case peakResidentBytes = "peak_rss_bytes"
    }

    /// The report as one JSON document (keys sorted).
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Cannot fail: every value is a string, an integer or a finite number (ResultRecord and
        // ReportTable.Cell write null for NaN), in containers keyed by strings.
        let data = try! encoder.encode(self)
        return String(decoding: data, as: UTF8.self)
    }

    /// The results as CSV: a header of every name any record has (in first-seen order), then one
    /// line per record, empty where a record lacks the figure.
    var csv: String {
        var columns: [String] = []
        for record in results {
            for name in record.names where !columns.contains(name) { columns.append(name) }
        }
        var lines = [columns.joined(separator: ",")]
        for record in results {
            lines.append(columns.map { record[$0]?.csvField ?? "" }.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes the results as `<experiment>.csv` and every chart as `<name>.svg` into `directory`
    /// (created if missing), and returns the paths written.
    @discardableResult
    func write(to directory: String) throws -> [String] {
        let url = URL(fileURLWithPath: directory, isDirectory: true)
        var written: [String] = []
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            let files = [(experiment + ".csv", csv)] + charts.map { ($0.name + ".svg", $0.svg) }
            for (name, contents) in files {
                let file = url.appendingPathComponent(name)
                try Data(contents.utf8).write(to: file)
                written.append(file.path)
            }
        } catch {
            throw OutputError(directory: directory, underlying: error)
        }
        return written
    }

    /// What every subcommand does with its report: writes the files `--out` asks for, then prints.
    func output(_ options: SimulationOptions) throws {
        if let directory = options.out {
            let written = try write(to: directory)
            if !options.json {
                Swift.print("wrote " + written.joined(separator: ", "))
            }
        }
        print(json: options.json)
    }

    /// Prints the report as text, or as one JSON document.
    func print(json: Bool) {
        if json {
            Swift.print(self.json)
            return
        }
        let settings = parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        Swift.print("agent-sim \(experiment): \(settings)")
        for table in tables {
            Swift.print("")
            Swift.print(table.text)
        }
        Swift.print("")
        if let peak = peakResidentBytes {
            Swift.print(String(format: "(%.1f s wall clock, peak RSS %.1f MiB)", seconds, Double(peak) / 1_048_576))
        } else {
            Swift.print(String(format: "(%.1f s wall clock)", seconds))
        }
    }
}

/// `--out`'s directory or one of its files could not be written.
struct OutputError: Error, CustomStringConvertible {
    let directory: String
    let underlying: Error

    var description: String { "cannot write results to \(directory): \(underlying.localizedDescription)" }
}

/// Mean and percentiles of a list of measurements.
struct Distribution: Sendable {
    private(set) var values: [Double] = []

    mutating func add(_ value: Double) { values.append(value) }
    mutating func add(_ value: Int) { values.append(Double(value)) }
    mutating func merge(_ other: Distribution) { values += other.values }

    var count: Int { values.count }
    var mean: Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }

    /// The `fraction` percentile (nearest rank).
    func percentile(_ fraction: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}

extension ReportTable.Cell {
    static func mean(_ distribution: Distribution, decimals: Int) -> Self {
        distribution.count == 0 ? .missing : .number(distribution.mean, decimals: decimals)
    }

    static func percentile(_ distribution: Distribution, _ fraction: Double, decimals: Int) -> Self {
        distribution.count == 0 ? .missing : .number(distribution.percentile(fraction), decimals: decimals)
    }

    static func ratio(_ part: Int, of whole: Int) -> Self {
        whole == 0 ? .missing : .percent(Double(part) / Double(whole))
    }
}
