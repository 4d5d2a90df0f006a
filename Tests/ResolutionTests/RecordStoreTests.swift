import Foundation
import GRDB
import Identity
import Multiformats
import Testing

@testable import Resolution

/// The two implementations of `RecordStoring`: every rule test runs against both.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case memory

    var testDescription: String { rawValue }

    func make(_ configuration: RecordStoreConfiguration = .init()) throws -> any RecordStoring {
        switch self {
        case .sqlite: try RecordStore(path: nil, configuration: configuration)
        case .memory: MemoryRecordStore(configuration: configuration)
        }
    }
}

@Suite("record store: ownership rules, expiry, quotas, persistence (SQLite and in memory)")
struct RecordStoreTests {
    static let now = Fixtures.now
    static let bobPeer = PeerID(publicKey: Fixtures.bob.publicKey)
    static let carolPeer = PeerID(publicKey: Fixtures.carol.publicKey)

    /// A fresh directory under the system's temporary directory; the caller removes it.
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "agentd-records-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func name(_ text: String) -> AgentName { try! AgentName(text) }

    @Test("a first claim is stored and read back by name and by record key", arguments: StoreKind.allCases)
    func firstClaim(kind: StoreKind) throws {
        let store = try kind.make()
        let record = Fixtures.record(seq: 1)
        #expect(try store.put(record, from: Self.bobPeer, now: Self.now) == .firstClaim)
        #expect(try store.get(Fixtures.name, now: Self.now) == record)
        #expect(try store.get(recordKey: Fixtures.name.recordKey, now: Self.now) == record)
        #expect(try store.count(now: Self.now) == 1)
        #expect(try store.records(now: Self.now, limit: 10) == [record])
        #expect(try store.get(Self.name("bob"), now: Self.now) == nil)
    }

    @Test("the holder's higher seq replaces the record; the same bytes again change nothing", arguments: StoreKind.allCases)
    func update(kind: StoreKind) throws {
        let store = try kind.make()
        try store.put(Fixtures.record(seq: 1), from: nil, now: Self.now)
        let newer = Fixtures.record(seq: 2, timestamp: Self.now + 10)
        #expect(try store.put(newer, from: Self.bobPeer, now: Self.now + 10) == .update)
        #expect(try store.get(Fixtures.name, now: Self.now + 10) == newer)
        #expect(try store.put(newer, from: Self.carolPeer, now: Self.now + 20) == .identical)
        #expect(try store.get(Fixtures.name, now: Self.now + 20) == newer)
        #expect(try store.count(now: Self.now + 20) == 1)
    }

    @Test("a stale seq is rejected with stale_seq and the held record stays", arguments: StoreKind.allCases)
    func staleSeq(kind: StoreKind) throws {
        let store = try kind.make()
        let held = Fixtures.record(seq: 5)
        try store.put(held, from: nil, now: Self.now)
        let error = #expect(throws: ResolutionError.self) {
            try store.put(Fixtures.record(seq: 4, timestamp: Self.now + 10), from: Self.bobPeer, now: Self.now + 10)
        }
        #expect(error?.kind == .staleSeq)
        #expect(try store.get(Fixtures.name, now: Self.now + 10) == held)
    }

    @Test("another key cannot take a live name: name_held, and the holder's record stays", arguments: StoreKind.allCases)
    func nameHeld(kind: StoreKind) throws {
        let store = try kind.make()
        let held = Fixtures.record(seq: 1)
        try store.put(held, from: nil, now: Self.now)
        let error = #expect(throws: ResolutionError.self) {
            try store.put(Fixtures.record(Fixtures.bob, seq: 100), from: Self.bobPeer, now: Self.now)
        }
        #expect(error?.kind == .nameHeld)
        #expect(try store.get(Fixtures.name, now: Self.now) == held)
    }

    @Test("an invalid record is refused with the validation error and nothing is stored", arguments: StoreKind.allCases)
    func invalidIncoming(kind: StoreKind) throws {
        let store = try kind.make()
        let error = #expect(throws: ResolutionError.self) {
            try store.put(Fixtures.record(timestamp: Self.now - 7200), from: Self.bobPeer, now: Self.now)
        }
        #expect(error?.kind == .expired)
        #expect(try store.count(now: Self.now) == 0)
    }

    @Test("an expired record is invisible, frees its name, and is removed by removeExpired", arguments: StoreKind.allCases)
    func expiry(kind: StoreKind) throws {
        let store = try kind.make()
        let record = Fixtures.record(seq: 1, ttl: 60)
        try store.put(record, from: nil, now: Self.now)
        try store.put(Fixtures.record(name: Self.name("long"), ttl: 3600), from: nil, now: Self.now)
        // Valid up to and including timestamp + ttl (spec/records.md §4).
        #expect(try store.get(Fixtures.name, now: Self.now + 60) == record)
        let later = Self.now + 61
        #expect(try store.get(Fixtures.name, now: later) == nil)
        #expect(try store.get(recordKey: Fixtures.name.recordKey, now: later) == nil)
        #expect(try store.count(now: later) == 1)
        #expect(try store.records(now: later, limit: 10).map(\.record.name) == [Self.name("long")])
        #expect(try store.removeExpired(now: later) == 1)
        #expect(try store.removeExpired(now: later) == 0)
        #expect(try store.get(Fixtures.name, now: Self.now) == nil)

        // A lapsed claim, still in the table, is free for another key.
        try store.put(Fixtures.record(seq: 9, ttl: 60), from: nil, now: Self.now)
        let bobs = Fixtures.record(Fixtures.bob, seq: 1, timestamp: later)
        #expect(try store.put(bobs, from: Self.bobPeer, now: later) == .previousClaimLapsed)
        #expect(try store.get(Fixtures.name, now: later) == bobs)
    }

    @Test("records(now:limit:storedBefore:) lists by store time, honours the limit and the cut-off", arguments: StoreKind.allCases)
    func listing(kind: StoreKind) throws {
        let store = try kind.make()
        let first = Fixtures.record(name: Self.name("one"))
        let second = Fixtures.record(name: Self.name("two"))
        try store.put(second, from: nil, now: Self.now)
        try store.put(first, from: nil, now: Self.now + 100)
        #expect(try store.records(now: Self.now + 100, limit: 10) == [second, first])
        #expect(try store.records(now: Self.now + 100, limit: 1) == [second])
        #expect(try store.records(now: Self.now + 100, limit: 0) == [])
        #expect(try store.records(now: Self.now + 100, limit: 10, storedBefore: Self.now + 100) == [second])
        #expect(try store.records(now: Self.now + 100, limit: 10, storedBefore: Self.now) == [])
    }

    @Test("records, own records and the 0600 mode survive closing and reopening the file")
    func persistence() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/agentd.db"
        let record = Fixtures.record(seq: 7)
        let own = Fixtures.record(Fixtures.bob, name: Self.name("bob"), seq: 3)
        do {
            let store = try RecordStore(path: path)
            try store.put(record, from: Self.bobPeer, now: Self.now)
            try store.setOwnRecord(own)
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        let reopened = try RecordStore(path: path)
        #expect(try reopened.get(Fixtures.name, now: Self.now) == record)
        #expect(try reopened.ownRecords() == [own])
        let stale = #expect(throws: ResolutionError.self) {
            try reopened.put(Fixtures.record(seq: 6), from: nil, now: Self.now)
        }
        #expect(stale?.kind == .staleSeq)
        #expect(try reopened.put(Fixtures.record(seq: 8), from: nil, now: Self.now) == .update)
    }

    @Test("quotas: a new name over the total or the sender's share is store_full; updates still pass", arguments: StoreKind.allCases)
    func quotas(kind: StoreKind) throws {
        var configuration = RecordStore.Configuration()
        configuration.maximumRecords = 3
        configuration.maximumRecordsPerSender = 2
        let store = try kind.make(configuration)

        try store.put(Fixtures.record(name: Self.name("a0")), from: Self.bobPeer, now: Self.now)
        try store.put(Fixtures.record(name: Self.name("a1")), from: Self.bobPeer, now: Self.now)
        let perSender = #expect(throws: ResolutionError.self) {
            try store.put(Fixtures.record(name: Self.name("a2")), from: Self.bobPeer, now: Self.now)
        }
        #expect(perSender?.kind == .storeFull)
        #expect(perSender?.message.contains("per-sender quota of 2") == true)
        #expect(perSender?.message.contains(Self.bobPeer.description) == true)

        // Another sender may still add one; then the total is reached, for everyone, local too.
        try store.put(Fixtures.record(name: Self.name("a2")), from: Self.carolPeer, now: Self.now)
        for sender in [Self.carolPeer, nil] {
            let total = #expect(throws: ResolutionError.self) {
                try store.put(Fixtures.record(name: Self.name("a3")), from: sender, now: Self.now)
            }
            #expect(total?.kind == .storeFull)
            #expect(total?.message.contains("total quota is 3") == true)
        }

        // Updates of names already held never hit a quota, whoever sends them.
        #expect(
            try store.put(Fixtures.record(name: Self.name("a1"), seq: 2), from: Self.bobPeer, now: Self.now) == .update)
        #expect(
            try store.put(Fixtures.record(name: Self.name("a2"), seq: 2), from: Self.bobPeer, now: Self.now) == .update)
        #expect(try store.count(now: Self.now) == 3)
    }

    @Test("MemoryRecordStore.copy: the copy holds the same records, senders and own records, then goes its own way")
    func memoryCopy() throws {
        var configuration = RecordStore.Configuration()
        configuration.maximumRecordsPerSender = 1
        let store = MemoryRecordStore(configuration: configuration)
        try store.put(Fixtures.record(name: Self.name("c0")), from: Self.bobPeer, now: Self.now)
        try store.setOwnRecord(Fixtures.record(name: Self.name("mine")))
        let copy = store.copy()
        #expect(try copy.get(Self.name("c0"), now: Self.now) != nil)
        #expect(try copy.ownRecord(for: Self.name("mine")) != nil)
        // The sender's share came along: bob is at his quota in the copy too.
        let quota = #expect(throws: ResolutionError.self) {
            try copy.put(Fixtures.record(name: Self.name("c1")), from: Self.bobPeer, now: Self.now)
        }
        #expect(quota?.kind == .storeFull)
        // Writes to one are not seen by the other.
        try copy.put(Fixtures.record(name: Self.name("c2")), from: Self.carolPeer, now: Self.now)
        try store.removeOwnRecord(for: Self.name("mine"))
        #expect(try store.get(Self.name("c2"), now: Self.now) == nil)
        #expect(try copy.ownRecord(for: Self.name("mine")) != nil)
        #expect(try store.count(now: Self.now) == 1 && copy.count(now: Self.now) == 2)
    }

    @Test("quotas count live records only: expired ones make room for new names", arguments: StoreKind.allCases)
    func quotaAfterExpiry(kind: StoreKind) throws {
        var configuration = RecordStore.Configuration()
        configuration.maximumRecords = 2
        configuration.maximumRecordsPerSender = 1
        let store = try kind.make(configuration)
        try store.put(Fixtures.record(name: Self.name("short"), ttl: 60), from: Self.bobPeer, now: Self.now)
        try store.put(Fixtures.record(name: Self.name("long")), from: Self.carolPeer, now: Self.now)
        let later = Self.now + 61
        let fresh = Fixtures.record(name: Self.name("fresh"), timestamp: later)
        #expect(try store.put(fresh, from: Self.bobPeer, now: later) == .firstClaim)
        #expect(try store.count(now: later) == 2)
        #expect(try store.get(Self.name("short"), now: Self.now) == nil)
    }

    @Test("get(recordKey:) returns nil for keys that are not agent record keys", arguments: StoreKind.allCases)
    func junkKeys(kind: StoreKind) throws {
        let store = try kind.make()
        try store.put(Fixtures.record(), from: nil, now: Self.now)
        let keys: [[UInt8]] = [
            [], Array("/agent/".utf8), Array("/agent/Alice.agent".utf8), Array("/agent/alice".utf8),
            Array("/pk/alice.agent".utf8), Array("alice.agent".utf8), Array("/agent/alice.agent/".utf8),
            Array("/agent/".utf8) + [0xff, 0xfe] + Array(".agent".utf8),
            Array("/agent/".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 10_000),
            Array("/agent/bob.agent".utf8),
        ]
        for key in keys {
            #expect(try store.get(recordKey: key, now: Self.now) == nil, "\(key.prefix(40))")
        }
        #expect(try store.get(recordKey: Array("/agent/alice.agent".utf8), now: Self.now) != nil)
    }

    @Test("own records round trip, stay after expiry, and are replaced and removed by name", arguments: StoreKind.allCases)
    func ownRecords(kind: StoreKind) throws {
        let store = try kind.make()
        let alice = Fixtures.record(seq: 1, timestamp: Self.now - 86_400 * 30)
        let bob = Fixtures.record(Fixtures.bob, name: Self.name("bob"), seq: 4)
        #expect(try store.ownRecord(for: Fixtures.name) == nil)
        try store.setOwnRecord(bob)
        try store.setOwnRecord(alice)
        #expect(try store.ownRecord(for: Fixtures.name) == alice)
        #expect(try store.ownRecords() == [alice, bob])
        let newer = Fixtures.record(seq: 2)
        try store.setOwnRecord(newer)
        #expect(try store.ownRecord(for: Fixtures.name) == newer)
        try store.removeOwnRecord(for: Fixtures.name)
        try store.removeOwnRecord(for: Fixtures.name)
        #expect(try store.ownRecords() == [bob])
        // Own records are not DHT records.
        #expect(try store.get(Self.name("bob"), now: Self.now) == nil)
    }

    @Test("name registrations: saved with their parameters, kept across new records and reopening, cleared")
    func registrations() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/agentd.db"
        let alice = Fixtures.record(seq: 1)
        let bob = Fixtures.record(Fixtures.bob, name: Self.name("bob"), seq: 4)
        let custom = NameRegistration(
            addresses: [try Multiaddr("/ip4/192.0.2.1/tcp/4001"), try Multiaddr("/dns4/example.org/tcp/4001")],
            protocols: ["/chat/1.0.0", "a protocol with \"quotes\" and \n a newline"], ttl: 3600)
        let following = NameRegistration(addresses: nil, protocols: nil, ttl: RecordLimits.defaultTTL)
        do {
            let store = try RecordStore(path: path)
            // No own record, nothing to register.
            let missing = #expect(throws: ResolutionError.self) { try store.setRegistration(following, for: Fixtures.name) }
            #expect(missing?.kind == .notFound)
            try store.setOwnRecord(alice)
            try store.setOwnRecord(bob)
            #expect(try store.registrations().registrations.isEmpty)
            #expect(try store.setRegistration(custom, for: Fixtures.name) == false)
            #expect(try store.setRegistration(following, for: Self.name("bob")) == false)
            // A newer own record keeps the registration.
            try store.setOwnRecord(Fixtures.record(seq: 2))
        }
        let store = try RecordStore(path: path)
        let listed = try store.registrations()
        #expect(listed.dropped.isEmpty)
        #expect(listed.registrations.map(\.name) == [Fixtures.name, Self.name("bob")])
        #expect(listed.registrations.map(\.registration) == [custom, following])
        #expect(try store.setRegistration(nil, for: Self.name("bob")) == true)
        #expect(try store.registrations().registrations.map(\.name) == [Fixtures.name])
        // Removing the own record removes its registration with it.
        try store.removeOwnRecord(for: Fixtures.name)
        #expect(try store.registrations().registrations.isEmpty)
    }

    @Test("name registrations in one store: need an own record, keep their parameters, go with it", arguments: StoreKind.allCases)
    func registrationRules(kind: StoreKind) throws {
        let store = try kind.make()
        let custom = NameRegistration(
            addresses: [try Multiaddr("/ip4/192.0.2.1/tcp/4001")], protocols: ["/chat/1.0.0"], ttl: 3600)
        let following = NameRegistration(addresses: nil, protocols: nil, ttl: RecordLimits.defaultTTL)
        let missing = #expect(throws: ResolutionError.self) { try store.setRegistration(following, for: Fixtures.name) }
        #expect(missing?.kind == .notFound)
        // Clearing a registration that does not exist is a no-op.
        #expect(try store.setRegistration(nil, for: Fixtures.name) == false)
        try store.setOwnRecord(Fixtures.record(seq: 1))
        try store.setOwnRecord(Fixtures.record(Fixtures.bob, name: Self.name("bob"), seq: 4))
        #expect(try store.setRegistration(custom, for: Fixtures.name) == false)
        #expect(try store.setRegistration(following, for: Self.name("bob")) == false)
        #expect(try store.setRegistration(following, for: Self.name("bob")) == true)
        // A newer own record keeps the registration.
        try store.setOwnRecord(Fixtures.record(seq: 2))
        let listed = try store.registrations()
        #expect(listed.registrations.map(\.name) == [Fixtures.name, Self.name("bob")])
        #expect(listed.registrations.map(\.registration) == [custom, following])
        #expect(try store.setRegistration(nil, for: Self.name("bob")) == true)
        #expect(try store.registrations().registrations.map(\.name) == [Fixtures.name])
        try store.removeOwnRecord(for: Fixtures.name)
        #expect(try store.registrations().registrations.isEmpty)
    }

    @Test("a registration whose ttl is out of range is dropped with its reason", arguments: StoreKind.allCases)
    func registrationOutOfRange(kind: StoreKind) throws {
        let store = try kind.make()
        for name in ["short", "fine"] {
            try store.setOwnRecord(Fixtures.record(name: Self.name(name)))
        }
        try store.setRegistration(NameRegistration(addresses: nil, protocols: nil, ttl: 5), for: Self.name("short"))
        try store.setRegistration(NameRegistration(addresses: nil, protocols: nil, ttl: 600), for: Self.name("fine"))
        // A read that may not write reports it and changes nothing.
        #expect(try store.registrations(dropInvalid: false).dropped.count == 1)
        let listed = try store.registrations()
        #expect(listed.registrations.map(\.name) == [Self.name("fine")])
        #expect(listed.dropped.count == 1)
        #expect(listed.dropped.first?.hasPrefix("short.agent") == true)
        #expect(try store.registrations().dropped.isEmpty)
        #expect(try store.ownRecords().count == 2)
    }

    @Test("a name's sender changes with its version: the per-sender quota follows the current sender", arguments: StoreKind.allCases)
    func senderFollowsVersion(kind: StoreKind) throws {
        var configuration = RecordStoreConfiguration()
        configuration.maximumRecordsPerSender = 1
        let store = try kind.make(configuration)
        try store.put(Fixtures.record(name: Self.name("a0")), from: Self.bobPeer, now: Self.now)
        // Carol relays a newer version of a0: it now counts as hers, and Bob has room again.
        try store.put(Fixtures.record(name: Self.name("a0"), seq: 2), from: Self.carolPeer, now: Self.now)
        #expect(try store.put(Fixtures.record(name: Self.name("b0")), from: Self.bobPeer, now: Self.now) == .firstClaim)
        let full = #expect(throws: ResolutionError.self) {
            try store.put(Fixtures.record(name: Self.name("c0")), from: Self.carolPeer, now: Self.now)
        }
        #expect(full?.kind == .storeFull)
        // Her own name updated again by her does not count twice.
        #expect(
            try store.put(Fixtures.record(name: Self.name("a0"), seq: 3), from: Self.carolPeer, now: Self.now) == .update)
    }

    @Test("a hand-edited registration that does not decode is dropped with its reason, not fatal")
    func corruptRegistration() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/agentd.db"
        let store = try RecordStore(path: path)
        for name in ["one", "two", "three", "four"] {
            try store.setOwnRecord(Fixtures.record(name: Self.name(name)))
            try store.setRegistration(NameRegistration(addresses: nil, protocols: nil, ttl: 600), for: Self.name(name))
        }
        let database = try DatabaseQueue(path: path)
        try database.write { db in
            try db.execute(sql: "UPDATE own_records SET addresses = '[\"not a multiaddr\"]' WHERE name = 'one.agent'")
            try db.execute(sql: "UPDATE own_records SET protocols = '{broken' WHERE name = 'two.agent'")
            try db.execute(sql: "UPDATE own_records SET ttl = 5 WHERE name = 'three.agent'")
        }
        // A read that may not write (the control API's `names`) reports them and changes nothing.
        #expect(try store.registrations(dropInvalid: false).dropped.count == 3)
        #expect(try store.registrations(dropInvalid: false).dropped.count == 3)
        let listed = try store.registrations()
        #expect(listed.registrations.map(\.name) == [Self.name("four")])
        #expect(listed.dropped.count == 3)
        #expect(listed.dropped.contains { $0.hasPrefix("three.agent") })
        // Dropped for good: the rows are unregistered, the own records stay.
        #expect(try store.registrations().dropped.isEmpty)
        #expect(try store.ownRecords().count == 4)
    }

    @Test("a database from before registrations (records-v1) opens, migrates and keeps its own records")
    func migrationFromV1() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/agentd.db"
        let own = Fixtures.record(seq: 9)
        do {
            let database = try DatabaseQueue(path: path)
            try RecordStoreSchema.migrator.migrate(database, upTo: "records-v1")
            try database.write { db in
                try db.execute(
                    sql: "INSERT INTO own_records (name, record) VALUES (?, ?)",
                    arguments: [own.record.name.value, Data(own.bytes)])
            }
        }
        let store = try RecordStore(path: path)
        #expect(try store.ownRecords() == [own])
        #expect(try store.registrations().registrations.isEmpty)
        try store.setRegistration(NameRegistration(addresses: nil, protocols: nil, ttl: 600), for: Fixtures.name)
        #expect(try store.registrations().registrations.map(\.name) == [Fixtures.name])
    }

    @Test("corrupt rows are treated as absent and deleted, without a crash")
    func corruptRows() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/agentd.db"
        let store = try RecordStore(path: path)
        let names = ["garbage", "text", "other", "listed"].map { Self.name($0) }
        for name in names { try store.put(Fixtures.record(name: name), from: nil, now: Self.now) }
        try store.setOwnRecord(Fixtures.record())
        try store.setOwnRecord(Fixtures.record(name: Self.name("own")))

        let database = try DatabaseQueue(path: path)
        try database.write { db in
            try db.execute(sql: "UPDATE records SET record = x'deadbeef' WHERE name = 'garbage.agent'")
            try db.execute(sql: "UPDATE records SET record = 'not a record' WHERE name = 'text.agent'")
            // A well-formed record, but for another name.
            try db.execute(
                sql: "UPDATE records SET record = ? WHERE name = 'other.agent'",
                arguments: [Data(Fixtures.record().bytes)])
            try db.execute(sql: "UPDATE records SET record = x'00' WHERE name = 'listed.agent'")
            try db.execute(sql: "UPDATE own_records SET record = x'01' WHERE name = 'own.agent'")
        }

        for name in names.prefix(3) { #expect(try store.get(name, now: Self.now) == nil) }
        #expect(try store.records(now: Self.now, limit: 10) == [])
        #expect(try store.count(now: Self.now) == 0)
        #expect(try store.ownRecord(for: Self.name("own")) == nil)
        #expect(try store.ownRecords() == [Fixtures.record()])
        // The name is free again: a claim is a first claim.
        #expect(try store.put(Fixtures.record(name: names[0]), from: nil, now: Self.now) == .firstClaim)
        // A corrupt row met by put is dropped too.
        try database.write { db in
            try db.execute(sql: "UPDATE records SET record = x'ff' WHERE name = 'garbage.agent'")
        }
        #expect(try store.put(Fixtures.record(name: names[0]), from: nil, now: Self.now) == .firstClaim)
    }

    @Test("a path that cannot be opened gives a storage error naming the path and the reason")
    func unwritablePath() throws {
        let missing = "/nonexistent-\(UUID().uuidString)/agentd.db"
        let error = #expect(throws: ResolutionError.self) { try RecordStore(path: missing) }
        #expect(error?.kind == .storage)
        #expect(error?.message.contains(missing) == true)
        #expect(error?.message.contains("No such file or directory") == true)

        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let directoryError = #expect(throws: ResolutionError.self) { try RecordStore(path: directory) }
        #expect(directoryError?.kind == .storage)
        #expect(directoryError?.message.contains(directory) == true)

        let notADatabase = directory + "/agentd.db"
        _ = FileManager.default.createFile(atPath: notADatabase, contents: Data(repeating: 0x41, count: 4096))
        let garbageError = #expect(throws: ResolutionError.self) { try RecordStore(path: notADatabase) }
        #expect(garbageError?.kind == .storage)
        #expect(garbageError?.message.contains("not a database") == true)
    }

    @Test("concurrent puts and gets from several tasks are serialized", arguments: StoreKind.allCases)
    func concurrency(kind: StoreKind) async throws {
        let store = try kind.make()
        let records = (0..<40).map { Fixtures.record(name: Self.name("c\($0)")) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chunk in stride(from: 0, to: records.count, by: 10) {
                group.addTask {
                    for record in records[chunk..<(chunk + 10)] {
                        try store.put(record, from: Self.bobPeer, now: Self.now)
                        #expect(try store.get(record.record.name, now: Self.now) == record)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try store.count(now: Self.now) == 40)
    }
}
