import Resolution

/// The nodes' keys sorted as 256-bit numbers. The keys that share their first `c` bits with a key
/// form one contiguous run of this order (a subtree of the binary trie), so the nodes of one bucket
/// of a routing table, and the k closest nodes to a key, are found by binary search instead of by
/// sorting the whole network.
struct SortedKeys: Sendable {
    /// Keys in ascending numeric order.
    let keys: [KademliaKey]
    /// `values[p]`: `keys[p]` as a number (its distance from the all-zero key).
    private let values: [KademliaDistance]
    /// `nodes[p]`: the node whose key is `keys[p]`.
    let nodes: [Int]

    private static let zero = KademliaKey(bytes: [UInt8](repeating: 0, count: KademliaKey.byteCount))!

    /// `keys[i]` is node `i`'s key.
    init(_ keys: [KademliaKey]) {
        let values = keys.map { Self.zero.distance(to: $0) }
        let order = keys.indices.sorted { values[$0] < values[$1] }
        self.keys = order.map { keys[$0] }
        self.values = order.map { values[$0] }
        self.nodes = order
    }

    var count: Int { keys.count }

    /// The positions of the keys whose first `length` bits are `key`'s.
    func block(of key: KademliaKey, prefixLength length: Int) -> Range<Int> {
        // A key outside the block is before it when, at the first bit where it differs from `key`,
        // it has 0 (and `key` has 1); after it otherwise. Both predicates are monotone in the order.
        func side(_ position: Int) -> Int {
            let shared = keys[position].commonPrefixLength(with: key)
            if shared >= length { return 0 }
            return values[position].bit(KademliaKey.bitCount - 1 - shared) ? 1 : -1
        }
        func first(where predicate: (Int) -> Bool) -> Int {
            var (low, high) = (0, keys.count)
            while low < high {
                let middle = (low + high) / 2
                if predicate(middle) { high = middle } else { low = middle + 1 }
            }
            return low
        }
        let lower = first { side($0) >= 0 }
        let upper = first { side($0) > 0 }
        return lower..<max(lower, upper)
    }

    /// The first position of `range` whose key has bit `depth` (0 is the most significant) set.
    /// The keys of `range` must share their first `depth` bits: then the bit is 0 before that
    /// position and 1 from it on, and the two parts are the blocks of prefix length `depth + 1`.
    func split(_ range: Range<Int>, atBit depth: Int) -> Int {
        var (low, high) = (range.lowerBound, range.upperBound)
        while low < high {
            let middle = (low + high) / 2
            if values[middle].bit(KademliaKey.bitCount - 1 - depth) { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// Calls `body(half, sibling, depth)` for every branching of the binary trie of the keys in
    /// `range` (which share their first `depth` bits): `half` and `sibling` are the two blocks of
    /// prefix length `depth + 1` below it, each in turn, so `sibling` is the part of the keyspace
    /// that a key of `half` holds in its bucket for common prefix length `depth`. Parents come
    /// before their children, so each key meets its buckets in order of common prefix length.
    func forEachBranching(
        in range: Range<Int>? = nil, depth: Int = 0, _ body: (_ half: Range<Int>, _ sibling: Range<Int>, _ depth: Int) -> Void
    ) {
        var range = range ?? 0..<keys.count
        var depth = depth
        while range.count > 1, depth < KademliaKey.bitCount {
            let split = split(range, atBit: depth)
            let (left, right) = (range.lowerBound..<split, split..<range.upperBound)
            if !left.isEmpty, !right.isEmpty {
                body(left, right, depth)
                body(right, left, depth)
                forEachBranching(in: left, depth: depth + 1, body)
                range = right
            }
            depth += 1
        }
    }

    /// The `count` nodes closest to `target`, closest first, without node `excluded`: exact (the
    /// deepest block around `target` that holds `count + 1` keys holds them all, since every key
    /// in it is closer to `target` than every key outside).
    func closest(to target: KademliaKey, count: Int, excluding excluded: Int? = nil) -> [Int] {
        var range = 0..<keys.count
        var length = 0
        while length < KademliaKey.bitCount {
            let deeper = block(of: target, prefixLength: length + 1)
            guard deeper.count >= count + 1 else { break }
            range = deeper
            length += 1
        }
        return range.filter { nodes[$0] != excluded }
            .sorted { target.isCloser(keys[$0], than: keys[$1]) }
            .prefix(count).map { nodes[$0] }
    }
}
