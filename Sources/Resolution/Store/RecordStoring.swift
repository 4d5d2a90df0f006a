import Identity

/// Limits of a record store, the same for every implementation of `RecordStoring`.
public struct RecordStoreConfiguration: Sendable {
    /// Most records held in total.
    public var maximumRecords = 100_000
    /// Most records whose current version was stored from one peer (the peer that sent the
    /// PUT), so that one peer cannot take the whole store. Local puts (no sender) are exempt.
    public var maximumRecordsPerSender = 1_000

    public init() {}

    /// The refusal of a new name when the store holds `held` other records.
    func totalQuotaError(held: Int, name: String) -> ResolutionError {
        ResolutionError(
            .storeFull,
            "the record store is full: it holds \(held) records and its total quota is \(maximumRecords); \(name) was not stored"
        )
    }

    /// The refusal of a new name from `sender`, who has `held` records in the store.
    func senderQuotaError(sender: String, held: Int, name: String) -> ResolutionError {
        ResolutionError(
            .storeFull,
            "peer \(sender) has \(held) records in the record store, its per-sender quota of \(maximumRecordsPerSender); \(name) was not stored"
        )
    }
}

/// Where a node keeps the DHT records it stores for others and its own published records
/// (spec/dht.md §5): the SQLite `RecordStore` for agentd, the in-memory `MemoryRecordStore` for
/// tests and the simulator. Both apply the same rules, checked by one test suite run against both
/// (`RecordStoreTests`):
/// - every offered record goes through `RecordSelection.select` against the record held for its
///   name (an expired held record is a lapsed claim), so a store only ever holds the winner of the
///   ownership rules (spec/records.md §5);
/// - a name the store does not hold takes a place under two quotas, the total and the sending
///   peer's share (`RecordStoreConfiguration`); expired records still count until they are
///   removed, and are removed before a new name is refused; updates of held names never hit a quota;
/// - own records survive expiry; a registration lives with its own record and goes with it.
///
/// Calls are synchronous and may come from any task; every failure is a `ResolutionError`
/// (`.storage` for the medium, the rules' own kinds for a rejection), never dropped.
public protocol RecordStoring: AnyObject, Sendable {
    /// The limits this store enforces.
    var configuration: RecordStoreConfiguration { get }

    /// Offers `record`, received from `sender` (nil when it is the node's own), at time `now`.
    /// An accepted record replaces the held one, except an `.identical` one, which changes nothing.
    /// - Returns: why the record was accepted.
    /// - Throws: the rejection of `RecordSelection.select` unchanged (`.staleSeq`, `.nameHeld`,
    ///   `.expired`, …); `.storeFull` when a name the store does not hold would exceed the total or
    ///   the sender's quota; `.storage`.
    @discardableResult
    func put(_ record: SignedAgentRecord, from sender: PeerID?, now: UInt64) throws(ResolutionError) -> RecordAcceptance

    /// The held, unexpired record for `name` at `now`, or nil.
    func get(_ name: AgentName, now: UInt64) throws(ResolutionError) -> SignedAgentRecord?

    /// Unexpired records for re-replication, at most `limit`, least recently stored first (ties by
    /// name); with `storedBefore`, only records whose current version was stored before that time.
    func records(now: UInt64, limit: Int, storedBefore: UInt64?) throws(ResolutionError) -> [SignedAgentRecord]

    /// Deletes the records expired at `now`; returns how many.
    @discardableResult
    func removeExpired(now: UInt64) throws(ResolutionError) -> Int

    /// The number of unexpired records at `now`.
    func count(now: UInt64) throws(ResolutionError) -> Int

    /// The last record the node published for `name`, even if it has expired; nil if none.
    func ownRecord(for name: AgentName) throws(ResolutionError) -> SignedAgentRecord?

    /// Saves `record` as the node's own record for its name, replacing the previous one (and
    /// keeping the name's registration).
    func setOwnRecord(_ record: SignedAgentRecord) throws(ResolutionError)

    /// Every own record, ordered by name.
    func ownRecords() throws(ResolutionError) -> [SignedAgentRecord]

    /// Forgets the own record for `name` and its registration; nothing happens if there is none.
    func removeOwnRecord(for name: AgentName) throws(ResolutionError)

    /// Marks `name` as registered (published again after a restart, with `registration`'s
    /// parameters) or, with `nil`, as not.
    /// - Returns: whether the name was registered before.
    /// - Throws: `.notFound` when registering a name without an own record (clearing one is a
    ///   no-op that returns false); `.storage`.
    @discardableResult
    func setRegistration(_ registration: NameRegistration?, for name: AgentName) throws(ResolutionError) -> Bool

    /// The registered names and their parameters, ordered by name. A registration that is not
    /// valid (a ttl out of `RecordLimits`' range, parameters that do not decode) is left out, with
    /// the reason returned, and with `dropInvalid` also unregistered.
    func registrations(dropInvalid: Bool) throws(ResolutionError) -> (
        registrations: [(name: AgentName, registration: NameRegistration)], dropped: [String]
    )
}

extension RecordStoring {
    /// The held, unexpired record for a kad record key (`"/agent/" ‖ name`, spec/records.md §2), as
    /// the GET_VALUE handler receives it; nil for a key that is not a valid agent record key.
    /// - Throws: `.storage`.
    public func get(recordKey: [UInt8], now: UInt64) throws(ResolutionError) -> SignedAgentRecord? {
        guard let name = AgentName(recordKey: recordKey) else { return nil }
        return try get(name, now: now)
    }

    /// `records(now:limit:storedBefore:)` without a cut-off.
    public func records(now: UInt64, limit: Int) throws(ResolutionError) -> [SignedAgentRecord] {
        try records(now: now, limit: limit, storedBefore: nil)
    }

    /// `registrations(dropInvalid:)`, dropping invalid registrations.
    public func registrations() throws(ResolutionError) -> (
        registrations: [(name: AgentName, registration: NameRegistration)], dropped: [String]
    ) {
        try registrations(dropInvalid: true)
    }
}
