import NIOCore

/// When the jobs of `KademliaBehaviour` run (spec/dht.md §7), after rust-libp2p's `jobs.rs`: the
/// behaviour says when a round is due (`.runJob`), the driver runs it and reports `.jobFinished`.
///
/// - upkeep, every `maintenanceInterval` after the previous round ended: refresh the due buckets,
///   republish due own records, retry failed restores, drop expired provider records;
/// - re-replication, every `replicationInterval` from the start of one round to the start of the
///   next (the first one interval after maintenance starts; a round longer than the interval is
///   followed at once by the next), in a round of its own so that a long one (10,000 records
///   whose replicas answer slowly) never delays a republish, a refresh or a restore (issue #10,
///   finding 6);
/// - a republish half a second after the table grew while own names reached fewer than r replicas
///   (the first node of a network publishes to nobody), whether or not maintenance runs.
struct JobSchedule: Sendable {
    /// How long after the table grew own records are republished.
    static let growthRepublishDelay: TimeAmount = .milliseconds(500)

    var maintenanceEnabled = false
    var nextUpkeep: NIODeadline?
    var upkeepRunning = false
    var nextReplication: NIODeadline?
    var replicationRunning = false
    var growthRepublishAt: NIODeadline?

    /// The earliest of the pending deadlines (no allocation: drivers ask after every event).
    var nextDeadline: NIODeadline? {
        var earliest = growthRepublishAt
        func consider(_ deadline: NIODeadline?) {
            guard let deadline else { return }
            earliest = earliest.map { Swift.min($0, deadline) } ?? deadline
        }
        if maintenanceEnabled {
            if !upkeepRunning { consider(nextUpkeep) }
            if !replicationRunning { consider(nextReplication) }
        }
        return earliest
    }
}

extension KademliaBehaviour {
    mutating func setMaintenance(_ enabled: Bool, now: NIODeadline) {
        guard enabled != jobs.maintenanceEnabled else { return }
        jobs.maintenanceEnabled = enabled
        if enabled {
            jobs.nextUpkeep = now + configuration.maintenanceInterval
            jobs.nextReplication = now + configuration.replicationInterval
        }
    }

    mutating func jobFinished(_ job: KademliaJobKind, now: NIODeadline) {
        switch job {
        case .upkeep:
            jobs.upkeepRunning = false
            jobs.nextUpkeep = now + configuration.maintenanceInterval
        case .replication:
            jobs.replicationRunning = false
        case .republishAfterGrowth:
            break
        }
    }

    mutating func runDueJobs(now: NIODeadline, into actions: inout [Action]) {
        if let at = jobs.growthRepublishAt, at <= now {
            jobs.growthRepublishAt = nil
            ownNames.growthRepublishStarted()
            actions.append(.runJob(.republishAfterGrowth))
        }
        guard jobs.maintenanceEnabled else { return }
        if !jobs.upkeepRunning, let at = jobs.nextUpkeep, at <= now {
            jobs.upkeepRunning = true
            providers.removeExpired(now: now)
            actions.append(.runJob(.upkeep(refresh: table.refreshTargets(now: now, using: &random))))
        }
        if !jobs.replicationRunning, let at = jobs.nextReplication, at <= now {
            jobs.replicationRunning = true
            jobs.nextReplication = now + configuration.replicationInterval
            actions.append(.runJob(.replication))
        }
    }
}
