import Multiformats
import NIOCore

/// The life cycle of the names this node publishes (spec/dht.md §7.1), as a value type with time
/// passed in: which names are kept published, how concurrent `register`, `unregister` and restore
/// calls on one name race, when a failed restore is tried again, and when an own record is due for
/// republishing. The first part of `KademliaBehaviour` (issue #14): no clock, lock, task or store
/// inside; the DHT holds it under its lock and performs the publishing and saving it decides.
///
/// Calls on one name race as "the last started wins" (three fixes, each a test in
/// `OwnNamesTests`):
/// - an `unregister` while a `register` is still publishing wins: the register keeps nothing
///   (`finishRegister` returns false);
/// - an `unregister` between a register keeping its name and saving its registration makes the
///   register take the save back (`mustUndoSave`);
/// - a restore started before an `unregister` or a newer `register` of the name does nothing
///   (`beginRegister(ifEpoch:)` returns nil).
struct OwnNames {
    /// What a name publishes, and how its last publish went.
    struct Entry: Equatable {
        /// The addresses to publish; nil follows the host's.
        var addresses: [Multiaddr]?
        /// The protocols to publish; nil follows the host's.
        var protocols: [String]?
        var ttl: UInt32
        /// Replicas that took the last publish, and the routing table's size then.
        var replicas = 0
        var tableSizeAtPublish = 0
    }

    /// A `register` in progress: what it must show to keep its name.
    struct Ticket: Equatable {
        let name: AgentName
        let epoch: UInt64
        let unregistrations: UInt64
    }

    /// The rules the decisions follow (from `DHTConfiguration`).
    struct Rules {
        /// r: replicas an own record should reach.
        var replicationFactor: Int
        /// Republish once this fraction of a record's TTL has passed.
        var republishFraction: Double
        /// Back-off of a failed restore: 1, 2, 4 … at most 2^`maximumBackoffDoublings` times this.
        var restoreBackoff: TimeAmount = .minutes(1)
        var maximumBackoffDoublings = 6
    }

    let rules: Rules
    private(set) var names: [AgentName: Entry] = [:]
    /// Bumped when a `register` starts and by each `unregister`.
    private(set) var epochs: [AgentName: UInt64] = [:]
    /// Bumped by each `unregister`.
    private var unregistrations: [AgentName: UInt64] = [:]
    /// The epoch of the register that kept each name: while `epochs` holds a later one, a call on
    /// the name is in progress.
    private var keptEpochs: [AgentName: UInt64] = [:]
    /// Saved names whose restore failed: failures in a row, and when the next try is due.
    private var restoreFailures: [AgentName: (count: Int, retryAt: NIODeadline)] = [:]
    /// A republish after the table grew is pending (at most one at a time).
    private(set) var growthRepublishPending = false

    init(rules: Rules) {
        self.rules = rules
    }

    /// The names kept published, sorted.
    var registered: [AgentName] { names.keys.sorted() }

    // MARK: Register, unregister, restore

    /// A `register` of `name` starts. With `ifEpoch` (a restore, which read the epochs before the
    /// saved registrations), nothing starts (nil) when another call on the name started since, or
    /// the name is published already.
    mutating func beginRegister(_ name: AgentName, ifEpoch expected: UInt64? = nil) -> Ticket? {
        let current = epochs[name, default: 0]
        if let expected, current != expected || names[name] != nil { return nil }
        epochs[name] = current &+ 1
        return Ticket(name: name, epoch: current &+ 1, unregistrations: unregistrations[name, default: 0])
    }

    /// The register of `ticket` published its record: the name is kept, with `entry`, unless
    /// another call on it started meanwhile (then the record is out, but nothing is kept).
    /// - Returns: whether the name was kept.
    mutating func finishRegister(_ ticket: Ticket, entry: Entry) -> Bool {
        guard epochs[ticket.name, default: 0] == ticket.epoch else { return false }
        names[ticket.name] = entry
        keptEpochs[ticket.name] = ticket.epoch
        return true
    }

    /// After the register of `ticket` saved its registration: whether an `unregister` came
    /// between keeping the name and saving it (it cleared the store already, or found nothing to
    /// clear), so that the save must be taken back.
    func mustUndoSave(_ ticket: Ticket) -> Bool {
        unregistrations[ticket.name, default: 0] != ticket.unregistrations
    }

    /// `name` is unregistered: no longer kept, and any call on it in progress loses.
    /// - Returns: whether it was kept published.
    mutating func unregister(_ name: AgentName) -> Bool {
        epochs[name, default: 0] &+= 1
        unregistrations[name, default: 0] &+= 1
        keptEpochs[name] = nil
        return names.removeValue(forKey: name) != nil
    }

    /// Whether a restore of `name` is due at `now` (with back-off, a failed one waits).
    func restoreDue(_ name: AgentName, now: NIODeadline) -> Bool {
        guard let failure = restoreFailures[name] else { return true }
        return now >= failure.retryAt
    }

    /// A restore of `name` published it (or found it published).
    mutating func restoreSucceeded(_ name: AgentName) {
        restoreFailures[name] = nil
    }

    /// A restore of `name` failed at `now`: the next try waits 1, 2, 4 … up to 64 back-off units.
    /// - Returns: the failures in a row.
    mutating func restoreFailed(_ name: AgentName, now: NIODeadline) -> Int {
        let count = (restoreFailures[name]?.count ?? 0) + 1
        let wait = rules.restoreBackoff * Int64(1 << min(count - 1, rules.maximumBackoffDoublings))
        restoreFailures[name] = (count, now + wait)
        return count
    }

    // MARK: Republishing

    /// What a republish of `name` signs now: its kept entry, or nil when the name is no longer
    /// kept or a `register` or `unregister` of it is in progress (a call started after the name
    /// was kept wins, and publishes what its caller asked for). The republish of an upkeep round
    /// reads this when it signs, not when the round started: a `register` with new addresses that
    /// finished meanwhile must not be overwritten by the round's stale copy of the entry.
    func republishable(_ name: AgentName) -> Entry? {
        guard let entry = names[name], epochs[name, default: 0] == keptEpochs[name] else { return nil }
        return entry
    }

    /// A publish of `name` reached `replicas` replicas while the table held `tableSize` peers.
    mutating func published(_ name: AgentName, replicas: Int, tableSize: Int) {
        names[name]?.replicas = replicas
        names[name]?.tableSizeAtPublish = tableSize
    }

    /// Whether `name` (kept, with `entry`) is due for a republish (spec/dht.md §7.1): forced, no
    /// own record, at least `republishFraction` of its TTL gone, addresses that no longer match
    /// the host's (when it follows them), no replica at all while the table has peers, or fewer
    /// than r replicas while the table has grown.
    func isDue(
        _ entry: Entry, current: SignedAgentRecord?, hostAddresses: [Multiaddr], tableSize: Int, unixNow: UInt64,
        force: Bool
    ) -> Bool {
        guard !force, let current else { return true }
        let age = Double(unixNow &- current.record.timestamp)
        if age >= Double(current.record.ttl) * rules.republishFraction { return true }
        if entry.addresses == nil,
            current.record.addresses != Array(hostAddresses.prefix(RecordLimits.maximumAddresses))
        {
            return true
        }
        // Taken by no replica while peers were known (every request timed out in a jam, or the
        // replicas refused it): tried again at every maintenance round until one holds it, not
        // half a TTL later (a name no replica holds cannot be resolved; the 100-node messaging
        // test lost its first names this way).
        if entry.replicas == 0, tableSize > 0 { return true }
        // Published while the network was smaller (e.g. the first node): the routing table has
        // grown since, so more peers can hold it now.
        return entry.replicas < rules.replicationFactor && tableSize > entry.tableSizeAtPublish
    }

    /// A peer joined a table of `tableSize` entries: whether to republish soon (spec/dht.md §7.1:
    /// a table of at most r entries while an own name reached fewer than r replicas, at most one
    /// pending). A true answer marks it pending until `growthRepublishStarted`.
    mutating func republishAfterGrowth(tableSize: Int) -> Bool {
        guard !growthRepublishPending, tableSize <= rules.replicationFactor,
            names.values.contains(where: { $0.replicas < rules.replicationFactor })
        else { return false }
        growthRepublishPending = true
        return true
    }

    /// The pending republish after growth starts; another may be scheduled from now on.
    mutating func growthRepublishStarted() {
        growthRepublishPending = false
    }
}
