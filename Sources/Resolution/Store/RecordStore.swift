import Foundation
import GRDB
import Identity

/// The records this node stores for the DHT, in SQLite: one record per name, kept until it expires
/// and across restarts, plus the node's own published records (`RecordStore+OwnRecords.swift`).
///
/// Every offered record goes through `RecordSelection.select` against the record held for its name
/// (spec/records.md §5), so the store only ever holds the winner of the ownership rules. Quotas bound
/// the table against a peer (or many) filling it with names: a total, and a share per sending peer.
///
/// Thread-safe: all calls are synchronous and run one at a time on one SQLite connection.
public final class RecordStore: RecordStoring {
    /// Limits of the store.
    public typealias Configuration = RecordStoreConfiguration

    /// The limits this store enforces.
    public let configuration: Configuration
    /// The database file, or nil for an in-memory store.
    public let path: String?
    private let queue: DatabaseQueue

    /// Opens the store in the SQLite database at `path`, creating the file (mode 0600) and the
    /// tables as needed; `nil` opens a private in-memory database that lives as long as the store.
    /// - Throws: `.storage` with the path and SQLite's (or the system's) reason.
    public init(path: String?, configuration: Configuration = .init()) throws(ResolutionError) {
        self.configuration = configuration
        self.path = path
        do {
            var options = GRDB.Configuration()
            options.label = "RecordStore"
            if let path {
                try RecordStoreSchema.createFile(at: path)
                // WAL with synchronous=NORMAL: a commit costs no fsync. A crash may lose the last
                // few stores, which their holders republish anyway; it never corrupts the file.
                options.journalMode = .wal
                queue = try DatabaseQueue(path: path, configuration: options)
            } else {
                queue = try DatabaseQueue(configuration: options)
            }
            try RecordStoreSchema.migrator.migrate(queue)
        } catch let error as ResolutionError {
            throw error
        } catch {
            throw Self.storageError(path: path, action: "open", error)
        }
    }

    /// Offers `record`, received from `sender` (nil when it is the node's own), at time `now`.
    ///
    /// The record is checked with `RecordSelection.select` against the one held for its name (an
    /// expired held record is a lapsed claim). An accepted record replaces the held one, except an
    /// `.identical` one, which changes nothing.
    /// - Returns: why the record was accepted.
    /// - Throws: the rejection of `select` unchanged (`.staleSeq`, `.nameHeld`, `.expired`, …);
    ///   `.storeFull` when a name the store does not hold would exceed the total or the sender's
    ///   quota (updates of held names never do); `.storage`.
    @discardableResult
    public func put(_ record: SignedAgentRecord, from sender: PeerID?, now: UInt64) throws(ResolutionError)
        -> RecordAcceptance
    {
        let name = record.record.name.value
        // One transaction, so nothing can change the held record between the decision and the
        // write. A rejection is returned rather than thrown so that the transaction still commits
        // the deletion of a corrupt row it may have met.
        let outcome = try withDatabase("store the record for \(name)", transaction: true) { db in
            try self.offer(record, name: name, sender: sender, now: now, db)
        }
        return try outcome.get()
    }

    private func offer(
        _ record: SignedAgentRecord, name: String, sender: PeerID?, now: UInt64, _ db: Database
    ) throws -> Result<RecordAcceptance, ResolutionError> {
        let held = try heldRecord(name: name, db)
        let reason: RecordAcceptance
        switch RecordSelection.select(existing: held, incoming: record, now: now) {
        case .reject(let error): return .failure(error)
        case .accept(.identical): return .success(.identical)
        case .accept(let accepted): reason = accepted
        }
        let senderText = sender?.description
        if reason == .firstClaim || reason == .previousClaimLapsed {
            // A name the store does not hold (a lapsed claim counts as free) takes a place.
            if try quotaViolation(name: name, sender: senderText, db) != nil {
                // Expired rows still count until removed; remove them before refusing.
                try deleteExpired(now: now, db)
                if let violation = try quotaViolation(name: name, sender: senderText, db) {
                    return .failure(violation)
                }
            }
        }
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO records (name, record, seq, expires, sender, stored_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET record = excluded.record, seq = excluded.seq,
                    expires = excluded.expires, sender = excluded.sender, stored_at = excluded.stored_at
                """)
        try statement.execute(arguments: [
            name, Data(record.bytes), RecordStoreSchema.integer(record.record.seq),
            RecordStoreSchema.integer(record.record.expires), senderText, RecordStoreSchema.integer(now),
        ])
        return .success(reason)
    }

    /// The row held for `name`, expired or not; a row that does not decode is deleted.
    private func heldRecord(name: String, _ db: Database) throws -> SignedAgentRecord? {
        let statement = try db.cachedStatement(sql: "SELECT record FROM records WHERE name = ?")
        guard let row = try Row.fetchOne(statement, arguments: [name]) else { return nil }
        if let record = RecordStoreSchema.decode(row[0], name: name) { return record }
        try deleteRow(name: name, db)
        return nil
    }

    /// The quota a new row for `name` from `sender` would break, if any. A row already there for
    /// `name` is replaced, so it does not count.
    private func quotaViolation(name: String, sender: String?, _ db: Database) throws -> ResolutionError? {
        let countAll = try db.cachedStatement(sql: "SELECT COUNT(*) FROM records")
        let exists = try db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM records WHERE name = ?)")
        let total = try Int.fetchOne(countAll) ?? 0
        let replacesRow = try Bool.fetchOne(exists, arguments: [name]) ?? false
        let others = replacesRow ? total - 1 : total
        guard others < configuration.maximumRecords else {
            return configuration.totalQuotaError(held: others, name: name)
        }
        guard let sender else { return nil }
        let countSender = try db.cachedStatement(sql: "SELECT COUNT(*) FROM records WHERE sender = ? AND name <> ?")
        let fromSender = try Int.fetchOne(countSender, arguments: [sender, name]) ?? 0
        guard fromSender < configuration.maximumRecordsPerSender else {
            return configuration.senderQuotaError(sender: sender, held: fromSender, name: name)
        }
        return nil
    }

    /// The held, unexpired record for `name` at `now`, or nil.
    /// - Throws: `.storage`.
    public func get(_ name: AgentName, now: UInt64) throws(ResolutionError) -> SignedAgentRecord? {
        let text = name.value
        return try withDatabase("read the record for \(text)") { db in
            let statement = try db.cachedStatement(sql: "SELECT record FROM records WHERE name = ? AND expires >= ?")
            guard let row = try Row.fetchOne(statement, arguments: [text, RecordStoreSchema.integer(now)]) else {
                return nil
            }
            guard let record = RecordStoreSchema.decode(row[0], name: text) else {
                try deleteRow(name: text, db)
                return nil
            }
            return record.record.isExpired(at: now) ? nil : record
        }
    }

    /// Unexpired records for re-replication, at most `limit`, least recently stored first; with
    /// `storedBefore`, only records whose current version was stored before that time (seconds
    /// since the epoch). Rows that do not decode are deleted and left out.
    /// - Throws: `.storage`.
    public func records(now: UInt64, limit: Int, storedBefore: UInt64?) throws(ResolutionError)
        -> [SignedAgentRecord]
    {
        guard limit > 0 else { return [] }
        return try withDatabase("list records") { db in
            let statement = try db.cachedStatement(
                sql: """
                    SELECT name, record FROM records
                    WHERE expires >= :now AND (:before IS NULL OR stored_at < :before)
                    ORDER BY stored_at, name LIMIT :limit
                    """)
            let arguments: StatementArguments = [
                "now": RecordStoreSchema.integer(now), "before": storedBefore.map(RecordStoreSchema.integer),
                "limit": limit,
            ]
            var records: [SignedAgentRecord] = []
            var corrupt: [String] = []
            let rows = try Row.fetchCursor(statement, arguments: arguments)
            while let row = try rows.next() {
                guard let name = String.fromDatabaseValue(row[0]) else { continue }
                guard let record = RecordStoreSchema.decode(row[1], name: name) else {
                    corrupt.append(name)
                    continue
                }
                if !record.record.isExpired(at: now) { records.append(record) }
            }
            for name in corrupt { try deleteRow(name: name, db) }
            return records
        }
    }

    /// Deletes the records expired at `now`.
    /// - Returns: how many were deleted.
    /// - Throws: `.storage`.
    @discardableResult
    public func removeExpired(now: UInt64) throws(ResolutionError) -> Int {
        try withDatabase("remove expired records") { db in try deleteExpired(now: now, db) }
    }

    /// The number of unexpired records at `now`.
    /// - Throws: `.storage`.
    public func count(now: UInt64) throws(ResolutionError) -> Int {
        try withDatabase("count records") { db in
            let statement = try db.cachedStatement(sql: "SELECT COUNT(*) FROM records WHERE expires >= ?")
            return try Int.fetchOne(statement, arguments: [RecordStoreSchema.integer(now)]) ?? 0
        }
    }

    @discardableResult
    private func deleteExpired(now: UInt64, _ db: Database) throws -> Int {
        try db.cachedStatement(sql: "DELETE FROM records WHERE expires < ?")
            .execute(arguments: [RecordStoreSchema.integer(now)])
        return db.changesCount
    }

    private func deleteRow(name: String, _ db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM records WHERE name = ?").execute(arguments: [name])
    }

    /// Runs `body` on the connection, in a transaction when asked (else each statement commits on
    /// its own), turning SQLite errors into `.storage` errors that say what failed and where.
    func withDatabase<T>(
        _ action: @autoclosure () -> String, transaction: Bool = false, _ body: (Database) throws -> T
    ) throws(ResolutionError) -> T {
        do {
            return transaction ? try queue.write(body) : try queue.inDatabase(body)
        } catch let error as ResolutionError {
            throw error
        } catch {
            throw Self.storageError(path: path, action: action(), error)
        }
    }

    private static func storageError(path: String?, action: String, _ error: any Error) -> ResolutionError {
        let reason: String
        if let error = error as? DatabaseError {
            reason = error.message ?? "\(error.resultCode)"
        } else {
            reason = "\(error)"
        }
        return ResolutionError(.storage, "record store \(path ?? "(in memory)"): cannot \(action): \(reason)")
    }
}
