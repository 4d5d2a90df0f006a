import Foundation

/// The simulator's only source of randomness (SplitMix64), so that a run is reproduced exactly by
/// its seed.
///
/// Each experiment configuration draws from its own generator, derived from the seed and labels
/// that name the configuration, so results do not depend on which configurations run, in which
/// order, or on which thread.
struct SimulationGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    /// A generator for the configuration named by `labels` under `seed`.
    init(seed: UInt64, _ labels: UInt64...) {
        var state = seed
        for label in labels {
            state = Self.mix(state ^ Self.mix(label &+ 0x5851_f42d_4c95_7f2d))
        }
        self.state = state
    }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return Self.mix(state)
    }

    /// `count` random bytes.
    mutating func bytes(_ count: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count + 7)
        while result.count < count {
            var word = next()
            for _ in 0..<8 {
                result.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return Array(result.prefix(count))
    }

    /// True with probability `probability`.
    mutating func chance(_ probability: Double) -> Bool {
        Double.random(in: 0..<1, using: &self) < probability
    }

    /// An exponentially distributed wait with the given mean (the gap between events of a Poisson
    /// process).
    mutating func exponential(mean: Double) -> Double {
        -mean * log(1 - Double.random(in: 0..<1, using: &self))
    }

    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
