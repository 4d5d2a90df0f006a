import Identity
import NIOConcurrencyHelpers

/// A `RecordStoring` held in memory, for tests and the simulator: the same rules and quotas as
/// the SQLite `RecordStore` (the shared suite in `RecordStoreTests` runs against both), nothing
/// kept across restarts, and a put in O(1) apart from the ownership check.
///
/// Thread-safe: every call runs under one lock (a call is a few dictionary operations; nothing
/// waits inside it).
public final class MemoryRecordStore: RecordStoring {
    public let configuration: RecordStoreConfiguration
    private let state: NIOLockedValueBox<State>

    private struct Held {
        var record: SignedAgentRecord
        /// The peer that sent the PUT of this version; nil: a local put.
        var sender: PeerID?
        /// When this version was stored, seconds since the epoch.
        var storedAt: UInt64
    }

    private struct Own {
        var record: SignedAgentRecord
        var registration: NameRegistration?
    }

    private struct State {
        var records: [AgentName: Held] = [:]
        /// Rows per sender (expired ones included until removed), as the quota counts them.
        var perSender: [PeerID: Int] = [:]
        var own: [AgentName: Own] = [:]

        mutating func remove(_ name: AgentName) {
            guard let held = records.removeValue(forKey: name) else { return }
            if let sender = held.sender {
                perSender[sender, default: 0] -= 1
                if perSender[sender] == 0 { perSender[sender] = nil }
            }
        }

        mutating func removeExpired(now: UInt64) -> Int {
            let expired = records.compactMap { $0.value.record.record.expires < now ? $0.key : nil }
            for name in expired { remove(name) }
            return expired.count
        }

        /// The quota a new row for `name` from `sender` would break, if any (a row already there
        /// for `name` is replaced, so it does not count), as `RecordStore.quotaViolation`.
        func quotaViolation(
            name: AgentName, sender: PeerID?, configuration: RecordStoreConfiguration
        ) -> ResolutionError? {
            let held = records[name]
            let others = held == nil ? records.count : records.count - 1
            guard others < configuration.maximumRecords else {
                return configuration.totalQuotaError(held: others, name: name.value)
            }
            guard let sender else { return nil }
            var fromSender = perSender[sender, default: 0]
            if held?.sender == sender { fromSender -= 1 }
            guard fromSender < configuration.maximumRecordsPerSender else {
                return configuration.senderQuotaError(sender: sender.description, held: fromSender, name: name.value)
            }
            return nil
        }
    }

    public init(configuration: RecordStoreConfiguration = .init()) {
        self.configuration = configuration
        self.state = NIOLockedValueBox(State())
    }

    private init(configuration: RecordStoreConfiguration, state: State) {
        self.configuration = configuration
        self.state = NIOLockedValueBox(state)
    }

    /// A store holding what this one holds now (records with their senders and times, own
    /// records, registrations), which then goes its own way: the simulator continues several runs
    /// from one snapshot of a network.
    public func copy() -> MemoryRecordStore {
        MemoryRecordStore(configuration: configuration, state: state.withLockedValue { $0 })
    }

    @discardableResult
    public func put(_ record: SignedAgentRecord, from sender: PeerID?, now: UInt64) throws(ResolutionError)
        -> RecordAcceptance
    {
        let name = record.record.name
        let configuration = configuration
        let outcome = state.withLockedValue { state -> Result<RecordAcceptance, ResolutionError> in
            let reason: RecordAcceptance
            switch RecordSelection.select(existing: state.records[name]?.record, incoming: record, now: now) {
            case .reject(let error): return .failure(error)
            case .accept(.identical): return .success(.identical)
            case .accept(let accepted): reason = accepted
            }
            if reason == .firstClaim || reason == .previousClaimLapsed,
                state.quotaViolation(name: name, sender: sender, configuration: configuration) != nil
            {
                // Expired records still count until removed; remove them before refusing.
                _ = state.removeExpired(now: now)
                if let violation = state.quotaViolation(name: name, sender: sender, configuration: configuration) {
                    return .failure(violation)
                }
            }
            state.remove(name)
            if let sender { state.perSender[sender, default: 0] += 1 }
            state.records[name] = Held(record: record, sender: sender, storedAt: now)
            return .success(reason)
        }
        return try outcome.get()
    }

    public func get(_ name: AgentName, now: UInt64) throws(ResolutionError) -> SignedAgentRecord? {
        state.withLockedValue { state in
            guard let record = state.records[name]?.record, !record.record.isExpired(at: now) else { return nil }
            return record
        }
    }

    public func records(now: UInt64, limit: Int, storedBefore: UInt64?) throws(ResolutionError) -> [SignedAgentRecord] {
        guard limit > 0 else { return [] }
        let live = state.withLockedValue { state in
            state.records.values.filter { held in
                !held.record.record.isExpired(at: now) && storedBefore.map { held.storedAt < $0 } ?? true
            }
        }
        // Least recently stored first, ties by name: the order `RecordStore` lists in.
        let ordered = live.sorted {
            ($0.storedAt, $0.record.record.name.value) < ($1.storedAt, $1.record.record.name.value)
        }
        return ordered.prefix(limit).map(\.record)
    }

    @discardableResult
    public func removeExpired(now: UInt64) throws(ResolutionError) -> Int {
        state.withLockedValue { $0.removeExpired(now: now) }
    }

    public func count(now: UInt64) throws(ResolutionError) -> Int {
        state.withLockedValue { state in state.records.values.count { !$0.record.record.isExpired(at: now) } }
    }

    public func ownRecord(for name: AgentName) throws(ResolutionError) -> SignedAgentRecord? {
        state.withLockedValue { $0.own[name]?.record }
    }

    public func setOwnRecord(_ record: SignedAgentRecord) throws(ResolutionError) {
        state.withLockedValue { state in
            let name = record.record.name
            state.own[name] = Own(record: record, registration: state.own[name]?.registration)
        }
    }

    public func ownRecords() throws(ResolutionError) -> [SignedAgentRecord] {
        state.withLockedValue { state in
            state.own.sorted { $0.key < $1.key }.map(\.value.record)
        }
    }

    public func removeOwnRecord(for name: AgentName) throws(ResolutionError) {
        state.withLockedValue { _ = $0.own.removeValue(forKey: name) }
    }

    @discardableResult
    public func setRegistration(_ registration: NameRegistration?, for name: AgentName) throws(ResolutionError) -> Bool
    {
        let outcome = state.withLockedValue { state -> Result<Bool, ResolutionError> in
            guard var own = state.own[name] else {
                guard registration == nil else {
                    return .failure(ResolutionError(.notFound, "no own record for \(name) to register"))
                }
                return .success(false)
            }
            let was = own.registration != nil
            own.registration = registration
            state.own[name] = own
            return .success(was)
        }
        return try outcome.get()
    }

    public func registrations(dropInvalid: Bool) throws(ResolutionError) -> (
        registrations: [(name: AgentName, registration: NameRegistration)], dropped: [String]
    ) {
        state.withLockedValue { state in
            var registrations: [(name: AgentName, registration: NameRegistration)] = []
            var dropped: [String] = []
            for name in state.own.keys.sorted() {
                guard let registration = state.own[name]?.registration else { continue }
                // The rule `RecordStore` applies to a saved row: a ttl out of range is not a registration.
                guard (RecordLimits.minimumTTL...RecordLimits.maximumTTL).contains(registration.ttl) else {
                    dropped.append("\(name): ttl \(registration.ttl) out of range")
                    if dropInvalid { state.own[name]?.registration = nil }
                    continue
                }
                registrations.append((name, registration))
            }
            return (registrations, dropped)
        }
    }
}
