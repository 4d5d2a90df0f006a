import Foundation
import GRDB
import Multiformats

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

    /// Marks `name` as registered (published again after a restart, with `registration`'s
    /// parameters) or, with `nil`, as not. The own record must exist: the registration lives in its
    /// row, and goes with it (`removeOwnRecord`).
    /// - Returns: whether the name was registered before.
    /// - Throws: `.notFound` when registering a name without an own record (clearing one is a
    ///   no-op that returns false); `.storage`.
    @discardableResult
    public func setRegistration(_ registration: NameRegistration?, for name: AgentName) throws(ResolutionError) -> Bool {
        let text = name.value
        return try withDatabase("save the registration of \(text)", transaction: true) { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT registered FROM own_records WHERE name = ?"), arguments: [text])
            else {
                guard registration == nil else { throw ResolutionError(.notFound, "no own record for \(text) to register") }
                return false
            }
            let was = (row[0] as Int64?) == 1
            let statement = try db.cachedStatement(
                sql: "UPDATE own_records SET registered = ?, addresses = ?, protocols = ?, ttl = ? WHERE name = ?")
            if let registration {
                try statement.execute(arguments: [
                    1, registration.addresses.map { Self.jsonList($0.map(\.description)) },
                    registration.protocols.map(Self.jsonList), Int64(registration.ttl), text,
                ])
            } else {
                try statement.execute(arguments: [0, nil, nil, nil, text])
            }
            return was
        }
    }

    /// The registered names and their parameters, ordered by name. A row whose parameters do not
    /// decode (a hand-edited database) is left out, with the reason returned, and with
    /// `dropInvalid` also unregistered.
    /// - Throws: `.storage`.
    public func registrations(dropInvalid: Bool) throws(ResolutionError) -> (
        registrations: [(name: AgentName, registration: NameRegistration)], dropped: [String]
    ) {
        try withDatabase("list registered names", transaction: dropInvalid) { db in
            var registrations: [(name: AgentName, registration: NameRegistration)] = []
            var dropped: [String] = []
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: "SELECT name, addresses, protocols, ttl FROM own_records WHERE registered = 1 ORDER BY name"))
            for row in rows {
                let text: String = row[0]
                do {
                    let name = try AgentName(canonical: text)
                    let addresses = try (row[1] as String?).map { try Self.list($0).map { try Multiaddr($0) } }
                    let protocols = try (row[2] as String?).map(Self.list)
                    guard let ttl = (row[3] as Int64?).flatMap(UInt32.init(exactly:)),
                        (RecordLimits.minimumTTL...RecordLimits.maximumTTL).contains(ttl)
                    else { throw ResolutionError(.storage, "ttl out of range") }
                    registrations.append((name, NameRegistration(addresses: addresses, protocols: protocols, ttl: ttl)))
                } catch {
                    dropped.append("\(text): \(error)")
                    guard dropInvalid else { continue }
                    try db.cachedStatement(sql: "UPDATE own_records SET registered = 0 WHERE name = ?").execute(arguments: [text])
                }
            }
            return (registrations, dropped)
        }
    }

    private static func jsonList(_ values: [String]) -> String {
        String(decoding: try! JSONEncoder().encode(values), as: UTF8.self)
    }

    private static func list(_ json: String) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(json.utf8))
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

/// What a registered name publishes (`RecordStore.setRegistration`, `DHT.register(persist:)`).
public struct NameRegistration: Hashable, Sendable {
    /// The addresses to publish; nil follows the node's.
    public var addresses: [Multiaddr]?
    /// The protocols to publish; nil follows the node's.
    public var protocols: [String]?
    /// Record lifetime in seconds.
    public var ttl: UInt32

    public init(addresses: [Multiaddr]?, protocols: [String]?, ttl: UInt32) {
        self.addresses = addresses
        self.protocols = protocols
        self.ttl = ttl
    }
}
