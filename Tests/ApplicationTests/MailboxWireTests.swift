import Foundation
import Identity
import Resolution
import Testing

@testable import Application

@Suite("mailbox protocol messages and access signatures")
struct MailboxWireTests {
    static let now: UInt64 = 1_800_000_000
    static let bob = try! AgentName("bob.agent")
    static let mailbox = MailboxWire.mailboxKey(for: bob)
    static let replica = PeerID(publicKey: Ed25519.PrivateKey().publicKey)

    static func id(_ n: UInt8) -> [UInt8] { [UInt8](repeating: n, count: 16) }
    static func item(_ n: UInt8) -> MailboxStore.Item {
        .init(mailbox: mailbox, id: id(n), sealed: [UInt8](repeating: n, count: 200), expires: now + 3600)
    }

    static func kind(_ body: () throws -> Void) -> MailboxError.Kind? {
        do { try body() } catch { return (error as? MailboxError)?.kind }
        return nil
    }

    @Test("the mailbox key is SHA-256 of \"/agent/mailbox/\" and the canonical name")
    func mailboxKey() throws {
        #expect(MailboxWire.mailboxKey(for: try AgentName("Bob")) == SHA256.hash(Array("/agent/mailbox/bob.agent".utf8)))
        #expect(MailboxWire.mailboxKey(for: try AgentName("alice")) != Self.mailbox)
    }

    @Test("every request and response survives encoding and decoding")
    func roundTrip() throws {
        let key = Ed25519.PrivateKey()
        let access = MailboxAccess(signing: .fetch, name: Self.bob, replica: Self.replica, timestamp: Self.now, key: key)
        let requests: [MailboxWire.Request] = [
            .store(mailbox: Self.mailbox, messages: [Self.item(1), Self.item(2)], recipientPeer: PeerID(publicKey: key.publicKey)),
            .store(mailbox: Self.mailbox, messages: [Self.item(3)], recipientPeer: nil),
            .fetch(mailbox: Self.mailbox, access: access, cursor: 42),
            .ack(mailbox: Self.mailbox, ids: [Self.id(1), Self.id(2)], access: access),
            .offer(mailbox: Self.mailbox, ids: [Self.id(9)]),
            .hint(mailbox: Self.mailbox),
        ]
        for request in requests {
            #expect(try MailboxWire.decodeRequest(try MailboxWire.encode(request)) == request)
        }
        let answers: [(MailboxWire.Request, MailboxWire.Response)] = [
            (requests[0], .stored(["stored", "duplicate"])),
            (requests[2], .page(messages: [Self.item(1)], next: 7)),
            (requests[2], .page(messages: [], next: nil)),
            (requests[3], .acknowledged(2)),
            (requests[4], .wanted([Self.id(9)])),
            (requests[5], .ok),
            (requests[2], .error(MailboxError(.unauthorized, "no"))),
        ]
        for (request, response) in answers {
            #expect(try MailboxWire.decodeResponse(try MailboxWire.encode(response), to: request) == response)
        }
    }

    @Test("hostile requests are refused as malformed or unauthorized, never crash")
    func hostileRequests() throws {
        let valid = try MailboxWire.encode(.store(mailbox: Self.mailbox, messages: [Self.item(1)], recipientPeer: nil))
        #expect(Self.kind { _ = try MailboxWire.decodeRequest([UInt8]()) } == .malformed)  // no mailbox
        for cut in 1..<valid.count {
            // Every truncation is either undecodable or decodes to something the checks refuse.
            #expect(Self.kind { _ = try MailboxWire.decodeRequest(valid.prefix(cut)) } == .malformed)
        }
        var garbage = SeededBytes(seed: 7)
        for _ in 0..<200 {
            let bytes = garbage.next(count: Int(garbage.next(count: 1)[0]))
            _ = Self.kind { _ = try MailboxWire.decodeRequest(bytes) }
        }
        #expect(Self.kind { _ = try MailboxWire.decodeRequest([UInt8](repeating: 0, count: MailboxWire.maximumRequestSize + 1)) } == .malformed)
        let tooMany = try MailboxWire.encode(
            .store(mailbox: Self.mailbox, messages: (0..<17).map { Self.item(UInt8($0)) }, recipientPeer: nil))
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(tooMany) } == .malformed)
        let badID = try MailboxWire.encode(
            .store(mailbox: Self.mailbox, messages: [.init(mailbox: Self.mailbox, id: [1, 2], sealed: [], expires: 1)], recipientPeer: nil))
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(badID) } == .malformed)
        let noIDs = try MailboxWire.encode(.offer(mailbox: Self.mailbox, ids: []))
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(noIDs) } == .malformed)
        let shortMailbox = try MailboxWire.encode(.hint(mailbox: [1, 2, 3]))
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(shortMailbox) } == .malformed)
        // A FETCH without access (type 1, the mailbox only).
        let fetchWithoutAccess: [UInt8] = [0x08, 0x01, 0x12, 0x20] + Self.mailbox
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(fetchWithoutAccess) } == .unauthorized)
        let unknownType: [UInt8] = [0x08, 0x09, 0x12, 0x20] + Self.mailbox
        #expect(Self.kind { _ = try MailboxWire.decodeRequest(unknownType) } == .malformed)
    }

    @Test("hostile responses: a result count that does not match, an id that was not offered, an unknown code")
    func hostileResponses() throws {
        let store = MailboxWire.Request.store(mailbox: Self.mailbox, messages: [Self.item(1), Self.item(2)], recipientPeer: nil)
        #expect(Self.kind { _ = try MailboxWire.decodeResponse(try MailboxWire.encode(.stored(["stored"])), to: store) } == .malformed)
        let offer = MailboxWire.Request.offer(mailbox: Self.mailbox, ids: [Self.id(1)])
        #expect(Self.kind { _ = try MailboxWire.decodeResponse(try MailboxWire.encode(.wanted([Self.id(2)])), to: offer) } == .malformed)
        #expect(Self.kind { _ = try MailboxWire.decodeResponse([0xFF, 0xFF], to: offer) } == .malformed)
        // status ERROR with a code this version does not know.
        var bytes: [UInt8] = [0x08, 0x01, 0x12, 0x04]
        bytes += Array("nope".utf8)
        guard case .error(let error) = try MailboxWire.decodeResponse(bytes, to: offer) else {
            Issue.record("an ERROR status did not decode to an error")
            return
        }
        #expect(error.kind == .malformed)
        #expect(error.message.contains("nope"))
    }

    @Test("an access signature is good only for its name, replica, operation, ids, key and time")
    func access() throws {
        let key = Ed25519.PrivateKey()
        let ids = [Self.id(1), Self.id(2)]
        let access = MailboxAccess(signing: .ack, name: Self.bob, replica: Self.replica, ids: ids, timestamp: Self.now, key: key)
        try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: key.publicKey, now: Self.now + 300)
        try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: key.publicKey, now: Self.now - 300)
        let otherReplica = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let refusals: [() throws -> Void] = [
            { try access.check(.fetch, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: key.publicKey, now: Self.now) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: otherReplica, ids: ids, key: key.publicKey, now: Self.now) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: [Self.id(1)], key: key.publicKey, now: Self.now) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids.reversed(), key: key.publicKey, now: Self.now) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: Ed25519.PrivateKey().publicKey, now: Self.now) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: key.publicKey, now: Self.now + 301) },
            { try access.check(.ack, mailbox: Self.mailbox, replica: Self.replica, ids: ids, key: key.publicKey, now: Self.now - 301) },
            {
                try access.check(
                    .ack, mailbox: MailboxWire.mailboxKey(for: try AgentName("alice")), replica: Self.replica, ids: ids, key: key.publicKey,
                    now: Self.now)
            },
        ]
        for refusal in refusals {
            #expect(Self.kind(refusal) == .unauthorized)
        }
    }
}

/// Deterministic pseudo-random bytes for fuzz-style inputs.
struct SeededBytes {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next(count: Int) -> [UInt8] {
        (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }
}
