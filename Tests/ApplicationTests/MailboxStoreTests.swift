import Foundation
import GRDB
import Testing

@testable import Application

@Suite("mailbox replica store")
struct MailboxStoreTests {
    static let now: UInt64 = 1_800_000_000
    static let day: UInt64 = 24 * 3600

    static func mailbox(_ n: UInt8) -> [UInt8] { [UInt8](repeating: n, count: 32) }
    static func id(_ n: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(n).bigEndian) { Array($0) } + [UInt8](repeating: 0xAB, count: 8) }
    static func item(_ box: UInt8, _ n: Int, size: Int = 100, expires: UInt64 = now + day) -> MailboxStore.Item {
        .init(mailbox: mailbox(box), id: id(n), sealed: [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: size), expires: expires)
    }

    @Test("stored messages come back oldest first, paged by bytes; duplicates change nothing")
    func storeAndFetch() throws {
        let store = try MailboxStore(path: nil)
        for n in 0..<10 { #expect(try store.store(Self.item(1, n), from: "peerA", now: Self.now) == .stored) }
        #expect(try store.store(Self.item(1, 3), from: "peerB", now: Self.now) == .duplicate)
        _ = try store.store(Self.item(2, 99), from: "peerA", now: Self.now)
        var seen: [[UInt8]] = []
        var cursor: Int64? = nil
        var pages = 0
        repeat {
            let page = try store.fetch(mailbox: Self.mailbox(1), after: cursor, maximumBytes: 350, now: Self.now)
            #expect(page.items.count <= 3)
            seen += page.items.map(\.id)
            cursor = page.next
            pages += 1
        } while cursor != nil
        #expect(seen == (0..<10).map(Self.id))
        #expect(pages == 4)
        // One message larger than the page still comes back, alone.
        _ = try store.store(Self.item(3, 1, size: 5000), from: "peerA", now: Self.now)
        #expect(try store.fetch(mailbox: Self.mailbox(3), maximumBytes: 10, now: Self.now).items.count == 1)
        #expect(try store.usage(now: Self.now).messages == 12)
    }

    @Test("acknowledged messages are deleted and cannot be stored again until they would have expired")
    func acknowledge() throws {
        let store = try MailboxStore(path: nil)
        for n in 0..<3 { try store.store(Self.item(1, n), from: "peerA", now: Self.now) }
        #expect(try store.acknowledge(mailbox: Self.mailbox(1), ids: [Self.id(0), Self.id(2), Self.id(7)], now: Self.now) == 2)
        #expect(try store.fetch(mailbox: Self.mailbox(1), now: Self.now).items.map(\.id) == [Self.id(1)])
        #expect(try store.store(Self.item(1, 0), from: "peerB", now: Self.now + 10) == .acknowledged)
        // An id acknowledged before this replica saw it is refused too (re-replication races).
        #expect(try store.store(Self.item(1, 7), from: "peerB", now: Self.now + 10) == .acknowledged)
        // After the tombstone's expiry the id is free again (and by then a copy would be expired).
        try store.removeExpired(now: Self.now + Self.day + 1)
        #expect(try store.store(Self.item(1, 0, expires: Self.now + 3 * Self.day), from: "peerB", now: Self.now + Self.day + 1) == .stored)
    }

    @Test("limits: size, expiry, TTL, malformed keys")
    func limits() throws {
        let store = try MailboxStore(path: nil)
        func kind(_ body: () throws -> Void) -> MailboxError.Kind? {
            do { try body() } catch { return (error as? MailboxError)?.kind }
            return nil
        }
        #expect(kind { try store.store(Self.item(1, 1, size: store.configuration.maximumMessageBytes + 1), from: "p", now: Self.now) } == .tooLarge)
        #expect(kind { try store.store(Self.item(1, 1, expires: Self.now), from: "p", now: Self.now) } == .expired)
        #expect(kind { try store.store(Self.item(1, 1, expires: Self.now + 8 * Self.day), from: "p", now: Self.now) } == .ttlTooLong)
        #expect(kind { try store.store(.init(mailbox: [1, 2], id: Self.id(1), sealed: [], expires: Self.now + 1), from: "p", now: Self.now) } == .malformed)
        #expect(kind { try store.store(.init(mailbox: Self.mailbox(1), id: [1], sealed: [], expires: Self.now + 1), from: "p", now: Self.now) } == .malformed)
        #expect(kind { _ = try store.fetch(mailbox: [], now: Self.now) } == .malformed)
        #expect(kind { try store.acknowledge(mailbox: Self.mailbox(1), ids: [[1, 2, 3]], now: Self.now) } == .malformed)
        // Nothing of the above was stored.
        #expect(try store.usage(now: Self.now).messages == 0)
        #expect(try store.store(Self.item(1, 1, size: store.configuration.maximumMessageBytes, expires: Self.now + 7 * Self.day), from: "p", now: Self.now) == .stored)
    }

    @Test("quotas: a full mailbox or a flooding sender is refused; other mailboxes and senders are unaffected")
    func quotas() throws {
        var configuration = MailboxStore.Configuration()
        configuration.maximumMessagesPerMailbox = 5
        configuration.maximumMessagesPerSender = 8
        configuration.maximumBytesPerSender = 10_000
        configuration.maximumMessages = 12
        let store = try MailboxStore(path: nil, configuration: configuration)
        for n in 0..<5 { try store.store(Self.item(1, n), from: "flooder", now: Self.now) }
        #expect(throws: MailboxError.self) { try store.store(Self.item(1, 5), from: "other", now: Self.now) }
        do {
            try store.store(Self.item(1, 5), from: "other", now: Self.now)
        } catch { #expect(error.kind == .mailboxFull) }
        for n in 0..<3 { try store.store(Self.item(2, n), from: "flooder", now: Self.now) }
        do {
            try store.store(Self.item(3, 0), from: "flooder", now: Self.now)
            Issue.record("the ninth message of one sender was stored")
        } catch { #expect(error.kind == .senderQuota) }
        do {
            try store.store(Self.item(3, 0, size: 3000), from: "bytes", now: Self.now)
            try store.store(Self.item(3, 1, size: 3000), from: "bytes", now: Self.now)
            try store.store(Self.item(3, 2, size: 3000), from: "bytes", now: Self.now)
            try store.store(Self.item(3, 3, size: 3000), from: "bytes", now: Self.now)
            Issue.record("12,000 bytes of one sender were stored")
        } catch { #expect(error.kind == .senderQuota) }
        try store.store(Self.item(4, 0), from: "third", now: Self.now)
        do {
            try store.store(Self.item(4, 1), from: "fourth", now: Self.now)
            Issue.record("the thirteenth message was stored")
        } catch { #expect(error.kind == .storeFull) }
        // Every message stored before the refusals is still there.
        #expect(try store.fetch(mailbox: Self.mailbox(1), now: Self.now).items.count == 5)
        #expect(try store.usage(now: Self.now).messages == 12)
        // Expired messages free their place.
        #expect(try store.store(Self.item(4, 1, expires: Self.now + 2 * Self.day), from: "fourth", now: Self.now + Self.day) == .stored)
    }

    @Test("a stored message survives reopening the database file, which is private to its owner")
    func durable() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mailbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("messages.db").path
        do {
            let store = try MailboxStore(path: path)
            try store.store(Self.item(1, 1), from: "peerA", now: Self.now)
            try store.acknowledge(mailbox: Self.mailbox(1), ids: [Self.id(2)], now: Self.now)
        }
        let reopened = try MailboxStore(path: path)
        #expect(try reopened.fetch(mailbox: Self.mailbox(1), now: Self.now).items == [Self.item(1, 1)])
        #expect(try reopened.store(Self.item(1, 2), from: "peerA", now: Self.now) == .acknowledged)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    /// The counters recomputed from the rows, as the quota checks once summed them.
    static func recount(_ items: [(item: MailboxStore.Item, sender: String)]) -> [String: [Data: (messages: Int, bytes: Int)]] {
        var result: [String: [Data: (messages: Int, bytes: Int)]] = [:]
        func add(_ scope: String, _ key: Data, _ size: Int) {
            let old = result[scope, default: [:]][key] ?? (0, 0)
            result[scope, default: [:]][key] = (old.messages + 1, old.bytes + size)
        }
        for (item, sender) in items {
            add("mailbox", Data(item.mailbox), item.sealed.count)
            add("sender", Data(sender.utf8), item.sealed.count)
            add("total", Data(), item.sealed.count)
        }
        return result
    }

    static func same(_ a: [String: [Data: (messages: Int, bytes: Int)]], _ b: [String: [Data: (messages: Int, bytes: Int)]]) -> Bool {
        a.keys.sorted() == b.keys.sorted()
            && a.allSatisfy { scope, counters in
                let other = b[scope]!
                return counters.count == other.count
                    && counters.allSatisfy { key, value in other[key].map { $0 == value } ?? false }
            }
    }

    @Test("the quota counters follow stores, acknowledgements and expiry exactly (random operations against a recount)")
    func countersFollowTheRows() throws {
        var generator = SystemRandomNumberGenerator()
        let store = try MailboxStore(path: nil)
        var live: [(item: MailboxStore.Item, sender: String)] = []
        var now = Self.now
        for step in 0..<600 {
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<6:
                let item = Self.item(
                    UInt8.random(in: 1...4, using: &generator), step, size: Int.random(in: 1...3000, using: &generator),
                    expires: now + UInt64.random(in: 60...7200, using: &generator))
                let sender = "peer\(Int.random(in: 0..<5, using: &generator))"
                if try store.store(item, from: sender, now: now) == .stored { live.append((item, sender)) }
            case 6..<8:
                guard let victim = live.randomElement(using: &generator) else { continue }
                #expect(try store.acknowledge(mailbox: victim.item.mailbox, ids: [victim.item.id], now: now) == 1)
                live.removeAll { $0.item.id == victim.item.id }
            case 8:
                now += 600
                try store.removeExpired(now: now)
                live.removeAll { $0.item.expires <= now }
            default:
                // A duplicate changes nothing.
                if let again = live.randomElement(using: &generator) {
                    #expect(try store.store(again.item, from: again.sender, now: now) == .duplicate)
                }
            }
            #expect(Self.same(try store.counters(), Self.recount(live)), "counters drifted at step \(step)")
        }
        now += 3 * 7200
        try store.removeExpired(now: now)
        let left = try store.counters()
        #expect(left.isEmpty, "counters of an empty store: \(left)")
    }

    @Test("a replica store made by the first schema gets counters for the messages it holds; quotas count them")
    func countersMigration() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mailbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("messages.db").path
        do {
            let queue = try DatabaseQueue(path: path)
            try MailboxStore.migrator.migrate(queue, upTo: "mailbox-v1")
            try queue.write { db in
                for n in 0..<3 {
                    try db.execute(
                        sql: "INSERT INTO mailbox_items (mailbox, id, sealed, size, sender, expires, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        arguments: [Data(Self.mailbox(1)), Data(Self.id(n)), Data([1, 2, 3]), 3, "peerA", Self.now + Self.day, Self.now])
                }
            }
        }
        var configuration = MailboxStore.Configuration()
        configuration.maximumMessagesPerMailbox = 4
        let store = try MailboxStore(path: path, configuration: configuration)
        let counters = try store.counters()
        #expect(counters["mailbox"]?[Data(Self.mailbox(1))].map { $0 == (3, 9) } == true)
        #expect(counters["sender"]?[Data("peerA".utf8)].map { $0 == (3, 9) } == true)
        #expect(counters["total"]?[Data()].map { $0 == (3, 9) } == true)
        #expect(try store.store(Self.item(1, 10), from: "peerB", now: Self.now) == .stored)
        do {
            try store.store(Self.item(1, 11), from: "peerB", now: Self.now)
            Issue.record("a fifth message was stored in a mailbox limited to four")
        } catch { #expect(error.kind == .mailboxFull) }
    }
}
