import Foundation
import GRDB

/// The node's own messages, in SQLite (`messages.db`): the **inbox** of messages received for its
/// local names, delivered to the local agents once and in each sender's order, and the **outbox**
/// of messages its agents sent, with where each one is (spec/mailbox.md §7–8).
///
/// Durable (`synchronous = FULL`): a message the inbox accepted is on disk before it is acknowledged
/// to a mailbox replica, and an id the inbox has seen stays known until the message would have
/// expired, so no path (direct, several replicas, a retry) delivers it twice.
///
/// Thread-safe: all calls are synchronous and run one at a time on one SQLite connection.
public final class MessageStore: Sendable {
    /// A message as the inbox keeps it: the signed bytes (authoritative) and copies of the fields
    /// the inbox sorts and filters by.
    public struct Received: Hashable, Sendable {
        public var id: [UInt8]
        public var sender: String
        public var recipient: String
        /// The sender's order for this recipient, from 1; 0: unordered.
        public var sequence: UInt64
        public var timestampMilliseconds: UInt64
        /// The signed message bytes, as received.
        public var signed: [UInt8]
        /// `direct` or `mailbox`.
        public var via: String

        public init(
            id: [UInt8], sender: String, recipient: String, sequence: UInt64, timestampMilliseconds: UInt64, signed: [UInt8],
            via: String
        ) {
            self.id = id
            self.sender = sender
            self.recipient = recipient
            self.sequence = sequence
            self.timestampMilliseconds = timestampMilliseconds
            self.signed = signed
            self.via = via
        }
    }

    /// What `receive` did.
    public enum Reception: Hashable, Sendable {
        /// Seen before (any path): nothing changed.
        case duplicate
        /// Stored but held back: an earlier message of the same sender has not arrived.
        case held
        /// Stored and delivered, with any held messages it released, in delivery order.
        case delivered([Received])
    }

    /// A message in the outbox.
    public struct Sent: Hashable, Sendable {
        public enum Status: String, Hashable, Sendable {
            /// Not yet delivered or stored; retried.
            case queued
            /// Stored at `replicas` mailbox replicas.
            case stored
            /// The recipient's node took it.
            case delivered
            /// Given up: `lastError` says why.
            case failed
        }

        public var id: [UInt8]
        public var sender: String
        public var recipient: String
        public var sequence: UInt64
        public var signed: [UInt8]
        public var status: Status
        public var replicas: Int
        public var attempts: Int
        /// Unix seconds of the next attempt (queued messages).
        public var nextAttempt: UInt64
        /// Unix seconds after which a queued message fails.
        public var expires: UInt64
        public var lastError: String?
    }

    /// How long an inbox id is remembered after the message's timestamp: the mailbox lifetime and
    /// its clock allowance (spec/mailbox.md §10), so that no replica can still hold a copy.
    public static let idRetention: UInt64 = 7 * 24 * 3600 + 600

    public let path: String?
    private let database: StoreDatabase

    /// Opens the store at `path` (created with mode 0600), or a private in-memory one for nil.
    public init(path: String?) throws(MailboxError) {
        self.path = path
        database = try StoreDatabase(
            path: path, name: "message store", label: "MessageStore", durable: true, migrator: Self.migrator,
            error: { MailboxError(.storage, $0) })
    }

    // MARK: Inbox

    /// Takes a verified message into the inbox at `now` (Unix seconds). Delivery follows each
    /// (sender, recipient) pair's sequence: the message with the next expected sequence (1 for a
    /// pair never seen) is delivered at once, with any held ones it makes contiguous; a later one
    /// is held (`releaseHeld`); an earlier one (its turn was given up) or an unordered one (0) is
    /// delivered at once.
    public func receive(_ message: Received, now: UInt64) throws(MailboxError) -> Reception {
        try MailboxStore.check(id: message.id)
        return try withDatabase("take a message into the inbox", transaction: true) { db in
            if try Bool.fetchOne(
                db, sql: "SELECT 1 FROM inbox WHERE sender = ? AND id = ?", arguments: [message.sender, Data(message.id)]) != nil
            {
                return .duplicate
            }
            let retainUntil = Self.integer(message.timestampMilliseconds / 1000 &+ Self.idRetention)
            try db.execute(
                sql: """
                    INSERT INTO inbox (id, sender, recipient, sequence, timestamp_ms, signed, via, received_at, state, retain_until)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'held', ?)
                    """,
                arguments: [
                    Data(message.id), message.sender, message.recipient, Self.integer(message.sequence),
                    Self.integer(message.timestampMilliseconds), Data(message.signed), message.via, Self.integer(now), retainUntil,
                ])
            let next = try Self.nextSequence(sender: message.sender, recipient: message.recipient, db)
            if message.sequence == 0 || message.sequence < next {
                return .delivered([try Self.deliver(rowOf: message, db)])
            }
            if message.sequence > next { return .held }
            return .delivered(try Self.releaseContiguous(sender: message.sender, recipient: message.recipient, db))
        }
    }

    /// Gives up waiting for missing predecessors: per pair, held messages received at or before
    /// `receivedBefore` are delivered in sequence order (with the gaps skipped), and any later held
    /// ones that become contiguous with them.
    /// - Returns: the messages delivered, in delivery order.
    public func releaseHeld(receivedBefore: UInt64) throws(MailboxError) -> [Received] {
        try withDatabase("release held messages", transaction: true) { db in
            let pairs = try Row.fetchAll(
                db, sql: "SELECT DISTINCT sender, recipient FROM inbox WHERE state = 'held' AND received_at <= ?",
                arguments: [Self.integer(receivedBefore)])
            var released: [Received] = []
            for pair in pairs {
                let sender: String = pair[0]
                let recipient: String = pair[1]
                // The newest overdue message's sequence: everything up to it goes now.
                guard let upTo = try Int64.fetchOne(
                    db,
                    sql: "SELECT max(sequence) FROM inbox WHERE state = 'held' AND sender = ? AND recipient = ? AND received_at <= ?",
                    arguments: [sender, recipient, Self.integer(receivedBefore)])
                else { continue }
                try db.execute(
                    sql: """
                        INSERT INTO inbox_order (sender, recipient, next_sequence) VALUES (?, ?, ?)
                        ON CONFLICT(sender, recipient) DO UPDATE SET next_sequence = max(next_sequence, excluded.next_sequence)
                        """,
                    arguments: [sender, recipient, 1])
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(Self.columns) FROM inbox WHERE state = 'held' AND sender = ? AND recipient = ? AND sequence <= ?
                        ORDER BY sequence
                        """,
                    arguments: [sender, recipient, upTo])
                for row in rows {
                    let message = Self.received(row)
                    released.append(try Self.deliver(rowOf: message, db))
                    try Self.setNextSequence(message.sequence + 1, sender: sender, recipient: recipient, db)
                }
                released += try Self.releaseContiguous(sender: sender, recipient: recipient, db)
            }
            return released
        }
    }

    /// Delivered messages not yet acknowledged by the local agent, in delivery order, optionally
    /// only those for `recipient`.
    public func inbox(recipient: String? = nil, limit: Int = 1000) throws(MailboxError) -> [Received] {
        try withDatabase("read the inbox") { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.columns) FROM inbox WHERE state = 'delivered' AND (? IS NULL OR recipient = ?)
                    ORDER BY delivered_order LIMIT ?
                    """,
                arguments: [recipient, recipient, limit]
            ).map(Self.received)
        }
    }

    /// A received message by id (any state).
    public func received(id: [UInt8]) throws(MailboxError) -> (message: Received, state: String)? {
        try withDatabase("read a message") { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.columns), state FROM inbox WHERE id = ? LIMIT 1", arguments: [Data(id)])
                .map { (Self.received($0), $0["state"]) }
        }
    }

    /// Marks delivered messages as read by the local agent (`msg.ack`): they leave the inbox; their
    /// ids stay known (and their bytes are dropped).
    /// - Returns: the ids that were in the inbox.
    public func acknowledge(ids: [[UInt8]]) throws(MailboxError) -> [[UInt8]] {
        try withDatabase("acknowledge messages", transaction: true) { db in
            var acknowledged: [[UInt8]] = []
            for id in ids {
                try db.execute(
                    sql: "UPDATE inbox SET state = 'read', signed = x'' WHERE id = ? AND state = 'delivered'", arguments: [Data(id)])
                if db.changesCount > 0 { acknowledged.append(id) }
            }
            return acknowledged
        }
    }

    /// Forgets inbox ids past their retention and outbox messages finished for a day.
    public func removeExpired(now: UInt64) throws(MailboxError) {
        try withDatabase("remove expired messages", transaction: true) { db in
            try db.execute(
                sql: "DELETE FROM inbox WHERE retain_until <= ? AND state = 'read'", arguments: [Self.integer(now)])
            try db.execute(
                sql: "DELETE FROM outbox WHERE status IN ('delivered', 'failed', 'stored') AND updated_at + 86400 <= ?",
                arguments: [Self.integer(now)])
        }
    }

    // MARK: Blocked senders

    /// Refuses messages from `name` from now on. - Returns: whether it was not blocked before.
    @discardableResult
    public func block(_ name: String, now: UInt64) throws(MailboxError) -> Bool {
        try withDatabase("block a sender", transaction: true) { db in
            try db.execute(
                sql: "INSERT INTO blocked_senders (name, blocked_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                arguments: [name, Self.integer(now)])
            return db.changesCount > 0
        }
    }

    /// Accepts messages from `name` again. - Returns: whether it was blocked.
    @discardableResult
    public func unblock(_ name: String) throws(MailboxError) -> Bool {
        try withDatabase("unblock a sender", transaction: true) { db in
            try db.execute(sql: "DELETE FROM blocked_senders WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    /// The blocked sender names, sorted.
    public func blockedSenders() throws(MailboxError) -> [String] {
        try withDatabase("list blocked senders") { db in
            try String.fetchAll(db, sql: "SELECT name FROM blocked_senders ORDER BY name")
        }
    }

    public func isBlocked(_ name: String) throws(MailboxError) -> Bool {
        try withDatabase("check a blocked sender") { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM blocked_senders WHERE name = ?", arguments: [name]) != nil
        }
    }

    // MARK: Outbox

    /// The next sequence for messages from `sender` to `recipient` (1, 2, …), persisted.
    public func assignSequence(sender: String, recipient: String) throws(MailboxError) -> UInt64 {
        try withDatabase("assign a sequence", transaction: true) { db in
            try db.execute(
                sql: """
                    INSERT INTO outbox_sequences (sender, recipient, last) VALUES (?, ?, 1)
                    ON CONFLICT(sender, recipient) DO UPDATE SET last = last + 1
                    """,
                arguments: [sender, recipient])
            let last = try Int64.fetchOne(
                db, sql: "SELECT last FROM outbox_sequences WHERE sender = ? AND recipient = ?", arguments: [sender, recipient])
            return UInt64(max(last ?? 1, 1))
        }
    }

    /// Records a sent message (any status) at `now`.
    public func record(_ message: Sent, now: UInt64) throws(MailboxError) {
        try MailboxStore.check(id: message.id)
        try withDatabase("record a sent message", transaction: true) { db in
            try db.execute(
                sql: """
                    INSERT INTO outbox (id, sender, recipient, sequence, signed, status, replicas, attempts, next_attempt,
                        expires, last_error, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET status = excluded.status, replicas = excluded.replicas,
                        attempts = excluded.attempts, next_attempt = excluded.next_attempt, last_error = excluded.last_error,
                        signed = excluded.signed, updated_at = excluded.updated_at
                    """,
                arguments: [
                    Data(message.id), message.sender, message.recipient, Self.integer(message.sequence),
                    Data(message.status == .queued ? message.signed : []), message.status.rawValue, message.replicas,
                    message.attempts, Self.integer(message.nextAttempt), Self.integer(message.expires), message.lastError,
                    Self.integer(now), Self.integer(now),
                ])
        }
    }

    /// A sent message by id.
    public func sent(id: [UInt8]) throws(MailboxError) -> Sent? {
        try withDatabase("read a sent message") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM outbox WHERE id = ?", arguments: [Data(id)]).map(Self.sent)
        }
    }

    /// Queued messages whose next attempt is due at `now`, oldest first.
    public func due(now: UInt64, limit: Int = 64) throws(MailboxError) -> [Sent] {
        try withDatabase("read due messages") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM outbox WHERE status = 'queued' AND next_attempt <= ? ORDER BY created_at, rowid LIMIT ?",
                arguments: [Self.integer(now), limit]
            ).map(Self.sent)
        }
    }

    // MARK: Rows

    private static let columns = "id, sender, recipient, sequence, timestamp_ms, signed, via"

    private static func received(_ row: Row) -> Received {
        let id: Data = row["id"]
        let signed: Data = row["signed"]
        let sequence: Int64 = row["sequence"]
        let timestamp: Int64 = row["timestamp_ms"]
        return Received(
            id: Array(id), sender: row["sender"], recipient: row["recipient"], sequence: UInt64(max(sequence, 0)),
            timestampMilliseconds: UInt64(max(timestamp, 0)), signed: Array(signed), via: row["via"])
    }

    private static func sent(_ row: Row) -> Sent {
        let id: Data = row["id"]
        let signed: Data = row["signed"]
        func unsigned(_ column: String) -> UInt64 {
            let value: Int64 = row[column]
            return UInt64(max(value, 0))
        }
        return Sent(
            id: Array(id), sender: row["sender"], recipient: row["recipient"], sequence: unsigned("sequence"), signed: Array(signed),
            status: Sent.Status(rawValue: row["status"]) ?? .failed, replicas: row["replicas"], attempts: row["attempts"],
            nextAttempt: unsigned("next_attempt"), expires: unsigned("expires"), lastError: row["last_error"])
    }

    private static func nextSequence(sender: String, recipient: String, _ db: Database) throws -> UInt64 {
        let next = try Int64.fetchOne(
            db, sql: "SELECT next_sequence FROM inbox_order WHERE sender = ? AND recipient = ?", arguments: [sender, recipient])
        return UInt64(max(next ?? 1, 1))
    }

    private static func setNextSequence(_ next: UInt64, sender: String, recipient: String, _ db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO inbox_order (sender, recipient, next_sequence) VALUES (?, ?, ?)
                ON CONFLICT(sender, recipient) DO UPDATE SET next_sequence = max(next_sequence, excluded.next_sequence)
                """,
            arguments: [sender, recipient, integer(next)])
    }

    /// Marks one held row delivered, in the next delivery position.
    private static func deliver(rowOf message: Received, _ db: Database) throws -> Received {
        try db.execute(
            sql: """
                UPDATE inbox SET state = 'delivered',
                    delivered_order = (SELECT coalesce(max(delivered_order), 0) + 1 FROM inbox)
                WHERE sender = ? AND id = ?
                """,
            arguments: [message.sender, Data(message.id)])
        return message
    }

    /// Delivers the held messages that continue the pair's sequence, in order.
    private static func releaseContiguous(sender: String, recipient: String, _ db: Database) throws -> [Received] {
        var released: [Received] = []
        var next = try nextSequence(sender: sender, recipient: recipient, db)
        while let row = try Row.fetchOne(
            db, sql: "SELECT \(columns) FROM inbox WHERE state = 'held' AND sender = ? AND recipient = ? AND sequence = ?",
            arguments: [sender, recipient, integer(next)])
        {
            released.append(try deliver(rowOf: received(row), db))
            next += 1
        }
        try setNextSequence(next, sender: sender, recipient: recipient, db)
        return released
    }

    // MARK: Database

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("messages-v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE inbox (
                        id BLOB NOT NULL,
                        sender TEXT NOT NULL,
                        recipient TEXT NOT NULL,
                        sequence INTEGER NOT NULL,
                        timestamp_ms INTEGER NOT NULL,
                        signed BLOB NOT NULL,
                        via TEXT NOT NULL,
                        received_at INTEGER NOT NULL,
                        state TEXT NOT NULL,             -- held | delivered | read
                        delivered_order INTEGER,
                        retain_until INTEGER NOT NULL,
                        PRIMARY KEY (sender, id)
                    );
                    CREATE INDEX inbox_state ON inbox(state, delivered_order);
                    CREATE INDEX inbox_id ON inbox(id);
                    CREATE INDEX inbox_pair ON inbox(sender, recipient, state, sequence);
                    CREATE TABLE inbox_order (
                        sender TEXT NOT NULL,
                        recipient TEXT NOT NULL,
                        next_sequence INTEGER NOT NULL,
                        PRIMARY KEY (sender, recipient)
                    );
                    CREATE TABLE outbox (
                        id BLOB PRIMARY KEY NOT NULL,
                        sender TEXT NOT NULL,
                        recipient TEXT NOT NULL,
                        sequence INTEGER NOT NULL,
                        signed BLOB NOT NULL,
                        status TEXT NOT NULL,            -- queued | stored | delivered | failed
                        replicas INTEGER NOT NULL,
                        attempts INTEGER NOT NULL,
                        next_attempt INTEGER NOT NULL,
                        expires INTEGER NOT NULL,
                        last_error TEXT,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL
                    );
                    CREATE INDEX outbox_due ON outbox(status, next_attempt);
                    CREATE TABLE outbox_sequences (
                        sender TEXT NOT NULL,
                        recipient TEXT NOT NULL,
                        last INTEGER NOT NULL,
                        PRIMARY KEY (sender, recipient)
                    );
                    """)
        }
        // v2: senders the local agents refuse (`agentctl block NAME.agent`).
        migrator.registerMigration("messages-v2") { db in
            try db.execute(
                sql: """
                    CREATE TABLE blocked_senders (
                        name TEXT PRIMARY KEY NOT NULL,
                        blocked_at INTEGER NOT NULL
                    );
                    """)
        }
        return migrator
    }()

    static func integer(_ value: UInt64) -> Int64 { Int64(clamping: value) }

    private func withDatabase<T>(
        _ action: @autoclosure () -> String, transaction: Bool = false, _ body: (Database) throws -> T
    ) throws(MailboxError) -> T {
        try database.run(action(), transaction: transaction, error: { MailboxError(.storage, $0) }, body)
    }
}
