import Identity
import Logging
import NIOConcurrencyHelpers

@testable import Resolution

/// A `MemoryRecordStore` whose chosen operations fail with `.storage`, as a full disk or a broken
/// database file would make them: for the tests that storage errors are surfaced, never dropped.
final class FailingRecordStore: RecordStoring {
    enum Operation: Hashable, Sendable {
        case put, get, ownRecord, setOwnRecord, removeOwnRecord, setRegistration
    }

    private let base = MemoryRecordStore()
    private let failing = NIOLockedValueBox<Set<Operation>>([])

    var configuration: RecordStoreConfiguration { base.configuration }

    /// Makes `operations` fail from now on (and only them).
    func fail(_ operations: Set<Operation>) { failing.withLockedValue { $0 = operations } }

    private func check(_ operation: Operation) throws(ResolutionError) {
        if failing.withLockedValue({ $0.contains(operation) }) {
            throw ResolutionError(.storage, "record store (test): cannot \(operation): disk I/O error")
        }
    }

    func put(_ record: SignedAgentRecord, from sender: PeerID?, now: UInt64) throws(ResolutionError) -> RecordAcceptance
    {
        try check(.put)
        return try base.put(record, from: sender, now: now)
    }

    func get(_ name: AgentName, now: UInt64) throws(ResolutionError) -> SignedAgentRecord? {
        try check(.get)
        return try base.get(name, now: now)
    }

    func records(now: UInt64, limit: Int, storedBefore: UInt64?) throws(ResolutionError) -> [SignedAgentRecord] {
        try base.records(now: now, limit: limit, storedBefore: storedBefore)
    }

    func removeExpired(now: UInt64) throws(ResolutionError) -> Int { try base.removeExpired(now: now) }

    func count(now: UInt64) throws(ResolutionError) -> Int { try base.count(now: now) }

    func ownRecord(for name: AgentName) throws(ResolutionError) -> SignedAgentRecord? {
        try check(.ownRecord)
        return try base.ownRecord(for: name)
    }

    func setOwnRecord(_ record: SignedAgentRecord) throws(ResolutionError) {
        try check(.setOwnRecord)
        try base.setOwnRecord(record)
    }

    func ownRecords() throws(ResolutionError) -> [SignedAgentRecord] { try base.ownRecords() }

    func removeOwnRecord(for name: AgentName) throws(ResolutionError) {
        try check(.removeOwnRecord)
        try base.removeOwnRecord(for: name)
    }

    func setRegistration(_ registration: NameRegistration?, for name: AgentName) throws(ResolutionError) -> Bool {
        try check(.setRegistration)
        return try base.setRegistration(registration, for: name)
    }

    func registrations(dropInvalid: Bool) throws(ResolutionError) -> (
        registrations: [(name: AgentName, registration: NameRegistration)], dropped: [String]
    ) {
        try base.registrations(dropInvalid: dropInvalid)
    }
}

/// Log events kept for a test to assert on: level, message and the `name` metadata.
final class CapturedLog: Sendable {
    struct Event: Sendable {
        let level: Logger.Level
        let message: String
        let name: String?
    }

    private let events = NIOLockedValueBox<[Event]>([])

    /// A logger that records into this log, `debug` and up.
    func logger() -> Logger {
        Logger(label: "captured") { _ in Handler(log: self) }
    }

    /// The events at `level` whose `name` metadata is `name`.
    func events(level: Logger.Level, name: AgentName) -> [Event] {
        events.withLockedValue { $0.filter { $0.level == level && $0.name == name.value } }
    }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let name = (event.metadata?["name"] ?? metadata["name"]).map { "\($0)" }
            log.events.withLockedValue { $0.append(Event(level: event.level, message: "\(event.message)", name: name)) }
        }
    }
}
