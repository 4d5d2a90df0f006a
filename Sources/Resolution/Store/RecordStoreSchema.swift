import Foundation
import GRDB

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The SQLite layout of `RecordStore`, and the conversions between its rows and records.
///
/// ```
/// records      name TEXT PRIMARY KEY   canonical name, e.g. "alice.agent"
///              record BLOB             the signed record, exactly as received (authoritative)
///              seq INTEGER             the record's seq          } copies of record fields, so SQL
///              expires INTEGER         timestamp + ttl (indexed) } can filter without decoding
///              sender TEXT             base58 peer id of the peer that sent the PUT; NULL = local (indexed)
///              stored_at INTEGER       when this version was stored, seconds since the epoch
/// own_records  name TEXT PRIMARY KEY, record BLOB: the node's own published records
///              registered INTEGER          1: published again after a restart (v2)
///              addresses TEXT              JSON list of multiaddrs; NULL: follow the node's (v2)
///              protocols TEXT              JSON list of protocol ids; NULL: follow the node's (v2)
///              ttl INTEGER                 record lifetime in seconds (v2)
/// ```
enum RecordStoreSchema {
    /// Migrations of the record tables. Identifiers carry a `records-` prefix because the store may
    /// share its database file (`agentd.db`) with other parts of the node.
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("records-v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE records (
                        name TEXT PRIMARY KEY NOT NULL,
                        record BLOB NOT NULL,
                        seq INTEGER NOT NULL,
                        expires INTEGER NOT NULL,
                        sender TEXT,
                        stored_at INTEGER NOT NULL
                    );
                    CREATE INDEX records_expires ON records(expires);
                    CREATE INDEX records_sender ON records(sender);
                    CREATE TABLE own_records (
                        name TEXT PRIMARY KEY NOT NULL,
                        record BLOB NOT NULL
                    );
                    """)
        }
        // v2: names registered through the control API are kept published across restarts.
        migrator.registerMigration("records-v2") { db in
            try db.execute(
                sql: """
                    ALTER TABLE own_records ADD COLUMN registered INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE own_records ADD COLUMN addresses TEXT;
                    ALTER TABLE own_records ADD COLUMN protocols TEXT;
                    ALTER TABLE own_records ADD COLUMN ttl INTEGER;
                    """)
        }
        return migrator
    }()

    /// SQLite integers are signed 64-bit. Seqs and times above `Int64.max` (a clock 292 billion
    /// years ahead) are stored as `Int64.max`: the record blob stays authoritative, and the clamping
    /// only ever makes SQL keep an expired record longer, never drop a live one.
    static func integer(_ value: UInt64) -> Int64 { Int64(clamping: value) }

    /// The record in a `record` column, or nil when the value is not a blob that decodes to a record
    /// for `name`: a corrupt (or hand-edited) database, whose row the caller deletes.
    static func decode(_ value: DatabaseValue, name: String) -> SignedAgentRecord? {
        guard let data = Data.fromDatabaseValue(value), let record = try? SignedAgentRecord(bytes: data),
            record.record.name.value == name
        else { return nil }
        return record
    }

    /// Creates the database file with mode 0600 if it does not exist, so that SQLite (which creates
    /// files with 0644 minus the umask, and gives its journal files the mode of the database) never
    /// makes the records of this node readable to other users. An existing file is left as it is.
    /// - Throws: `.storage` with the path and the system's reason.
    static func createFile(at path: String) throws(ResolutionError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST { return }
            let reason = String(cString: strerror(errno))
            throw ResolutionError(.storage, "cannot create the record store \(path): \(reason)")
        }
        defer { close(fd) }
        // The umask may have cleared bits of the mode; set exactly 0600.
        guard fchmod(fd, 0o600) == 0 else {
            let reason = String(cString: strerror(errno))
            throw ResolutionError(.storage, "cannot set mode 0600 on the record store \(path): \(reason)")
        }
    }
}
