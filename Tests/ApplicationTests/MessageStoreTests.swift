import Foundation
import GRDB
import Testing

@testable import Application

@Suite("the node's inbox and outbox")
struct MessageStoreTests {
    static let now: UInt64 = 1_800_000_000

    static func message(_ n: UInt8, from sender: String = "alice.agent", to recipient: String = "bob.agent", sequence: UInt64)
        -> MessageStore.Received
    {
        .init(
            id: [UInt8](repeating: n, count: 16), sender: sender, recipient: recipient, sequence: sequence,
            timestampMilliseconds: now * 1000, signed: [n, n, n], via: "direct")
    }

    static func ids(_ reception: MessageStore.Reception) -> [UInt8] {
        guard case .delivered(let messages) = reception else { return [] }
        return messages.map { $0.id[0] }
    }

    @Test("each sender's messages are delivered in its sequence order, once, whatever order they arrive in")
    func order() throws {
        let store = try MessageStore(path: nil)
        #expect(try store.receive(Self.message(3, sequence: 3), now: Self.now) == .held)
        #expect(try store.receive(Self.message(2, sequence: 2), now: Self.now) == .held)
        // Another sender is not held up by alice's gap.
        #expect(Self.ids(try store.receive(Self.message(9, from: "carol.agent", sequence: 1), now: Self.now)) == [9])
        #expect(Self.ids(try store.receive(Self.message(1, sequence: 1), now: Self.now)) == [1, 2, 3])
        #expect(try store.receive(Self.message(2, sequence: 2), now: Self.now) == .duplicate)
        #expect(Self.ids(try store.receive(Self.message(4, sequence: 4), now: Self.now)) == [4])
        // Unordered messages go at once.
        #expect(Self.ids(try store.receive(Self.message(5, sequence: 0), now: Self.now)) == [5])
        #expect(try store.inbox().map { $0.id[0] } == [9, 1, 2, 3, 4, 5])
        #expect(try store.inbox(recipient: "carol.agent").isEmpty)
    }

    @Test("a gap is given up after the hold: held messages go in order, and a late predecessor still arrives once")
    func gaps() throws {
        let store = try MessageStore(path: nil)
        #expect(try store.receive(Self.message(3, sequence: 3), now: Self.now) == .held)
        #expect(try store.receive(Self.message(5, sequence: 5), now: Self.now + 100) == .held)
        #expect(try store.releaseHeld(receivedBefore: Self.now - 1).isEmpty)
        // Only message 3 is overdue; 4 is missing, so 5 stays held.
        #expect(try store.releaseHeld(receivedBefore: Self.now).map { $0.id[0] } == [3])
        #expect(Self.ids(try store.receive(Self.message(4, sequence: 4), now: Self.now + 200)) == [4, 5])
        // 1 and 2, whose turn was given up, are still delivered when they come (once).
        #expect(Self.ids(try store.receive(Self.message(1, sequence: 1), now: Self.now + 300)) == [1])
        #expect(try store.receive(Self.message(1, sequence: 1), now: Self.now + 300) == .duplicate)
        #expect(try store.inbox().map { $0.id[0] } == [3, 4, 5, 1])
    }

    @Test("read messages leave the inbox but their ids are remembered until no copy can remain")
    func acknowledge() throws {
        let store = try MessageStore(path: nil)
        _ = try store.receive(Self.message(1, sequence: 1), now: Self.now)
        _ = try store.receive(Self.message(2, sequence: 2), now: Self.now)
        #expect(try store.acknowledge(ids: [Self.message(1, sequence: 1).id, [7, 7]]) == [Self.message(1, sequence: 1).id])
        #expect(try store.inbox().map { $0.id[0] } == [2])
        try store.removeExpired(now: Self.now + MessageStore.idRetention - 1)
        #expect(try store.receive(Self.message(1, sequence: 1), now: Self.now + 10) == .duplicate)
        try store.removeExpired(now: Self.now + MessageStore.idRetention + 1)
        // Unread messages are never dropped.
        #expect(try store.inbox().map { $0.id[0] } == [2])
    }

    @Test("a database made by the first schema is migrated with its messages kept")
    func migrationFromV1() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("messages-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("messages.db").path
        do {
            let queue = try DatabaseQueue(path: path)
            try MessageStore.migrator.migrate(queue, upTo: "messages-v1")
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO inbox (id, sender, recipient, sequence, timestamp_ms, signed, via, received_at, state,
                            delivered_order, retain_until)
                        VALUES (?, 'alice.agent', 'bob.agent', 1, 1, x'0102', 'direct', 1, 'delivered', 1, 9999999999)
                        """, arguments: [Data(repeating: 7, count: 16)])
                #expect(try Bool.fetchOne(db, sql: "SELECT 1 FROM sqlite_master WHERE name = 'blocked_senders'") == nil)
            }
        }
        let store = try MessageStore(path: path)
        #expect(try store.inbox().map(\.id) == [[UInt8](repeating: 7, count: 16)])
        #expect(try store.block("mallory.agent", now: Self.now))
        #expect(try store.isBlocked("mallory.agent"))
        #expect(try store.receive(Self.message(7, sequence: 1), now: Self.now) == .duplicate)
    }

    @Test("outbox: sequences per pair persist across reopening; status and due retries")
    func outbox() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("messages-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("messages.db").path
        do {
            let store = try MessageStore(path: path)
            #expect(try store.assignSequence(sender: "a.agent", recipient: "b.agent") == 1)
            #expect(try store.assignSequence(sender: "a.agent", recipient: "b.agent") == 2)
            #expect(try store.assignSequence(sender: "a.agent", recipient: "c.agent") == 1)
            let queued = MessageStore.Sent(
                id: [UInt8](repeating: 1, count: 16), sender: "a.agent", recipient: "b.agent", sequence: 2, signed: [1, 2, 3],
                status: .queued, replicas: 0, attempts: 1, nextAttempt: Self.now + 30, expires: Self.now + 3600, lastError: "unreachable")
            try store.record(queued, now: Self.now)
            _ = try store.receive(Self.message(1, sequence: 1), now: Self.now)
        }
        let store = try MessageStore(path: path)
        #expect(try store.assignSequence(sender: "a.agent", recipient: "b.agent") == 3)
        #expect(try store.due(now: Self.now + 29).isEmpty)
        var due = try store.due(now: Self.now + 30)
        #expect(due.map(\.signed) == [[1, 2, 3]])
        due[0].status = .stored
        due[0].replicas = 2
        try store.record(due[0], now: Self.now + 30)
        #expect(try store.due(now: Self.now + 3000).isEmpty)
        #expect(try store.sent(id: due[0].id)?.status == .stored)
        #expect(try store.sent(id: due[0].id)?.replicas == 2)
        #expect(try store.receive(Self.message(1, sequence: 1), now: Self.now) == .duplicate)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
    }
}
