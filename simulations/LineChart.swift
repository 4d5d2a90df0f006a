import Foundation

/// A line chart written as SVG by the simulator itself (no plotting dependency): axes with ticks,
/// a title, axis labels, a legend, and one polyline with point markers per series. `--out DIR`
/// writes one per figure of an experiment (simulations/README.md shows them).
struct LineChart: Sendable {
    enum Scale: Sendable {
        case linear
        /// Base 10; only positive values are drawn.
        case logarithmic
    }

    struct Series: Sendable {
        let name: String
        /// In ascending x order, as drawn.
        let points: [(x: Double, y: Double)]
        var dashed = false
        /// Index into `colours`; nil: the series' own position.
        var colour: Int?
    }

    /// File name without `.svg`.
    let name: String
    let title: String
    let xLabel: String
    let yLabel: String
    var xScale = Scale.linear
    var yScale = Scale.linear
    /// The y range to show at least (0...1 for success rates); widened to hold every point.
    var yRange: ClosedRange<Double>?
    var series: [Series] = []

    init(name: String, title: String, xLabel: String, yLabel: String) {
        self.name = name
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    /// Adds a series, leaving out points a scale cannot show (NaN, and non-positive values on a
    /// logarithmic axis).
    mutating func add(_ name: String, _ points: [(x: Double, y: Double)], dashed: Bool = false, colour: Int? = nil) {
        let shown = points.filter { Self.shows($0.x, on: xScale) && Self.shows($0.y, on: yScale) }
            .sorted { $0.x < $1.x }
        series.append(Series(name: name, points: shown, dashed: dashed, colour: colour))
    }

    private static func shows(_ value: Double, on scale: Scale) -> Bool {
        value.isFinite && (scale == .linear || value > 0)
    }

    // MARK: Layout

    static let width = 720.0
    static let height = 420.0
    /// The plot area: left, top, right, bottom edges.
    static let plot = (left: 80.0, top: 44.0, right: 520.0, bottom: 360.0)
    static let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// One axis: its scale, the range shown and the ticks.
    struct Axis: Sendable {
        let scale: Scale
        let low: Double
        let high: Double
        let ticks: [Double]

        /// Ticks and a range that hold `values` (and `at least`), with round tick values.
        init(scale: Scale, values: [Double], atLeast: ClosedRange<Double>?) {
            self.scale = scale
            var low = values.min() ?? atLeast?.lowerBound ?? 0
            var high = values.max() ?? atLeast?.upperBound ?? 1
            if let atLeast {
                low = Swift.min(low, atLeast.lowerBound)
                high = Swift.max(high, atLeast.upperBound)
            }
            switch scale {
            case .linear:
                if low == high { (low, high) = (low - 1, high + 1) }
                let step = Self.roundStep((high - low) / 5)
                low = (low / step).rounded(.down) * step
                high = (high / step).rounded(.up) * step
                let count = Int(((high - low) / step).rounded())
                self.ticks = (0...count).map { low + Double($0) * step }
            case .logarithmic:
                if low <= 0 { low = high > 0 ? high / 10 : 1 }
                if high <= 0 { high = low * 10 }
                var lowExponent = log10(low).rounded(.down)
                var highExponent = log10(high).rounded(.up)
                if lowExponent == highExponent { (lowExponent, highExponent) = (lowExponent - 1, highExponent + 1) }
                low = pow(10, lowExponent)
                high = pow(10, highExponent)
                var ticks: [Double] = []
                // Decades, with 2 and 5 between them when there are few decades.
                let multiples: [Double] = highExponent - lowExponent <= 2 ? [1, 2, 5] : [1]
                for exponent in Int(lowExponent)...Int(highExponent) {
                    for multiple in multiples {
                        let tick = multiple * pow(10, Double(exponent))
                        if tick <= high * (1 + 1e-9) { ticks.append(tick) }
                    }
                }
                self.ticks = ticks
            }
            self.low = low
            self.high = high
        }

        /// 1, 2 or 5 times a power of ten, at least `raw`.
        static func roundStep(_ raw: Double) -> Double {
            let magnitude = pow(10, log10(raw).rounded(.down))
            for multiple in [1.0, 2, 5, 10] where multiple * magnitude >= raw * (1 - 1e-9) {
                return multiple * magnitude
            }
            return 10 * magnitude
        }

        /// Where `value` falls between 0 (low) and 1 (high).
        func fraction(_ value: Double) -> Double {
            switch scale {
            case .linear: return (value - low) / (high - low)
            case .logarithmic: return (log10(value) - log10(low)) / (log10(high) - log10(low))
            }
        }
    }

    /// A tick label: 1k, 10k, 1M for large values; up to three decimals, trailing zeros dropped.
    static func label(_ value: Double) -> String {
        let magnitude = abs(value)
        if magnitude >= 1e6 { return compact(value / 1e6) + "M" }
        if magnitude >= 1e4 { return compact(value / 1e3) + "k" }
        return compact(value)
    }

    private static func compact(_ value: Double) -> String {
        var text = String(format: "%.3f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text == "-0" ? "0" : text
    }

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    private static func coordinate(_ value: Double) -> String { String(format: "%.1f", value) }

    // MARK: Drawing

    var xAxis: Axis { Axis(scale: xScale, values: series.flatMap { $0.points.map(\.x) }, atLeast: nil) }
    var yAxis: Axis { Axis(scale: yScale, values: series.flatMap { $0.points.map(\.y) }, atLeast: yRange) }

    /// The chart as a standalone SVG document.
    var svg: String {
        let plot = Self.plot
        let (x, y) = (xAxis, yAxis)
        func px(_ value: Double) -> Double { plot.left + x.fraction(value) * (plot.right - plot.left) }
        func py(_ value: Double) -> Double { plot.bottom - y.fraction(value) * (plot.bottom - plot.top) }
        let c = Self.coordinate
        var lines = [
            ##"<?xml version="1.0" encoding="UTF-8"?>"##,
            ##"<svg xmlns="http://www.w3.org/2000/svg" width="\##(Int(Self.width))" height="\##(Int(Self.height))" viewBox="0 0 \##(Int(Self.width)) \##(Int(Self.height))" font-family="sans-serif" font-size="12">"##,
            ##"<rect width="100%" height="100%" fill="white"/>"##,
            ##"<text x="\##(c(Self.width / 2))" y="22" text-anchor="middle" font-size="15">\##(Self.escaped(title))</text>"##,
        ]
        // Grid and ticks.
        for tick in x.ticks {
            let position = c(px(tick))
            lines.append(
                ##"<line class="grid" x1="\##(position)" y1="\##(c(plot.top))" x2="\##(position)" y2="\##(c(plot.bottom))" stroke="#e0e0e0"/>"##)
            lines.append(
                ##"<text class="tick" x="\##(position)" y="\##(c(plot.bottom + 18))" text-anchor="middle">\##(Self.label(tick))</text>"##)
        }
        for tick in y.ticks {
            let position = c(py(tick))
            lines.append(
                ##"<line class="grid" x1="\##(c(plot.left))" y1="\##(position)" x2="\##(c(plot.right))" y2="\##(position)" stroke="#e0e0e0"/>"##)
            lines.append(
                ##"<text class="tick" x="\##(c(plot.left - 8))" y="\##(c(py(tick) + 4))" text-anchor="end">\##(Self.label(tick))</text>"##)
        }
        // Axes and their labels.
        lines.append(
            ##"<polyline class="axes" points="\##(c(plot.left)),\##(c(plot.top)) \##(c(plot.left)),\##(c(plot.bottom)) \##(c(plot.right)),\##(c(plot.bottom))" fill="none" stroke="black"/>"##)
        lines.append(
            ##"<text x="\##(c((plot.left + plot.right) / 2))" y="\##(c(plot.bottom + 42))" text-anchor="middle">\##(Self.escaped(xLabel))</text>"##)
        let yMiddle = c((plot.top + plot.bottom) / 2)
        lines.append(
            ##"<text x="20" y="\##(yMiddle)" text-anchor="middle" transform="rotate(-90 20 \##(yMiddle))">\##(Self.escaped(yLabel))</text>"##)
        // Series, and the legend beside the plot.
        for (number, series) in series.enumerated() {
            let colour = Self.colours[(series.colour ?? number) % Self.colours.count]
            let dash = series.dashed ? ##" stroke-dasharray="6 4""## : ""
            let points = series.points.map { "\(c(px($0.x))),\(c(py($0.y)))" }.joined(separator: " ")
            lines.append(
                ##"<polyline class="series" points="\##(points)" fill="none" stroke="\##(colour)" stroke-width="2"\##(dash)/>"##)
            for point in series.points {
                lines.append(##"<circle cx="\##(c(px(point.x)))" cy="\##(c(py(point.y)))" r="3" fill="\##(colour)"/>"##)
            }
            let legendY = plot.top + 8 + Double(number) * 20
            lines.append(
                ##"<line x1="\##(c(plot.right + 16))" y1="\##(c(legendY))" x2="\##(c(plot.right + 44))" y2="\##(c(legendY))" stroke="\##(colour)" stroke-width="2"\##(dash)/>"##)
            lines.append(
                ##"<text class="legend" x="\##(c(plot.right + 50))" y="\##(c(legendY + 4))">\##(Self.escaped(series.name))</text>"##)
        }
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }
}
