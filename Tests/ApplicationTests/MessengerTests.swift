import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Network
import Resolution
import Testing

@testable import Application

/// Sending and receiving through the outbox, mailboxes and the inbox, with direct delivery as a
/// switchable fake and mailboxes on real replica hosts.
@Suite("messenger: direct, mailbox, queued; drains in order, once")
struct MessengerTests {
    static let alice = try! AgentName("alice.agent")
    static let bob = try! AgentName("bob.agent")
    static let start: UInt64 = MailboxClientTests.now * 1000

    /// The world of one test: alice's node (sender), bob's node (recipient), replicas, records,
    /// a virtual clock, and a switch for direct delivery.
    final class World: Sendable {
        let network: MailboxClientTests.Network
        let aliceKey = Ed25519.PrivateKey()
        let clock = NIOLockedValueBox<UInt64>(MessengerTests.start)
        /// nil: bob's node is unreachable; else the messenger it delivers into.
        let bobOnline = NIOLockedValueBox<Bool>(false)
        let directRefusal = NIOLockedValueBox<MessageError?>(nil)
        /// Names whose records the resolver does not find (a lookup that missed).
        let hidden = NIOLockedValueBox<Set<AgentName>>([])
        let records: [AgentName: SignedAgentRecord]
        let aliceMessenger: Messenger
        let bobMessenger: Messenger

        init(replicas: [Int] = [0, 1, 2, 3]) async throws {
            network = try await MailboxClientTests.Network()
            network.order.withLockedValue { $0 = replicas }
            let now = MessengerTests.start / 1000
            records = [
                MessengerTests.alice: try AgentRecord(name: MessengerTests.alice, publicKey: aliceKey.publicKey, seq: 1, timestamp: now)
                    .signed(with: aliceKey),
                MessengerTests.bob: try AgentRecord(name: MessengerTests.bob, publicKey: network.bobKey.publicKey, seq: 1, timestamp: now)
                    .signed(with: network.bobKey),
            ]
            let clock = self.clock
            let records = self.records
            let hidden = self.hidden
            let resolve: Messenger.RecordResolver = { name in
                guard let record = records[name], !hidden.withLockedValue({ $0.contains(name) }) else { throw ResolutionError(.notFound, "no record for \(name)") }
                return record
            }
            bobMessenger = Messenger(
                store: try MessageStore(path: nil), mailbox: network.client(for: network.recipientHost, service: network.recipient),
                key: network.bobKey, logger: Logger(label: "test.bob"), nowMilliseconds: { clock.withLockedValue { $0 } },
                resolveRecord: resolve, deliverDirect: { _, _ in throw MessageError(.unreachable, "bob sends nothing here") })
            let bobOnline = self.bobOnline
            let directRefusal = self.directRefusal
            let bobMessenger = self.bobMessenger
            aliceMessenger = Messenger(
                store: try MessageStore(path: nil), mailbox: network.client(for: network.sender.host, service: network.sender.service),
                key: aliceKey, logger: Logger(label: "test.alice"), nowMilliseconds: { clock.withLockedValue { $0 } },
                resolveRecord: resolve,
                deliverDirect: { signed, record in
                    if let refusal = directRefusal.withLockedValue({ $0 }) { throw refusal }
                    guard bobOnline.withLockedValue({ $0 }) else { throw MessageError(.unreachable, "no route to \(record.record.peerID)") }
                    try bobMessenger.accept(signed, via: "direct")
                })
        }

        func message(_ text: String, to recipient: AgentName = MessengerTests.bob) -> AgentMessage {
            AgentMessage(
                kind: .notification, sender: MessengerTests.alice, recipient: recipient, timestamp: clock.withLockedValue { $0 },
                content: .text(text))
        }

        func inboxTexts() throws -> [String] {
            try bobMessenger.inbox().map { String(decoding: $0.message.content?.bytes ?? [], as: UTF8.self) }
        }
    }

    @Test("online: direct; offline: stored at 3 replicas, drained in order once the recipient returns, replicas emptied")
    func directThenMailbox() async throws {
        let world = try await World()
        let received = world.bobMessenger.subscribe()
        world.bobOnline.withLockedValue { $0 = true }
        let direct = try await world.aliceMessenger.send(world.message("one"))
        #expect(direct.delivery == .direct)
        #expect(try world.aliceMessenger.status(of: direct.id)?.status == .delivered)

        world.bobOnline.withLockedValue { $0 = false }
        var stored: [Messenger.SendResult] = []
        for text in ["two", "three", "four"] { stored.append(try await world.aliceMessenger.send(world.message(text))) }
        #expect(stored.map(\.delivery) == [.mailbox, .mailbox, .mailbox])
        #expect(stored.map(\.replicas) == [3, 3, 3])
        #expect(try world.aliceMessenger.status(of: stored[0].id)?.status == .stored)
        #expect(stored.map(\.message.message.senderSequence) == [2, 3, 4])
        // Bob is back: one replica died meanwhile; the drain still finds everything.
        await world.network.replicas[0].host.shutdown()
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 3)
        #expect(try world.inboxTexts() == ["one", "two", "three", "four"])
        var iterator = received.makeAsyncIterator()
        var order: [String] = []
        for _ in 0..<4 { order.append(String(decoding: (await iterator.next())?.message.content?.bytes ?? [], as: UTF8.self)) }
        #expect(order == ["one", "two", "three", "four"])
        // Acknowledged at the replicas: a second drain finds nothing, and nothing is delivered twice.
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 0)
        for replica in world.network.replicas[1...] {
            #expect(try replica.store!.usage(now: MailboxClientTests.now).messages == 0)
        }
        try await world.network.shutdown()
    }

    @Test("a direct message that overtakes stored ones waits for them; a gap is given up at the end of a drain")
    func orderAcrossPaths() async throws {
        let world = try await World()
        _ = try await world.aliceMessenger.send(world.message("one"))  // stored
        world.bobOnline.withLockedValue { $0 = true }
        _ = try await world.aliceMessenger.send(world.message("two"))  // direct, held behind one
        #expect(try world.inboxTexts().isEmpty)
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 1)
        #expect(try world.inboxTexts() == ["one", "two"])

        // Sequence 3 is lost (its mailbox copies are removed before bob drains); 4 comes direct.
        world.bobOnline.withLockedValue { $0 = false }
        let lost = try await world.aliceMessenger.send(world.message("three"))
        for replica in world.network.replicas {
            _ = try replica.store!.acknowledge(mailbox: MailboxWire.mailboxKey(for: MessengerTests.bob), ids: [lost.id.bytes], now: MailboxClientTests.now)
        }
        world.bobOnline.withLockedValue { $0 = true }
        _ = try await world.aliceMessenger.send(world.message("four"))
        #expect(try world.inboxTexts() == ["one", "two"])
        world.clock.withLockedValue { $0 += 1000 }
        _ = await world.bobMessenger.drain(MessengerTests.bob)
        #expect(try world.inboxTexts() == ["one", "two", "four"])
        try await world.network.shutdown()
    }

    @Test("no replica reachable: queued, retried with back-off under the same id, delivered once the recipient is back")
    func queuedAndRetried() async throws {
        let world = try await World(replicas: [])
        let queued = try await world.aliceMessenger.send(world.message("later"))
        #expect(queued.delivery == .queued)
        #expect(queued.reason?.contains("no route") == true)
        #expect(try world.aliceMessenger.status(of: queued.id)?.status == .queued)
        #expect(await world.aliceMessenger.retryDue() == 0)  // not due before 30 s
        world.bobOnline.withLockedValue { $0 = true }
        world.clock.withLockedValue { $0 += 30_000 }
        #expect(await world.aliceMessenger.retryDue() == 1)
        #expect(try world.aliceMessenger.status(of: queued.id)?.status == .delivered)
        let inbox = try world.bobMessenger.inbox()
        #expect(inbox.map(\.message.id) == [queued.id])
        // Re-signed with a fresh timestamp: the retry is not refused as too old.
        #expect(inbox.first?.message.timestamp == MessengerTests.start + 30_000)
        try await world.network.shutdown()
    }

    @Test("refusals: no record for the recipient, a recipient that refuses, an expired queued message")
    func refusals() async throws {
        let world = try await World(replicas: [])
        await #expect(throws: MessageError.self) {
            _ = try await world.aliceMessenger.send(world.message("hi", to: try AgentName("nobody")))
        }
        world.directRefusal.withLockedValue { $0 = MessageError(.badSignature, "refused") }
        do {
            _ = try await world.aliceMessenger.send(world.message("hi"))
            Issue.record("a refused message was reported sent")
        } catch let error as MessageError {
            #expect(error.kind == .badSignature)
        }
        world.directRefusal.withLockedValue { $0 = nil }
        let queued = try await world.aliceMessenger.send(world.message("doomed"))
        world.clock.withLockedValue { $0 += (7 * 24 * 3600 + 1) * 1000 }
        _ = await world.aliceMessenger.retryDue()
        let status = try world.aliceMessenger.status(of: queued.id)
        #expect(status?.status == .failed)
        #expect(status?.lastError?.hasPrefix("expired") == true)
        try await world.network.shutdown()
    }

    @Test("a blocked sender is refused directly and its stored messages are dropped; a fast sender is deferred, not lost")
    func blockAndRate() async throws {
        let world = try await World()
        world.bobOnline.withLockedValue { $0 = true }
        #expect(try world.bobMessenger.block(MessengerTests.alice))
        do {
            _ = try await world.aliceMessenger.send(world.message("blocked"))
            Issue.record("a blocked sender's message was accepted")
        } catch let error as MessageError {
            #expect(error.kind == .refused)
        }
        // Sent while bob was offline, then blocked: dropped at the drain, replicas emptied.
        world.bobOnline.withLockedValue { $0 = false }
        #expect(try world.bobMessenger.unblock(MessengerTests.alice))
        _ = try await world.aliceMessenger.send(world.message("stored"))
        try world.bobMessenger.block(MessengerTests.alice)
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 0)
        #expect(try world.network.replicas[0].store!.usage(now: MailboxClientTests.now).messages == 0)
        #expect(try world.bobMessenger.blockedSenders() == ["alice.agent"])
        try world.bobMessenger.unblock(MessengerTests.alice)

        // Rate: the burst (60) goes direct, the rest to the mailbox; later drains take them in order.
        world.bobOnline.withLockedValue { $0 = true }
        var deliveries: [Messenger.Delivery] = []
        for n in 0..<62 { deliveries.append(try await world.aliceMessenger.send(world.message("m\(n)")).delivery) }
        #expect(deliveries.filter { $0 == .direct }.count == 60)
        #expect(deliveries.suffix(2) == [.mailbox, .mailbox])
        // No time has passed: the drain defers them (left at the replicas).
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 0)
        #expect(try world.network.replicas[0].store!.usage(now: MailboxClientTests.now).messages == 2)
        world.clock.withLockedValue { $0 += 2000 }
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 2)
        #expect(try world.inboxTexts() == (0..<62).map { "m\($0)" })
        try await world.network.shutdown()
    }

    @Test("hostile mailbox items: forged, tampered or misaddressed messages are dropped and acknowledged, never delivered")
    func hostileMailboxItems() async throws {
        let world = try await World()
        let mallory = Ed25519.PrivateKey()
        let mailbox = MailboxWire.mailboxKey(for: MessengerTests.bob)
        let expires = MailboxClientTests.now + 3600
        func item(_ message: AgentMessage, signer: Ed25519.PrivateKey, sealTo: Ed25519.PublicKey) throws -> MailboxStore.Item {
            let signed = try SignedAgentMessage(signing: message, with: signer)
            return .init(mailbox: mailbox, id: signed.message.id.bytes, sealed: try SealedBox.seal(signed.bytes, to: sealTo), expires: expires)
        }
        let bobPublic = world.network.bobKey.publicKey
        var forged = world.message("forged")
        forged.senderSequence = 1
        var misaddressed = world.message("misaddressed", to: try AgentName("carol"))
        misaddressed.senderSequence = 2
        var tampered = try item(world.message("tampered"), signer: world.aliceKey, sealTo: bobPublic)
        tampered.sealed[60] ^= 1
        var wrongID = try item(world.message("wrong id"), signer: world.aliceKey, sealTo: bobPublic)
        wrongID.id = [UInt8](repeating: 9, count: 16)
        let items = [
            try item(forged, signer: mallory, sealTo: bobPublic),
            try item(misaddressed, signer: world.aliceKey, sealTo: bobPublic),
            tampered, wrongID,
            try item(world.message("sealed to someone else"), signer: world.aliceKey, sealTo: mallory.publicKey),
        ]
        for item in items {
            for replica in world.network.replicas[0..<3] {
                _ = try replica.store!.store(item, from: "mallory", now: MailboxClientTests.now)
            }
        }
        #expect(await world.bobMessenger.drain(MessengerTests.bob) == 0)
        #expect(try world.bobMessenger.inbox().isEmpty)
        for replica in world.network.replicas[0..<3] {
            #expect(try replica.store!.usage(now: MailboxClientTests.now).messages == 0)
        }
        try await world.network.shutdown()
    }

    @Test("a send whose recipient has no record fails before taking a sequence number: no gap holds the next messages")
    func notFoundTakesNoSequence() async throws {
        let world = try await World()
        world.bobOnline.withLockedValue { $0 = true }
        world.hidden.withLockedValue { $0 = [MessengerTests.bob] }
        await #expect(throws: MessageError.self) { try await world.aliceMessenger.send(world.message("lost")) }
        world.hidden.withLockedValue { $0 = [] }
        let sent = try await world.aliceMessenger.send(world.message("found"))
        #expect(sent.delivery == .direct)
        #expect(sent.message.message.senderSequence == 1, "the failed send took sequence 1")
        // Bob's inbox took it as deliverable at once (nothing held behind a gap).
        #expect(try world.inboxTexts() == ["found"])
    }
}
