/// A deterministic random generator (SplitMix64) for hostile-input tests: a failing case is
/// reproduced from the seed printed with it.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }

    /// A mutation of `bytes`: a random byte flipped, inserted, deleted, or the input truncated.
    public mutating func mutate(_ bytes: [UInt8]) -> [UInt8] {
        var result = bytes
        switch Int.random(in: 0..<4, using: &self) {
        case 0 where !result.isEmpty:
            let index = Int.random(in: 0..<result.count, using: &self)
            result[index] ^= UInt8.random(in: 1...255, using: &self)
        case 1:
            result.insert(UInt8.random(in: 0...255, using: &self), at: Int.random(in: 0...result.count, using: &self))
        case 2 where !result.isEmpty:
            result.remove(at: Int.random(in: 0..<result.count, using: &self))
        default:
            result = Array(result.prefix(Int.random(in: 0...result.count, using: &self)))
        }
        return result
    }
}
