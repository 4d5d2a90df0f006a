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

/// Everything one subcommand found: its parameters and tables.
struct Report: Encodable, Sendable {
    let experiment: String
    var parameters: [String: String]
    var tables: [ReportTable] = []
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
        case experiment, parameters, tables
        case seconds = "wall_seconds"
        case peakResidentBytes = "peak_rss_bytes"
    }

    /// Prints the report as text, or as one JSON document.
    func print(json: Bool) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try! encoder.encode(self)
            Swift.print(String(decoding: data, as: UTF8.self))
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

/// Mean and percentiles of a list of measurements.
struct Distribution: Sendable {
    private(set) var values: [Double] = []

    mutating func add(_ value: Double) { values.append(value) }
    mutating func add(_ value: Int) { values.append(Double(value)) }

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
