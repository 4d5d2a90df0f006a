extension KBucketsTable {
    /// The `count` entries closest to `target`, closest first. Exact: the same answer as sorting
    /// every entry by distance, computed by visiting buckets in distance order and sorting only
    /// within a bucket.
    ///
    /// Why the bucket order is exact: let `d = local XOR target`. An entry `e` in bucket `i` has
    /// `x = local XOR e` with highest set bit `i`, and `e XOR target = x XOR d`. Above bit `i` that
    /// equals `d`, and bit `i` is `NOT d[i]`. So two buckets `i > j` first differ at bit `i`, where
    /// bucket `i` is closer exactly when `d[i] = 1`. The buckets with `d[i] = 1`, from high `i` to
    /// low, therefore come before all others, followed by those with `d[i] = 0` from low `i` to
    /// high; and every bucket's distances form one contiguous range.
    ///
    /// Allocates only the result array (at most `count + bucketSize` entries).
    public func closestPeers(to target: KademliaKey, count: Int) -> [Entry] {
        guard count > 0, self.count > 0 else { return [] }
        let d = localKey.distance(to: target)
        var result: [Entry] = []
        result.reserveCapacity(Swift.min(count + configuration.bucketSize, self.count))

        // Appends one bucket sorted by distance; true once `count` entries are gathered.
        func take(_ bucket: Int) -> Bool {
            let entries = location(atDepth: Self.bucketCount - 1 - bucket).entries
            guard !entries.isEmpty else { return false }
            let start = result.count
            result.append(contentsOf: slots[entries])
            // Insertion sort: a bucket holds at most k entries, and this never allocates.
            for i in (start + 1)..<result.count {
                var j = i
                while j > start && target.isCloser(key(of: result[j].peer), than: key(of: result[j - 1].peer)) {
                    result.swapAt(j, j - 1)
                    j -= 1
                }
            }
            return result.count >= count
        }

        // Only stored buckets (indices from `lowest` up) can hold entries.
        let lowest = Self.bucketCount - storage.count
        var done = false
        for bucket in stride(from: Self.bucketCount - 1, through: lowest, by: -1) where d.bit(bucket) {
            if take(bucket) {
                done = true
                break
            }
        }
        if !done {
            for bucket in lowest..<Self.bucketCount where !d.bit(bucket) {
                if take(bucket) { break }
            }
        }
        if result.count > count { result.removeLast(result.count - count) }
        return result
    }
}
