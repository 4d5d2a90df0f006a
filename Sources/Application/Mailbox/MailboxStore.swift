import Foundation
import GRDB

/// The messages this node keeps as a mailbox replica for agents that are offline (spec/mailbox.md
/// §3), in SQLite: sealed boxes it cannot read, under the mailbox key of their recipient.
///
/// Durable: the database runs with `synchronous = FULL`, so when `store` returns the message is on
/// disk (a WAL commit is fsync'd) and the replica may tell the sender "stored". Bounded: a message
/// size limit, a TTL, and quotas per mailbox, per sending peer and in total. A message is kept once
/// per mailbox (its id); once the recipient has acknowledged it, a tombstone refuses it again until it
/// would have expired, so re-replication from another replica cannot bring it back.
///
/// Thread-safe: all calls are synchronous and run one at a time on one SQLite connection.
public final class MailboxStore: Sendable {
    /// Limits of the store (spec/mailbox.md §6).
    public struct Configuration: Sendable {
        /// Largest sealed message accepted: 256 KiB of content plus the envelope and the box.
        public var maximumMessageBytes = 256 * 1024 + 16 * 1024
        /// Longest a message may be kept: 7 days, plus a 5-minute allowance for clock skew.
        public var maximumLifetime: UInt64 = 7 * 24 * 3600 + 300
        /// Most messages and bytes waiting in one mailbox.
        public var maximumMessagesPerMailbox = 1_000
        public var maximumBytesPerMailbox = 64 * 1024 * 1024
        /// Most messages and bytes one sending peer holds at this replica, over all mailboxes.
        public var maximumMessagesPerSender = 2_000
        public var maximumBytesPerSender = 128 * 1024 * 1024
        /// Most messages and bytes in total.
        public var maximumMessages = 100_000
        public var maximumBytes = 2 * 1024 * 1024 * 1024

        public init() {}
    }

    /// One message held for a mailbox.
    public struct Item: Hashable, Sendable {
        /// SHA-256("/agent/mailbox/" ‖ recipient name): 32 bytes.
        public var mailbox: [UInt8]
        /// The message id: 16 bytes.
        public var id: [UInt8]
        /// The sealed box, opaque to the replica.
        public var sealed: [UInt8]
        /// Unix seconds after which the message is dropped.
        public var expires: UInt64

        public init(mailbox: [UInt8], id: [UInt8], sealed: [UInt8], expires: UInt64) {
            self.mailbox = mailbox
            self.id = id
            self.sealed = sealed
            self.expires = expires
        }
    }

    /// What `store` did with a message.
    public enum StoreOutcome: String, Hashable, Sendable {
        /// Newly stored (and on disk).
        case stored
        /// Already held: nothing changed.
        case duplicate
        /// The recipient already acknowledged it: not stored again.
        case acknowledged
    }

    /// A page of a mailbox, oldest first.
    public struct Page: Sendable {
        public var items: [Item]
        /// The cursor to pass as `after` for the next page; nil when this page is the last.
        public var next: Int64?
    }

    public static let mailboxKeyLength = 32
    public static let idLength = 16

    public let configuration: Configuration
    /// The database file, or nil for an in-memory store.
    public let path: String?
    private let database: StoreDatabase

    /// Opens the store at `path` (created with mode 0600), or a private in-memory store for nil.
    /// - Throws: `.storage` with the path and the reason.
    public init(path: String?, configuration: Configuration = .init()) throws(MailboxError) {
        self.configuration = configuration
        self.path = path
        // Every commit is fsync'd: "stored" is promised to the sender only after this.
        database = try StoreDatabase(
            path: path, name: "mailbox store", label: "MailboxStore", durable: true, migrator: Self.migrator,
            error: { MailboxError(.storage, $0) })
    }

    /// Stores `item`, sent by `sender` (a peer id's text), at time `now` (Unix seconds).
    /// - Throws: `.malformed`, `.tooLarge`, `.expired`, `.ttlTooLong`, `.mailboxFull`, `.senderQuota`,
    ///   `.storeFull`, `.storage`.
    @discardableResult
    public func store(_ item: Item, from sender: String, now: UInt64) throws(MailboxError) -> StoreOutcome {
        try Self.check(mailbox: item.mailbox)
        try Self.check(id: item.id)
        guard item.sealed.count <= configuration.maximumMessageBytes else {
            throw MailboxError(
                .tooLarge, "a sealed message of \(item.sealed.count) bytes is over the \(configuration.maximumMessageBytes)-byte limit")
        }
        guard item.expires > now else {
            throw MailboxError(.expired, "the message expired \(now - item.expires) s ago")
        }
        guard item.expires - now <= configuration.maximumLifetime else {
            throw MailboxError(
                .ttlTooLong, "the message asks to be kept \(item.expires - now) s, more than \(configuration.maximumLifetime) s")
        }
        let outcome = try withDatabase("store a message", transaction: true) { db -> Result<StoreOutcome, MailboxError> in
            let key: StatementArguments = [Data(item.mailbox), Data(item.id)]
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM mailbox_items WHERE mailbox = ? AND id = ?", arguments: key) != nil {
                return .success(.duplicate)
            }
            if let expires = try Int64.fetchOne(
                db, sql: "SELECT expires FROM mailbox_tombstones WHERE mailbox = ? AND id = ?", arguments: key),
                expires > Self.integer(now)
            {
                return .success(.acknowledged)
            }
            if try self.quotaRefusal(item, sender: sender, db) != nil {
                // Expired rows count until removed: remove them, then decide again.
                try Self.deleteExpired(now: now, db)
                if let refusal = try self.quotaRefusal(item, sender: sender, db) { return .failure(refusal) }
            }
            try db.execute(
                sql: """
                    INSERT INTO mailbox_items (mailbox, id, sealed, size, sender, expires, stored_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    Data(item.mailbox), Data(item.id), Data(item.sealed), item.sealed.count, sender,
                    Self.integer(item.expires), Self.integer(now),
                ])
            return .success(.stored)
        }
        return try outcome.get()
    }

    /// Up to `maximumBytes` of sealed messages of `mailbox` (at least one, whatever its size) that
    /// have not expired, oldest first, after the cursor `after` (nil: from the start).
    public func fetch(mailbox: [UInt8], after: Int64? = nil, maximumBytes: Int = 4 * 1024 * 1024, now: UInt64) throws(MailboxError)
        -> Page
    {
        try Self.check(mailbox: mailbox)
        return try withDatabase("read a mailbox") { db in
            let rows = try Row.fetchCursor(
                db,
                sql: """
                    SELECT rowid, id, sealed, expires FROM mailbox_items
                    WHERE mailbox = ? AND rowid > ? AND expires > ? ORDER BY rowid
                    """,
                arguments: [Data(mailbox), after ?? 0, Self.integer(now)])
            var page = Page(items: [], next: nil)
            var bytes = 0
            while let row = try rows.next() {
                let sealed: Data = row[2]
                if !page.items.isEmpty && bytes + sealed.count > maximumBytes {
                    break
                }
                bytes += sealed.count
                let id: Data = row[1]
                let expires: Int64 = row[3]
                page.items.append(Item(mailbox: mailbox, id: Array(id), sealed: Array(sealed), expires: UInt64(max(expires, 0))))
                page.next = row[0]
            }
            // `next` stays set only when more rows follow.
            if let next = page.next,
                try Bool.fetchOne(
                    db, sql: "SELECT 1 FROM mailbox_items WHERE mailbox = ? AND rowid > ? AND expires > ? LIMIT 1",
                    arguments: [Data(mailbox), next, Self.integer(now)]) == nil
            {
                page.next = nil
            }
            return page
        }
    }

    /// Deletes the messages `ids` of `mailbox` (the recipient has them) and keeps a tombstone of each
    /// until it would have expired (at least `tombstoneLifetime` for ids this replica never held).
    /// - Returns: how many held messages were deleted.
    @discardableResult
    public func acknowledge(mailbox: [UInt8], ids: [[UInt8]], now: UInt64) throws(MailboxError) -> Int {
        try Self.check(mailbox: mailbox)
        for id in ids { try Self.check(id: id) }
        let fallbackExpiry = Self.integer(now &+ configuration.maximumLifetime)
        return try withDatabase("acknowledge messages", transaction: true) { db in
            var deleted = 0
            for id in ids {
                let key: StatementArguments = [Data(mailbox), Data(id)]
                let expires =
                    try Int64.fetchOne(db, sql: "SELECT expires FROM mailbox_items WHERE mailbox = ? AND id = ?", arguments: key)
                try db.execute(sql: "DELETE FROM mailbox_items WHERE mailbox = ? AND id = ?", arguments: key)
                deleted += db.changesCount
                try db.execute(
                    sql: """
                        INSERT INTO mailbox_tombstones (mailbox, id, expires) VALUES (?, ?, ?)
                        ON CONFLICT(mailbox, id) DO UPDATE SET expires = max(expires, excluded.expires)
                        """,
                    arguments: [Data(mailbox), Data(id), expires ?? fallbackExpiry])
            }
            return deleted
        }
    }

    /// The ids among `ids` that this replica neither holds for `mailbox` nor has tombstoned (an
    /// OFFER's answer: what re-replication should send).
    public func missing(mailbox: [UInt8], ids: [[UInt8]], now: UInt64) throws(MailboxError) -> [[UInt8]] {
        try Self.check(mailbox: mailbox)
        for id in ids { try Self.check(id: id) }
        return try withDatabase("compare offered ids") { db in
            try ids.filter { id in
                let key: StatementArguments = [Data(mailbox), Data(id), Self.integer(now)]
                let held = try Bool.fetchOne(
                    db, sql: "SELECT 1 FROM mailbox_items WHERE mailbox = ? AND id = ? AND expires > ?", arguments: key)
                let tombstoned = try Bool.fetchOne(
                    db, sql: "SELECT 1 FROM mailbox_tombstones WHERE mailbox = ? AND id = ? AND expires > ?", arguments: key)
                return held == nil && tombstoned == nil
            }
        }
    }

    /// Every live message of `mailbox` (re-replication reads them in pages of ids).
    public func items(mailbox: [UInt8], ids: [[UInt8]], now: UInt64) throws(MailboxError) -> [Item] {
        try Self.check(mailbox: mailbox)
        return try withDatabase("read messages") { db in
            try ids.compactMap { id in
                guard let row = try Row.fetchOne(
                    db, sql: "SELECT sealed, expires FROM mailbox_items WHERE mailbox = ? AND id = ? AND expires > ?",
                    arguments: [Data(mailbox), Data(id), Self.integer(now)])
                else { return nil }
                let sealed: Data = row[0]
                let expires: Int64 = row[1]
                return Item(mailbox: mailbox, id: id, sealed: Array(sealed), expires: UInt64(max(expires, 0)))
            }
        }
    }

    /// The ids of the live messages of `mailbox`, oldest first.
    public func ids(mailbox: [UInt8], now: UInt64) throws(MailboxError) -> [[UInt8]] {
        try Self.check(mailbox: mailbox)
        return try withDatabase("list message ids") { db in
            try Data.fetchAll(
                db, sql: "SELECT id FROM mailbox_items WHERE mailbox = ? AND expires > ? ORDER BY rowid",
                arguments: [Data(mailbox), Self.integer(now)]
            ).map { Array($0) }
        }
    }

    /// Removes expired messages and tombstones. - Returns: how many messages were removed.
    @discardableResult
    public func removeExpired(now: UInt64) throws(MailboxError) -> Int {
        try withDatabase("remove expired messages", transaction: true) { db in try Self.deleteExpired(now: now, db) }
    }

    /// The mailboxes holding at least one live message, with their message counts (for
    /// re-replication and `agentctl nat`-style reporting).
    public func mailboxes(now: UInt64) throws(MailboxError) -> [(mailbox: [UInt8], messages: Int)] {
        try withDatabase("list mailboxes") { db in
            try Row.fetchAll(
                db, sql: "SELECT mailbox, count(*) FROM mailbox_items WHERE expires > ? GROUP BY mailbox ORDER BY mailbox",
                arguments: [Self.integer(now)]
            ).map { row in
                let mailbox: Data = row[0]
                return (Array(mailbox), row[1])
            }
        }
    }

    /// Totals of live messages: count and bytes.
    public func usage(now: UInt64) throws(MailboxError) -> (messages: Int, bytes: Int) {
        try withDatabase("count messages") { db in
            let row = try Row.fetchOne(
                db, sql: "SELECT count(*), coalesce(sum(size), 0) FROM mailbox_items WHERE expires > ?", arguments: [Self.integer(now)])
            return (row?[0] ?? 0, row?[1] ?? 0)
        }
    }

    // MARK: Rules

    private func quotaRefusal(_ item: Item, sender: String, _ db: Database) throws -> MailboxError? {
        let size = item.sealed.count
        let (mailboxCount, mailboxBytes) = try Self.usage(scope: Self.mailboxScope, key: Data(item.mailbox), db)
        if mailboxCount + 1 > configuration.maximumMessagesPerMailbox || mailboxBytes + size > configuration.maximumBytesPerMailbox {
            return MailboxError(
                .mailboxFull,
                "the recipient's mailbox holds \(mailboxCount) messages, \(mailboxBytes) bytes (limits \(configuration.maximumMessagesPerMailbox), \(configuration.maximumBytesPerMailbox))"
            )
        }
        let (senderCount, senderBytes) = try Self.usage(scope: Self.senderScope, key: Data(sender.utf8), db)
        if senderCount + 1 > configuration.maximumMessagesPerSender || senderBytes + size > configuration.maximumBytesPerSender {
            return MailboxError(
                .senderQuota,
                "this replica holds \(senderCount) messages, \(senderBytes) bytes from your peer (limits \(configuration.maximumMessagesPerSender), \(configuration.maximumBytesPerSender))"
            )
        }
        let (totalCount, totalBytes) = try Self.usage(scope: Self.totalScope, key: Data(), db)
        if totalCount + 1 > configuration.maximumMessages || totalBytes + size > configuration.maximumBytes {
            return MailboxError(.storeFull, "this replica's mailbox store is full (\(totalCount) messages, \(totalBytes) bytes)")
        }
        return nil
    }

    /// Messages and bytes held (expired rows included until removed) under one counter of
    /// `mailbox_counters`: one primary-key read, not a scan of the mailbox's or sender's rows.
    private static func usage(scope: String, key: Data, _ db: Database) throws -> (messages: Int, bytes: Int) {
        let row = try Row.fetchOne(
            db, sql: "SELECT messages, bytes FROM mailbox_counters WHERE scope = ? AND key = ?", arguments: [scope, key])
        return (row?[0] ?? 0, row?[1] ?? 0)
    }

    /// The counters as they stand, for tests: scope ("mailbox", "sender", "total") → key → (messages, bytes).
    func counters() throws(MailboxError) -> [String: [Data: (messages: Int, bytes: Int)]] {
        try withDatabase("read the counters") { db in
            var result: [String: [Data: (messages: Int, bytes: Int)]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT scope, key, messages, bytes FROM mailbox_counters") {
                let scope: String = row[0]
                let key: Data = row[1]
                result[scope, default: [:]][key] = (row[2], row[3])
            }
            return result
        }
    }

    static let mailboxScope = "mailbox"
    static let senderScope = "sender"
    static let totalScope = "total"

    @discardableResult
    private static func deleteExpired(now: UInt64, _ db: Database) throws -> Int {
        try db.execute(sql: "DELETE FROM mailbox_items WHERE expires <= ?", arguments: [integer(now)])
        let removed = db.changesCount
        try db.execute(sql: "DELETE FROM mailbox_tombstones WHERE expires <= ?", arguments: [integer(now)])
        return removed
    }

    static func check(mailbox: [UInt8]) throws(MailboxError) {
        guard mailbox.count == mailboxKeyLength else {
            throw MailboxError(.malformed, "a mailbox key is \(mailboxKeyLength) bytes, not \(mailbox.count)")
        }
    }

    static func check(id: [UInt8]) throws(MailboxError) {
        guard id.count == idLength else {
            throw MailboxError(.malformed, "a message id is \(idLength) bytes, not \(id.count)")
        }
    }

    // MARK: Database

    /// Migrations; identifiers carry a `mailbox-` prefix since the database file is shared with the
    /// node's other message tables.
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("mailbox-v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE mailbox_items (
                        mailbox BLOB NOT NULL,
                        id BLOB NOT NULL,
                        sealed BLOB NOT NULL,
                        size INTEGER NOT NULL,
                        sender TEXT NOT NULL,
                        expires INTEGER NOT NULL,
                        stored_at INTEGER NOT NULL,
                        UNIQUE (mailbox, id)
                    );
                    CREATE INDEX mailbox_items_mailbox ON mailbox_items(mailbox);
                    CREATE INDEX mailbox_items_sender ON mailbox_items(sender);
                    CREATE INDEX mailbox_items_expires ON mailbox_items(expires);
                    CREATE TABLE mailbox_tombstones (
                        mailbox BLOB NOT NULL,
                        id BLOB NOT NULL,
                        expires INTEGER NOT NULL,
                        PRIMARY KEY (mailbox, id)
                    );
                    CREATE INDEX mailbox_tombstones_expires ON mailbox_tombstones(expires);
                    """)
        }
        // Quota counters kept by triggers, so a STORE reads three rows instead of summing every
        // row of its mailbox, its sender and the store (which grew with the store: 2.5–9 × slower
        // at a few thousand rows). Rows drop out at zero; expired items count until deleted, as
        // before.
        migrator.registerMigration("mailbox-v2-counters") { db in
            try db.execute(
                sql: """
                    CREATE TABLE mailbox_counters (
                        scope TEXT NOT NULL,
                        key BLOB NOT NULL,
                        messages INTEGER NOT NULL,
                        bytes INTEGER NOT NULL,
                        PRIMARY KEY (scope, key)
                    ) WITHOUT ROWID;
                    INSERT INTO mailbox_counters (scope, key, messages, bytes)
                        SELECT 'mailbox', mailbox, count(*), sum(size) FROM mailbox_items GROUP BY mailbox;
                    INSERT INTO mailbox_counters (scope, key, messages, bytes)
                        SELECT 'sender', CAST(sender AS BLOB), count(*), sum(size) FROM mailbox_items GROUP BY sender;
                    INSERT INTO mailbox_counters (scope, key, messages, bytes)
                        SELECT 'total', x'', count(*), sum(size) FROM mailbox_items HAVING count(*) > 0;
                    CREATE TRIGGER mailbox_items_insert_counted AFTER INSERT ON mailbox_items BEGIN
                        INSERT INTO mailbox_counters (scope, key, messages, bytes) VALUES ('mailbox', NEW.mailbox, 1, NEW.size)
                            ON CONFLICT (scope, key) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
                        INSERT INTO mailbox_counters (scope, key, messages, bytes) VALUES ('sender', CAST(NEW.sender AS BLOB), 1, NEW.size)
                            ON CONFLICT (scope, key) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
                        INSERT INTO mailbox_counters (scope, key, messages, bytes) VALUES ('total', x'', 1, NEW.size)
                            ON CONFLICT (scope, key) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
                    END;
                    CREATE TRIGGER mailbox_items_delete_counted AFTER DELETE ON mailbox_items BEGIN
                        UPDATE mailbox_counters SET messages = messages - 1, bytes = bytes - OLD.size
                            WHERE (scope = 'mailbox' AND key = OLD.mailbox) OR (scope = 'sender' AND key = CAST(OLD.sender AS BLOB))
                                OR (scope = 'total' AND key = x'');
                        DELETE FROM mailbox_counters
                            WHERE messages <= 0 AND ((scope = 'mailbox' AND key = OLD.mailbox)
                                OR (scope = 'sender' AND key = CAST(OLD.sender AS BLOB)) OR (scope = 'total' AND key = x''));
                    END;
                    CREATE TRIGGER mailbox_items_update_refused BEFORE UPDATE OF mailbox, sender, size ON mailbox_items BEGIN
                        SELECT RAISE(ABORT, 'mailbox_items rows are inserted and deleted, never changed (the quota counters follow them)');
                    END;
                    """)
        }
        return migrator
    }()

    /// SQLite integers are signed 64-bit; times beyond `Int64.max` are clamped (only ever keeping
    /// something longer, never dropping it early).
    static func integer(_ value: UInt64) -> Int64 { Int64(clamping: value) }

    private func withDatabase<T>(
        _ action: @autoclosure () -> String, transaction: Bool = false, _ body: (Database) throws -> T
    ) throws(MailboxError) -> T {
        try database.run(action(), transaction: transaction, error: { MailboxError(.storage, $0) }, body)
    }
}
