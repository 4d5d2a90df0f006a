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

/// Mailbox replicas and their clients as hosts over loopback TCP.
@Suite("mailbox protocol between hosts")
struct MailboxServiceTests {
    static let bob = try! AgentName("bob.agent")
    static let now: UInt64 = 1_800_000_000

    struct Node {
        let host: Host
        let address: Multiaddr
        let key: Ed25519.PrivateKey
        let service: MailboxService
        let store: MailboxStore?
    }

    /// A host with the mailbox service; `keys` is the name → key table its resolver answers from.
    static func node(
        _ group: EventLoopGroup, replica: Bool, keys: [AgentName: Ed25519.PublicKey],
        configuration: MailboxService.Configuration = .init()
    ) async throws -> Node {
        let key = Ed25519.PrivateKey()
        let host = Host(identity: key, group: group)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let store = replica ? try MailboxStore(path: nil) : nil
        let service = MailboxService(
            host: host, store: store, configuration: configuration, logger: Logger(label: "test.mailbox"), now: { Self.now },
            resolveKey: { name in
                guard let key = keys[name] else { throw MailboxError(.unknownRecipient, "no record for \(name)") }
                return key
            })
        service.start()
        return Node(host: host, address: bound.appending(.p2p(host.peerID.multihash)), key: key, service: service, store: store)
    }

    static func item(_ n: UInt8, for name: AgentName = bob) -> MailboxStore.Item {
        .init(mailbox: MailboxWire.mailboxKey(for: name), id: [UInt8](repeating: n, count: 16), sealed: [UInt8](repeating: n, count: 1000), expires: now + 3600)
    }

    @Test("a sender stores, the replica hints the connected recipient, which fetches every page and acknowledges")
    func storeFetchAcknowledge() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let bobKey = Ed25519.PrivateKey()
        let keys = [Self.bob: bobKey.publicKey]
        var small = MailboxService.Configuration()
        small.pageBytes = 3000
        let replica = try await Self.node(group, replica: true, keys: keys, configuration: small)
        let sender = try await Self.node(group, replica: false, keys: keys)
        let recipientHost = Host(identity: bobKey, group: group)
        let recipient = MailboxService(
            host: recipientHost, store: nil, logger: Logger(label: "test.mailbox"), now: { Self.now },
            resolveKey: { _ in bobKey.publicKey })
        let (hints, hintContinuation) = AsyncStream.makeStream(of: PeerID.self)
        recipient.onHint { mailbox, from in
            if mailbox == MailboxWire.mailboxKey(for: Self.bob) { hintContinuation.yield(from) }
        }
        recipient.start()
        let recipientConnection = try await recipientHost.connect(to: replica.address)

        let senderConnection = try await sender.host.connect(to: replica.address)
        let items = (1...20).map { Self.item(UInt8($0)) }
        let first = try await sender.service.store(Array(items[0..<16]), recipientPeer: recipientHost.peerID, on: senderConnection)
        #expect(first == Array(repeating: "stored", count: 16))
        let second = try await sender.service.store(Array(items[14...]), recipientPeer: nil, on: senderConnection)
        #expect(second == ["duplicate", "duplicate", "stored", "stored", "stored", "stored"])
        var hintIterator = hints.makeAsyncIterator()
        #expect(await hintIterator.next() == replica.host.peerID)

        // Small pages: the fetch walks the cursor.
        let fetched = try await recipient.fetchAll(name: Self.bob, key: bobKey, on: recipientConnection)
        #expect(fetched == items)
        #expect(try await recipient.acknowledge(name: Self.bob, ids: fetched.prefix(5).map(\.id), key: bobKey, on: recipientConnection) == 5)
        #expect(try await recipient.fetchAll(name: Self.bob, key: bobKey, on: recipientConnection) == Array(items[5...]))
        // An acknowledged message offered again is not taken back.
        #expect(try await sender.service.store([items[0]], recipientPeer: nil, on: senderConnection) == ["acknowledged"])

        await recipientHost.shutdown()
        await sender.host.shutdown()
        await replica.host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("only the name's key reads or empties a mailbox; an unknown name, a non-replica and a peer without the protocol are clear errors")
    func refusals() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let bobKey = Ed25519.PrivateKey()
        let replica = try await Self.node(group, replica: true, keys: [Self.bob: bobKey.publicKey])
        let thief = try await Self.node(group, replica: false, keys: [:])
        let connection = try await thief.host.connect(to: replica.address)
        _ = try await thief.service.store([Self.item(1)], recipientPeer: nil, on: connection)

        await #expect(throws: MailboxError(.unauthorized, "the access signature is not by the key of bob.agent's record")) {
            _ = try await thief.service.fetchAll(name: Self.bob, key: thief.key, on: connection)
        }
        await #expect(throws: MailboxError.self) {
            try await thief.service.acknowledge(name: Self.bob, ids: [Self.item(1).id], key: thief.key, on: connection)
        }
        // An empty mailbox answers an empty page without a lookup; one holding something checks.
        #expect(try await thief.service.fetchAll(name: try AgentName("dave"), key: thief.key, on: connection).isEmpty)
        _ = try await thief.service.store([Self.item(5, for: try AgentName("carol"))], recipientPeer: nil, on: connection)
        do {
            _ = try await thief.service.fetchAll(name: try AgentName("carol"), key: thief.key, on: connection)
            Issue.record("a fetch for a name without a record succeeded")
        } catch let error as MailboxError {
            #expect(error.kind == .unknownRecipient)
        }
        // The message is still there for its owner.
        #expect(try replica.store!.fetch(mailbox: Self.item(1).mailbox, now: Self.now).items == [Self.item(1)])

        // A node without a store refuses to be a replica.
        let back = try await replica.host.connect(to: thief.address)
        do {
            _ = try await replica.service.store([Self.item(2)], recipientPeer: nil, on: back)
            Issue.record("a node without a store stored a message")
        } catch let error as MailboxError {
            #expect(error.kind == .storeFull)
        }
        // A peer that does not speak the protocol.
        let bare = Host(identity: Ed25519.PrivateKey(), group: group)
        let bareAddress = try await bare.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0")).appending(.p2p(bare.peerID.multihash))
        let bareConnection = try await thief.host.connect(to: bareAddress)
        await #expect(throws: (any Error).self) {
            _ = try await thief.service.store([Self.item(3)], recipientPeer: nil, on: bareConnection)
        }

        await bare.shutdown()
        await thief.host.shutdown()
        await replica.host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("garbage, an oversized length and silence on a mailbox stream are refused; the replica keeps serving")
    func hostileStreams() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // The default request deadline (10 s) for the garbage and the oversized length: they must
        // be refused for what they are, not for slowness under load.
        let replica = try await Self.node(group, replica: true, keys: [:])
        // A short deadline for the silent stream, on a replica of its own.
        var short = MailboxService.Configuration()
        short.requestTimeout = .milliseconds(300)
        let impatient = try await Self.node(group, replica: true, keys: [:], configuration: short)
        let client = try await Self.node(group, replica: false, keys: [:])
        let connection = try await client.host.connect(to: replica.address)
        let impatientConnection = try await client.host.connect(to: impatient.address)

        // Garbage inside a well-formed length prefix: an ERROR answer, not a crash.
        let garbage = try await client.host.newStream(on: connection, protocols: [MailboxWire.protocolID])
        try await garbage.writeLengthPrefixed(ByteBuffer(bytes: [UInt8]([0xFF, 0xFF, 0xFF, 0x01])))
        try await garbage.closeWrite()
        let answer = try await garbage.readLengthPrefixed(maximumLength: MailboxWire.maximumResponseSize)
        let decoded = try MailboxWire.decodeResponse(answer!.readableBytesView, to: .hint(mailbox: Self.item(1).mailbox))
        guard case .error(let error) = decoded else {
            Issue.record("garbage was answered with \(decoded)")
            return
        }
        #expect(error.kind == .malformed)

        // A length prefix over the request limit: the stream is reset.
        let oversized = try await client.host.newStream(on: connection, protocols: [MailboxWire.protocolID])
        var prefix = ByteBuffer()
        prefix.writeUVarint(UInt64(MailboxWire.maximumRequestSize + 1))
        try await oversized.write(prefix)
        await #expect(throws: (any Error).self) { while try await oversized.read() != nil {} }

        // Silence: reset after the request deadline.
        let silent = try await client.host.newStream(on: impatientConnection, protocols: [MailboxWire.protocolID])
        await #expect(throws: (any Error).self) { while try await silent.read() != nil {} }

        // Still serving.
        #expect(try await client.service.store([Self.item(1)], recipientPeer: nil, on: connection) == ["stored"])
        #expect(try await client.service.store([Self.item(1)], recipientPeer: nil, on: impatientConnection) == ["stored"])

        await client.host.shutdown()
        await impatient.host.shutdown()
        await replica.host.shutdown()
        try await group.shutdownGracefully()
    }
}
