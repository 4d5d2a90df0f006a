import NIOCore

/// Verified resolutions, kept for a while so repeated `resolve`s of one name do not each run a
/// network lookup (spec/dht.md, "Cache").
///
/// The time an entry stays adapts to how often the name changes: each network resolution that finds
/// the same record as the cached one doubles the name's cache time (up to `maximumTTL`), one that
/// finds a different record halves it (down to `minimumTTL`). An entry never outlives its record.
/// At most `capacity` names are held; the least recently used goes first.
public struct ResolutionCache: Sendable {
    public struct Configuration: Hashable, Sendable {
        public var capacity = 4096
        public var initialTTL: TimeAmount = .seconds(60)
        public var minimumTTL: TimeAmount = .seconds(10)
        public var maximumTTL: TimeAmount = .hours(1)
        public init() {}
    }

    struct Entry: Sendable {
        var record: SignedAgentRecord
        var expires: NIODeadline
        var ttl: TimeAmount
        var lastUsed: UInt64
    }

    public let configuration: Configuration
    private var entries: [AgentName: Entry] = [:]
    private var clock: UInt64 = 0

    public init(configuration: Configuration = Configuration()) {
        precondition(configuration.capacity > 0, "cache capacity must be positive")
        self.configuration = configuration
    }

    public var count: Int { entries.count }

    /// The cached record for `name`, if its entry is fresh at `now` and the record has not expired at
    /// `unixNow` (seconds since the epoch).
    public mutating func lookup(_ name: AgentName, now: NIODeadline, unixNow: UInt64) -> SignedAgentRecord? {
        guard var entry = entries[name] else { return nil }
        guard now < entry.expires, !entry.record.record.isExpired(at: unixNow) else { return nil }
        clock += 1
        entry.lastUsed = clock
        entries[name] = entry
        return entry.record
    }

    /// Stores the result of a network resolution and adapts the name's cache time. Returns the time
    /// the entry will be kept.
    @discardableResult
    public mutating func store(
        _ record: SignedAgentRecord, for name: AgentName, now: NIODeadline, unixNow: UInt64
    ) -> TimeAmount {
        var ttl = configuration.initialTTL
        if let previous = entries[name] {
            let same = previous.record.bytes == record.bytes
                || (previous.record.record.publicKey == record.record.publicKey && previous.record.record.seq == record.record.seq)
            if same {
                ttl = min(previous.ttl * 2, configuration.maximumTTL)
            } else {
                ttl = max(TimeAmount.nanoseconds(previous.ttl.nanoseconds / 2), configuration.minimumTTL)
            }
        }
        let remaining = record.record.expires > unixNow ? record.record.expires - unixNow : 0
        let kept = min(ttl, .seconds(Int64(clamping: remaining)))
        clock += 1
        if entries[name] == nil, entries.count >= configuration.capacity, let victim = leastRecentlyUsed() {
            entries[victim] = nil
        }
        entries[name] = Entry(record: record, expires: now + kept, ttl: ttl, lastUsed: clock)
        return kept
    }

    /// Forgets `name` (its adaptive cache time too).
    public mutating func remove(_ name: AgentName) {
        entries[name] = nil
    }

    private func leastRecentlyUsed() -> AgentName? {
        entries.min { $0.value.lastUsed < $1.value.lastUsed }?.key
    }
}
