/// Percentiles of a sample, for the printed summaries of the many-node tests (their network is
/// `DHTLoopbackNetwork`, Sources/ResolutionTesting).
func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}
