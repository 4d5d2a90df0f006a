import Resolution
import Testing

@testable import agent_sim

@Suite("SortedKeys: prefix blocks and the k closest by binary search, against brute force")
struct SortedKeysTests {
    /// Random keys, and a few that share long prefixes (pairs that differ only in a late bit), so
    /// deep blocks are exercised.
    static func keys(count: Int, seed: UInt64) -> [KademliaKey] {
        var generator = SimulationGenerator(seed: seed, 0x736f_7274)
        var keys = (0..<count).map { _ in KademliaKey.random(using: &generator) }
        for index in stride(from: 0, to: count / 4, by: 1) {
            var bytes = keys[index].bytes
            bytes[31] ^= 1 << UInt8(index % 8)
            keys.append(KademliaKey(bytes: bytes)!)
        }
        return keys
    }

    @Test("block(of:prefixLength:) holds exactly the keys that share the prefix, for every length")
    func blocks() {
        let keys = Self.keys(count: 300, seed: 1)
        let sorted = SortedKeys(keys)
        #expect(sorted.count == keys.count)
        // Sorted as numbers, and `nodes` maps each position back to its key.
        for position in 1..<sorted.count {
            #expect(KademliaKey.zeroDistanceOrder(sorted.keys[position - 1], sorted.keys[position]))
        }
        for position in 0..<sorted.count { #expect(keys[sorted.nodes[position]] == sorted.keys[position]) }
        var generator = SimulationGenerator(seed: 2)
        let probes = Array(keys.prefix(40)) + (0..<20).map { _ in KademliaKey.random(using: &generator) }
        for probe in probes {
            for length in [0, 1, 2, 3, 5, 8, 12, 200, 255, 256] {
                let block = sorted.block(of: probe, prefixLength: length)
                let expected = Set(keys.indices.filter { keys[$0].commonPrefixLength(with: probe) >= length })
                #expect(Set(block.map { sorted.nodes[$0] }) == expected, "length \(length)")
            }
        }
    }

    @Test("closest(to:count:excluding:) is the brute-force k closest, in order")
    func closest() {
        let keys = Self.keys(count: 400, seed: 3)
        let sorted = SortedKeys(keys)
        var generator = SimulationGenerator(seed: 4)
        for round in 0..<60 {
            let target = round % 2 == 0 ? KademliaKey.random(using: &generator) : keys[round]
            let excluded = round % 3 == 0 ? round : nil
            for count in [1, 20, 64] {
                let expected = keys.indices.filter { $0 != excluded }
                    .sorted { target.isCloser(keys[$0], than: keys[$1]) }.prefix(count)
                #expect(sorted.closest(to: target, count: count, excluding: excluded) == Array(expected))
            }
        }
        // Asking for more than there are gives them all.
        let few = SortedKeys(Array(keys.prefix(5)))
        #expect(few.closest(to: keys[0], count: 20).count == 5)
        #expect(few.closest(to: keys[0], count: 20, excluding: 0).count == 4)
    }
}

extension KademliaKey {
    /// Whether `a` is below `b` as a 256-bit number.
    static func zeroDistanceOrder(_ a: KademliaKey, _ b: KademliaKey) -> Bool {
        a.bytes.lexicographicallyPrecedes(b.bytes)
    }
}
