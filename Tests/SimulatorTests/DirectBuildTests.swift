import Resolution
import Testing

@testable import agent_sim

@Suite("Simulation.buildDirect: every table as joins in node order leave it")
struct DirectBuildTests {
    @Test("each bucket holds the k earliest nodes of its part of the keyspace, its cache the next ones, no spare slots")
    func tablesMatchTheDefinition() {
        let count = 300
        let parameters = NetworkParameters()
        let k = parameters.routingTable.bucketSize
        let cache = parameters.routingTable.replacementCacheSize
        let network = Simulation.buildDirect(nodes: count, parameters: parameters, seed: 11)
        let keys = network.keySpace.keys
        #expect(network.nodes.count == count && keys.count == count)
        for index in 0..<count {
            let node = network.nodes[index]
            #expect(node.isOnline)
            // By brute force: the other nodes by common prefix length with this one, earliest first.
            var parts: [Int: [Int]] = [:]
            for other in 0..<count where other != index {
                parts[keys[index].commonPrefixLength(with: keys[other]), default: []].append(other)
            }
            var expectedCount = 0
            for depth in 0..<KademliaKey.bitCount {
                let part = parts[depth] ?? []
                let bucket = KademliaKey.bitCount - 1 - depth
                let entries = node.table.entries(inBucket: bucket).map(\.peer.index)
                let replacements = node.table.replacements(inBucket: bucket).map(\.peer.index)
                #expect(entries == Array(part.prefix(k)), "node \(index), depth \(depth)")
                #expect(replacements == Array(part.dropFirst(k).prefix(cache)), "node \(index), depth \(depth)")
                expectedCount += min(part.count, k)
            }
            #expect(node.table.count == expectedCount)
            // Room was made for exactly what the table holds (the allocator may round the block up
            // by a slot, which the array then counts as capacity).
            let footprint = node.table.footprint
            #expect((0...1).contains(footprint.entrySlots - node.table.count), "node \(index): \(footprint)")
        }
    }

    @Test("forEachBranching gives each key its buckets once, shallowest first, as the part of the keyspace it is")
    func branchings() {
        let keys = SortedKeysTests.keys(count: 200, seed: 9)
        let sorted = SortedKeys(keys)
        var seen: [Int: [Int]] = [:]
        sorted.forEachBranching { half, sibling, depth in
            for position in half {
                let key = sorted.keys[position]
                seen[position, default: []].append(depth)
                // The sibling block is exactly the keys sharing `depth` bits with this one.
                let expected = sorted.keys.indices.filter { sorted.keys[$0].commonPrefixLength(with: key) == depth }
                #expect(Array(sibling) == expected)
            }
        }
        for position in 0..<sorted.count {
            let depths = Set(keys.map { sorted.keys[position].commonPrefixLength(with: $0) }).subtracting([256]).sorted()
            #expect(seen[position] == depths)
        }
    }
}
