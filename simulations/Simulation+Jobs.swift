import NIOCore
import Resolution

/// The behaviour's own jobs (spec/dht.md §7, `KademliaBehaviour+Jobs.swift`) on the virtual
/// clock, as agentd's `DHT` service runs them (`run()`, `rearm`, `run(_ job:)`): the driver turns
/// them on with `.maintenance(enabled:)`, keeps one timer per node at the behaviour's
/// `nextDeadline` and sends `.timer` when it comes; each `.runJob` round is performed and reported
/// with `.jobFinished`:
/// - upkeep: the refresh lookups of the buckets the table names (a self-lookup, then a FIND_NODE
///   query per stale bucket for a key whose hash lies in it), then the own record republished when
///   due;
/// - replication: the store's records pushed to their current r closest (`replicateStoredRecords`);
/// - republish after growth: the own record republished when due.
///
/// A node that goes offline in the middle of a round never finishes it: its queries are dropped,
/// as a stopped host's tasks are.
extension Simulation {
    /// Starts node `index`'s jobs (`DHT.run()`, `setMaintenance`): the first upkeep comes one
    /// `maintenanceInterval` later, the first re-replication one `replicationInterval` later.
    func startJobs(of index: Int) {
        feed(index, .maintenance(enabled: true))
    }

    /// Stops node `index`'s periodic jobs (rounds under way run to their end).
    func stopJobs(of index: Int) {
        feed(index, .maintenance(enabled: false))
    }

    /// Arms node `index`'s job timer at its behaviour's `nextDeadline` when that is earlier than
    /// the timer armed (as `DHT.rearm`); a timer replaced by an earlier one is dropped when it
    /// fires, and the earlier one arms the next deadline after its `.timer`.
    func rearmJobTimer(of index: Int) {
        // In place: reading `nodes[index].kad` by value would copy the behaviour at every event.
        let next = withNode(index) { node -> NIODeadline? in
            guard let next = node.kad.nextDeadline else { return nil }
            if let armed = node.jobTimer, armed <= next { return nil }
            node.jobTimer = next
            return next
        }
        guard let next else { return }
        schedule(at: next) { simulation in
            guard simulation.nodes[index].jobTimer == next else { return }
            simulation.withNode(index) { $0.jobTimer = nil }
            guard simulation.nodes[index].isOnline else { return }
            simulation.feed(index, .timer)
        }
    }

    /// Performs one job round of node `index` and reports its end (`DHT.run(_ job:)`).
    func runJob(_ job: KademliaJob, at index: Int) {
        switch job {
        case .upkeep(let targets):
            refresh(targets, at: index) { simulation in
                simulation.republishIfDue(index) { simulation in
                    simulation.feed(index, .jobFinished(.upkeep))
                }
            }
        case .replication:
            replicateStoredRecords(of: index) { simulation, _ in
                simulation.feed(index, .jobFinished(.replication))
            }
        case .republishAfterGrowth:
            republishIfDue(index) { simulation in
                simulation.feed(index, .jobFinished(.republishAfterGrowth))
            }
        }
    }

    /// The refresh lookups of `targets`, one after the other (`DHT.refresh`): none when no bucket
    /// is stale (a bucket that a lookup touched within the refresh interval is not named: the
    /// routing table's `recordLookup` marks it at every query's start), else a self-lookup, then
    /// one FIND_NODE query per bucket for random bytes whose SHA-256 lies in it.
    func refresh(
        _ targets: [RoutingTable.RefreshTarget], at index: Int, completion: @escaping (Simulation) -> Void
    ) {
        guard !targets.isEmpty else {
            completion(self)
            return
        }
        findClosest(from: index, key: nodes[index].peer.id.multihash.bytes) { simulation, _ in
            simulation.refreshBuckets(targets[...], at: index, completion: completion)
        }
    }

    private func refreshBuckets(
        _ targets: ArraySlice<RoutingTable.RefreshTarget>, at index: Int, completion: @escaping (Simulation) -> Void
    ) {
        guard let target = targets.first else {
            completion(self)
            return
        }
        let localKey = nodes[index].table.localKey
        guard let key = DHT.preimage(inBucket: target.bucket, from: localKey, using: &generator) else {
            refreshBuckets(targets.dropFirst(), at: index, completion: completion)
            return
        }
        findClosest(from: index, key: key) { simulation, _ in
            simulation.refreshBuckets(targets.dropFirst(), at: index, completion: completion)
        }
    }

    /// Republishes node `index`'s own record if it is due (`OwnNames.isDue` for a record that
    /// follows no host addresses: `republishFraction` of its TTL gone, or never published).
    func republishIfDue(_ index: Int, completion: @escaping (Simulation) -> Void) {
        guard let name = nodes[index].ownName else {
            completion(self)
            return
        }
        if let current = ownRecord(of: index, for: name) {
            let age = Double(unixNow &- current.record.timestamp)
            guard age >= Double(current.record.ttl) * parameters.republishFraction else {
                completion(self)
                return
            }
        }
        publishOwnRecord(of: index) { simulation, _ in completion(simulation) }
    }
}
