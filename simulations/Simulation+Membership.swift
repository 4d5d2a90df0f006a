import NIOCore
import Resolution

extension Simulation {
    /// Node `index` comes online and bootstraps as agentd does (spec/dht.md §10): a self-lookup
    /// seeded with `bootstrap`, whose answering peers fill its routing table; then it publishes its
    /// own name; its behaviour's jobs start with it when the simulation runs them
    /// (`startsJobsOnJoin`), the first upkeep a `maintenanceInterval` later.
    func join(_ index: Int, through bootstrap: Int?, completion: ((Simulation) -> Void)? = nil) {
        setOnline(index, true)
        let seeds = bootstrap.map { [nodes[$0].handle] } ?? []
        findClosest(from: index, key: nodes[index].peer.id.multihash.bytes, extraSeeds: seeds) { simulation, _ in
            if simulation.nodes[index].ownName != nil {
                simulation.publishOwnRecord(of: index) { simulation, _ in
                    simulation.withNode(index) { $0.publishedAt = simulation.now }
                    completion?(simulation)
                }
            } else {
                completion?(simulation)
            }
        }
        if startsJobsOnJoin { startJobs(of: index) }
    }

    /// Node `index` leaves abruptly: it stops answering and never says goodbye. Afterwards it
    /// refuses connections at once if `refuses`, else it never answers.
    func leave(_ index: Int, refuses: Bool) {
        setOnline(index, false)
        withNode(index) { $0.refusesWhenOffline = refuses }
    }

    /// Builds a network of `count` nodes the way a real one grows: node 0 starts alone, the others
    /// join one every `spacing` through one of the first four nodes (the bootstrap list), and every
    /// node runs its behaviour's jobs (upkeep: bucket refresh; nothing to republish or re-replicate)
    /// while the network grows and for `settle` after the last join. Returns the network idle, the
    /// jobs stopped, and the messages the growth took.
    static func build(
        nodes count: Int, parameters: NetworkParameters, seed: UInt64, spacing: TimeAmount = .seconds(1),
        settle: TimeAmount = .minutes(5)
    ) -> (snapshot: NetworkSnapshot, traffic: TrafficCounters) {
        let simulation = Simulation(
            parameters: parameters, seed: seed, generator: SimulationGenerator(seed: seed, 0x6275_696c_64))
        simulation.startsJobsOnJoin = true
        for _ in 0..<count { simulation.createNode() }
        let bootstrapCount = 4
        for index in 0..<count {
            simulation.schedule(after: spacing * Int64(index)) { simulation in
                let bootstrap =
                    index == 0 ? nil : Int.random(in: 0..<min(index, bootstrapCount), using: &simulation.generator)
                simulation.join(index, through: bootstrap)
            }
        }
        simulation.run(until: simulation.now + spacing * Int64(count) + settle)
        simulation.startsJobsOnJoin = false
        for index in 0..<count { simulation.stopJobs(of: index) }
        simulation.runUntilIdle()
        return (simulation.snapshot, simulation.traffic)
    }

    /// Builds a network of `count` nodes without simulating joins, for sizes whose growth would take
    /// hours: every node is online, and each routing table is filled, through the table's own `add`,
    /// as a network grown by joins in node order leaves it: a full bucket keeps the peers it has
    /// (Kademlia's preference for long-lived nodes), so each bucket holds the k earliest nodes of its
    /// part of the keyspace, and the replacement cache the next ones, all seen now. A bucket whose
    /// part holds k or fewer nodes takes them all, so the deepest buckets hold all of a node's
    /// nearest neighbours, as self-lookups leave them.
    ///
    /// One walk down the binary trie of the sorted keys (`SortedKeys.forEachBranching`) gives every
    /// node its buckets, shallowest first: at each branching, the keys of one half take the
    /// earliest nodes of the other half (`EarliestNodes`, merged bottom-up once), so the work is
    /// the `add` calls themselves. Each table gets room for exactly what it will hold first.
    static func buildDirect(nodes count: Int, parameters: NetworkParameters, seed: UInt64) -> NetworkSnapshot {
        let simulation = Simulation(
            parameters: parameters, seed: seed, generator: SimulationGenerator(seed: seed, 0x6469_7265_6374))
        for _ in 0..<count { simulation.createNode() }
        let sorted = SortedKeys(simulation.keySpace.keys)
        let wanted = parameters.routingTable.bucketSize + parameters.routingTable.replacementCacheSize
        // Every bucket takes min(part, k + cache) nodes: k entries, the rest cached, none dropped.
        var slots = [Int](repeating: 0, count: count)
        sorted.forEachBranching { half, sibling, _ in
            for position in half { slots[sorted.nodes[position]] += min(sibling.count, wanted) }
        }
        for index in 0..<count {
            simulation.withNode(index) { $0.table.reserveCapacity(slots[index]) }
        }
        slots = []
        let earliest = EarliestNodes(sorted, count: wanted)
        let now = simulation.now
        sorted.forEachBranching { half, sibling, _ in
            let picks = earliest.nodes(in: sibling)
            for position in half {
                simulation.withNode(sorted.nodes[position]) { node in
                    for pick in picks {
                        _ = node.table.add(VirtualPeer(index: Int(pick)), evidence: .answeredRequest, now: now)
                    }
                }
            }
        }
        for index in 0..<count { simulation.setOnline(index, true) }
        return simulation.snapshot
    }
}

/// The `count` earliest nodes (smallest node numbers), ascending, of every block of the sorted
/// keys that `SortedKeys.forEachBranching` yields: merged bottom-up from the two halves of each
/// block, so computing all of them costs O(count) per block. Blocks of at most `count` keys are
/// sorted when asked for; the larger ones are kept (about 2N / count of them).
struct EarliestNodes {
    let sorted: SortedKeys
    let count: Int
    /// By block, `lowerBound * (N + 1) + upperBound`.
    private var lists: [Int: [UInt32]] = [:]

    init(_ sorted: SortedKeys, count: Int) {
        self.sorted = sorted
        self.count = count
        _ = collect(0..<sorted.count, depth: 0)
    }

    /// The earliest nodes of `block`, a block `forEachBranching` yielded.
    func nodes(in block: Range<Int>) -> [UInt32] {
        if block.count <= count { return small(block) }
        guard let list = lists[key(block)] else { preconditionFailure("\(block) is not a block of the key trie") }
        return list
    }

    private func key(_ block: Range<Int>) -> Int { block.lowerBound * (sorted.count + 1) + block.upperBound }

    private func small(_ block: Range<Int>) -> [UInt32] {
        sorted.nodes[block].map { UInt32($0) }.sorted()
    }

    /// The earliest nodes of `block`, whose keys share their first `depth` bits; keeps those of
    /// every block larger than `count` below it.
    private mutating func collect(_ block: Range<Int>, depth: Int) -> [UInt32] {
        guard block.count > count else { return small(block) }
        var depth = depth
        while depth < KademliaKey.bitCount {
            let split = sorted.split(block, atBit: depth)
            depth += 1
            guard split > block.lowerBound, split < block.upperBound else { continue }
            let left = collect(block.lowerBound..<split, depth: depth)
            let right = collect(split..<block.upperBound, depth: depth)
            var merged: [UInt32] = []
            merged.reserveCapacity(count)
            var (i, j) = (0, 0)
            while merged.count < count, i < left.count || j < right.count {
                if j == right.count || (i < left.count && left[i] < right[j]) {
                    merged.append(left[i])
                    i += 1
                } else {
                    merged.append(right[j])
                    j += 1
                }
            }
            lists[key(block)] = merged
            return merged
        }
        preconditionFailure("keys of \(block) do not differ: node keys are distinct")
    }
}
