import NIOCore
import Resolution

extension Simulation {
    /// Node `index` comes online and bootstraps as agentd does (spec/dht.md §10): a self-lookup
    /// seeded with `bootstrap`, whose answering peers fill its routing table; then it publishes its
    /// own name, and its maintenance rounds start a round later.
    func join(_ index: Int, through bootstrap: Int?, completion: ((Simulation) -> Void)? = nil) {
        setOnline(index, true)
        let seeds = bootstrap.map { [nodes[$0].peer] } ?? []
        startLookup(from: index, target: nodes[index].peer.key, request: .findNode, extraSeeds: seeds) {
            simulation, _ in
            if simulation.nodes[index].ownName != nil {
                simulation.publishOwnRecord(of: index) { simulation in
                    simulation.withNode(index) { $0.publishedAt = simulation.now }
                    completion?(simulation)
                }
            } else {
                completion?(simulation)
            }
        }
        scheduleMaintenance(of: index, after: parameters.maintenanceInterval)
    }

    /// Node `index` leaves abruptly: it stops answering and never says goodbye. Afterwards it
    /// refuses connections at once if `refuses`, else it never answers.
    func leave(_ index: Int, refuses: Bool) {
        setOnline(index, false)
        withNode(index) { $0.refusesWhenOffline = refuses }
    }

    /// Starts node `index`'s maintenance rounds (if not running) after `delay`.
    func scheduleMaintenance(of index: Int, after delay: TimeAmount) {
        guard maintenance.isActive, !nodes[index].maintenanceScheduled else { return }
        withNode(index) { $0.maintenanceScheduled = true }
        schedule(after: delay) { $0.maintain(index) }
    }

    /// One maintenance round (spec/dht.md §10): bucket refresh (lookups for buckets no lookup
    /// touched for an hour, plus a self-lookup), republishing own records at half their TTL,
    /// and once an hour pushing stored records to the current closest nodes.
    private func maintain(_ index: Int) {
        withNode(index) { $0.maintenanceScheduled = false }
        guard nodes[index].isOnline, maintenance.isActive else { return }
        if maintenance.refreshBuckets {
            let targets = withNode(index) { node in node.table.refreshTargets(now: now, using: &generator) }
            if !targets.isEmpty {
                runLookups([nodes[index].peer.key] + targets.map(\.key), from: index)
            }
        }
        if maintenance.republishOwnRecords, let record = nodes[index].ownRecord {
            let age = Double(unixNow - record.record.timestamp)
            if age >= Double(record.record.ttl) * parameters.republishFraction { publishOwnRecord(of: index) }
        }
        if maintenance.replicateStoredRecords {
            if let last = nodes[index].lastReplication {
                if now - last >= parameters.replicationInterval {
                    withNode(index) { $0.lastReplication = now }
                    replicateStoredRecords(of: index)
                }
            } else {
                withNode(index) { $0.lastReplication = now }
            }
        }
        scheduleMaintenance(of: index, after: parameters.maintenanceInterval)
    }

    /// FIND_NODE lookups for `targets`, one after the other (as `DHT.refreshBuckets` awaits each).
    private func runLookups(_ targets: [KademliaKey], from index: Int) {
        guard let target = targets.first else { return }
        startLookup(from: index, target: target, request: .findNode) { simulation, _ in
            simulation.runLookups(Array(targets.dropFirst()), from: index)
        }
    }

    /// Builds a network of `count` nodes the way a real one grows: node 0 starts alone, the others
    /// join one every `spacing` through one of the first four nodes (the bootstrap list), and every
    /// node runs its maintenance rounds (bucket refresh) while the network grows and for
    /// `settle` after the last join. Returns the network idle, maintenance off, and the messages the
    /// growth took.
    static func build(
        nodes count: Int, parameters: NetworkParameters, seed: UInt64, spacing: TimeAmount = .seconds(1),
        settle: TimeAmount = .minutes(5)
    ) -> (snapshot: NetworkSnapshot, traffic: TrafficCounters) {
        let simulation = Simulation(
            parameters: parameters, seed: seed, generator: SimulationGenerator(seed: seed, 0x6275_696c_64))
        simulation.maintenance = .refreshOnly
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
        simulation.maintenance = .none
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
    static func buildDirect(nodes count: Int, parameters: NetworkParameters, seed: UInt64) -> NetworkSnapshot {
        let simulation = Simulation(
            parameters: parameters, seed: seed, generator: SimulationGenerator(seed: seed, 0x6469_7265_6374))
        for _ in 0..<count { simulation.createNode() }
        let keys = simulation.keySpace.keys
        let sorted = SortedKeys(keys)
        let wanted = parameters.routingTable.bucketSize + parameters.routingTable.replacementCacheSize
        var picks: [Int] = []
        picks.reserveCapacity(4 * wanted)
        for index in 0..<count {
            let key = keys[index]
            var outer = 0..<sorted.count
            for length in 0..<KademliaKey.bitCount {
                guard outer.count > 1 else { break }
                let inner = sorted.block(of: key, prefixLength: length + 1)
                // The keys sharing exactly `length` bits with ours: `outer` without `inner`, on one side.
                let bucket =
                    inner.lowerBound > outer.lowerBound
                    ? outer.lowerBound..<inner.lowerBound : inner.upperBound..<outer.upperBound
                outer = inner
                guard !bucket.isEmpty else { continue }
                // The `wanted` earliest nodes of the bucket's part: from the part itself when it is
                // small, else by walking nodes in order until enough fell in the part (about
                // wanted · count / part nodes); either way at most about sqrt(wanted · count) steps.
                picks.removeAll(keepingCapacity: true)
                if bucket.count * bucket.count <= wanted * count {
                    picks.append(contentsOf: sorted.nodes[bucket])
                    picks.sort()
                    if picks.count > wanted { picks.removeLast(picks.count - wanted) }
                } else {
                    var node = 0
                    while picks.count < wanted, node < count {
                        if node != index, keys[node].commonPrefixLength(with: key) == length { picks.append(node) }
                        node += 1
                    }
                }
                let now = simulation.now
                simulation.withNode(index) { node in
                    for pick in picks { _ = node.table.add(VirtualPeer(index: pick), evidence: .answeredRequest, now: now) }
                }
            }
            simulation.setOnline(index, true)
        }
        return simulation.snapshot
    }
}
