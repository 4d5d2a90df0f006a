import Foundation
import Testing

#if canImport(FoundationXML)
import FoundationXML
#endif

@testable import agent_sim

@Suite("LineChart: the SVG the simulator writes")
struct LineChartTests {
    static func parse(_ svg: String) throws -> XMLElement {
        try #require(try XMLDocument(data: Data(svg.utf8)).rootElement())
    }

    /// An attribute's value (`attribute(forName:)` finds none in a document with a default
    /// namespace on Linux).
    static func attribute(_ element: XMLElement, _ name: String) -> String? {
        element.attributes?.first { $0.name == name }?.stringValue
    }

    static func elements(_ root: XMLElement, _ name: String, class className: String? = nil) -> [XMLElement] {
        var found: [XMLElement] = []
        for child in root.children ?? [] {
            guard let element = child as? XMLElement, element.name == name else { continue }
            if let className, attribute(element, "class") != className { continue }
            found.append(element)
        }
        return found
    }

    static func points(_ polyline: XMLElement) -> [(Double, Double)] {
        (attribute(polyline, "points") ?? "").split(separator: " ").map { pair in
            let parts = pair.split(separator: ",").map { Double($0)! }
            return (parts[0], parts[1])
        }
    }

    @Test("well-formed SVG: one polyline per series inside the plot, a legend entry each, escaped text")
    func drawing() throws {
        var chart = LineChart(name: "c", title: "hops < 5 & more", xLabel: "nodes N", yLabel: "hops")
        chart.xScale = .logarithmic
        chart.yRange = 0...1
        chart.add("mean", [(100, 2.1), (1000, 2.9), (10_000, 3.4), (100_000, 3.9)])
        chart.add("theory", [(100, 2.5), (100_000, 4.8), (-5, 1), (.nan, 2)], dashed: true)
        let root = try Self.parse(chart.svg)
        #expect(root.name == "svg")
        let series = Self.elements(root, "polyline", class: "series")
        try #require(series.count == 2)
        // Points a logarithmic axis cannot show (negative, NaN) are left out.
        #expect(Self.points(series[1]).count == 2)
        #expect(Self.attribute(series[1], "stroke-dasharray") != nil)
        #expect(Self.attribute(series[0], "stroke-dasharray") == nil)
        let plot = LineChart.plot
        for polyline in series {
            for (x, y) in Self.points(polyline) {
                #expect(x >= plot.left && x <= plot.right && y >= plot.top && y <= plot.bottom)
            }
        }
        // x grows with N, y with hops (SVG's y axis points down).
        let mean = Self.points(series[0])
        #expect(zip(mean, mean.dropFirst()).allSatisfy { $0.0 < $1.0 && $0.1 > $1.1 })
        let texts = Self.elements(root, "text").compactMap(\.stringValue)
        #expect(texts.contains("hops < 5 & more"))
        #expect(Self.elements(root, "text", class: "legend").compactMap(\.stringValue) == ["mean", "theory"])
        // Decade ticks on the logarithmic x axis, round ones on the linear y axis.
        let ticks = Self.elements(root, "text", class: "tick").compactMap(\.stringValue)
        for tick in ["100", "1000", "10k", "100k", "0", "1", "2", "3", "4", "5"] { #expect(ticks.contains(tick), "\(tick)") }
    }

    @Test("axes: round ticks that cover the data, and labels")
    func axes() {
        let linear = LineChart.Axis(scale: .linear, values: [0.93, 0.999], atLeast: 0...1)
        #expect(linear.low == 0 && linear.high == 1)
        #expect(linear.ticks.count == 6)
        let wide = LineChart.Axis(scale: .linear, values: [3, 9_877], atLeast: 0...8192)
        #expect(wide.low == 0 && wide.high >= 9_877 && wide.ticks.count <= 11)
        let log = LineChart.Axis(scale: .logarithmic, values: [100, 1_000_000], atLeast: nil)
        #expect(log.ticks == [100, 1000, 10_000, 100_000, 1_000_000])
        #expect(abs(log.fraction(10_000) - 0.5) < 1e-12)
        let single = LineChart.Axis(scale: .linear, values: [4, 4], atLeast: nil)
        #expect(single.low < 4 && single.high > 4)
        #expect(LineChart.label(1_000_000) == "1M")
        #expect(LineChart.label(20_000) == "20k")
        #expect(LineChart.label(0.25) == "0.25")
        #expect(LineChart.label(8192) == "8192")
    }

    @Test("a chart without any point is still a valid document")
    func empty() throws {
        var chart = LineChart(name: "e", title: "empty", xLabel: "x", yLabel: "y")
        chart.add("nothing", [])
        let root = try Self.parse(chart.svg)
        #expect(Self.elements(root, "polyline", class: "series").count == 1)
    }
}
