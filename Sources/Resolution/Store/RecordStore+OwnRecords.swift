import Foundation
import GRDB

/// The node's own published records, kept apart from the DHT records so that they survive expiry
/// and restarts: the next publication must carry a higher seq than the last one (spec/records.md §5,
/// "same key, lower seq: stale_seq"), and the publisher republishes them before they lapse.
extension RecordStore {
    /// The last record the node published for `name`, even if it has expired; nil if none.
    /// A stored row that does not decode is deleted and reported as none.
    /// - Throws: `.storage`.
    public func ownRecord(for name: AgentName) throws(ResolutionError) -> SignedAgentRecord? {
        let text = name.value
        return try withDatabase("read the own record for \(text)") { db in
            let statement = try db.cachedStatement(sql: "SELECT record FROM own_records WHERE name = ?")
            guard let row = try Row.fetchOne(statement, arguments: [text]) else { return nil }
            if let record = RecordStoreSchema.decode(row[0], name: text) { return record }
            try db.cachedStatement(sql: "DELETE FROM own_records WHERE name = ?").execute(arguments: [text])
            return nil
        }
    }

    /// Saves `record` as the node's own record for its name, replacing the previous one.
    /// - Throws: `.storage`.
    public func setOwnRecord(_ record: SignedAgentRecord) throws(ResolutionError) {
        let text = record.record.name.value
        try withDatabase("save the own record for \(text)") { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO own_records (name, record) VALUES (?, ?)
                    ON CONFLICT(name) DO UPDATE SET record = excluded.record
                    """)
            try statement.execute(arguments: [text, Data(record.bytes)])
        }
    }

    /// Every own record, ordered by name. Rows that do not decode are deleted and left out.
    /// - Throws: `.storage`.
    public func ownRecords() throws(ResolutionError) -> [SignedAgentRecord] {
        try withDatabase("list own records") { db in
            var records: [SignedAgentRecord] = []
            var corrupt: [String] = []
            let rows = try Row.fetchCursor(
                db.cachedStatement(sql: "SELECT name, record FROM own_records ORDER BY name"))
            while let row = try rows.next() {
                guard let name = String.fromDatabaseValue(row[0]) else { continue }
                if let record = RecordStoreSchema.decode(row[1], name: name) {
                    records.append(record)
                } else {
                    corrupt.append(name)
                }
            }
            for name in corrupt {
                try db.cachedStatement(sql: "DELETE FROM own_records WHERE name = ?").execute(arguments: [name])
            }
            return records
        }
    }

    /// Forgets the own record for `name`; nothing happens if there is none.
    /// - Throws: `.storage`.
    public func removeOwnRecord(for name: AgentName) throws(ResolutionError) {
        let text = name.value
        try withDatabase("remove the own record for \(text)") { db in
            try db.cachedStatement(sql: "DELETE FROM own_records WHERE name = ?").execute(arguments: [text])
        }
    }
}
