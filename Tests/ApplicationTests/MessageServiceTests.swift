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

/// `/agent/msg/1.0.0` between hosts over loopback TCP (spec/messages.md §8), honest and hostile.
@Suite("agent messages between hosts")
struct MessageServiceTests {
    /// A name → record table, as the DHT would answer.
    final class Directory: AgentDirectory {
        let records = NIOLockedValueBox<[AgentName: SignedAgentRecord]>([:])

        func record(for name: AgentName) async throws -> SignedAgentRecord {
            guard let record = records.withLockedValue({ $0[name] }) else {
                throw MessageError(.unknownSender, "no record of \(name) in the test directory")
            }
            return record
        }

        func publish(_ name: AgentName, key: Ed25519.PrivateKey, addresses: [Multiaddr]) throws {
            let seconds = MessageService.systemMilliseconds() / 1000
            let record = try AgentRecord(
                name: name, publicKey: key.publicKey, seq: seconds, timestamp: seconds, addresses: addresses
            ).signed(with: key)
            records.withLockedValue { $0[name] = record }
        }
    }

    struct Node {
        let name: AgentName
        let key: Ed25519.PrivateKey
        let host: Host
        let address: Multiaddr
        let service: MessageService
        let inbox: AsyncStream<MessageService.Delivery>
    }

    /// One network of hosts on 127.0.0.x sharing one directory.
    final class Network: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let directory = Directory()
        let hosts = NIOLockedValueBox<[Host]>([])

        /// A host for `name` on 127.0.0.`ip`, with its record published; the service is started
        /// unless `serving` is false. Its handler puts every delivery in `inbox` (or refuses with
        /// `refusal`).
        func node(
            _ name: String, ip: Int, serving: Bool = true, refusal: MessageError? = nil,
            configuration: MessageService.Configuration = .init()
        ) async throws -> Node {
            let key = Ed25519.PrivateKey()
            let host = Host(identity: key, group: group)
            hosts.withLockedValue { $0.append(host) }
            let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.\(ip)/tcp/0"))
            let agentName = try AgentName(name)
            try directory.publish(agentName, key: key, addresses: [bound])
            let service = MessageService(
                host: host, directory: directory, configuration: configuration, logger: Logger(label: "test.msg"))
            service.addLocalName(agentName, key: key)
            let (inbox, continuation) = AsyncStream.makeStream(of: MessageService.Delivery.self)
            service.setHandler { delivery in
                if let refusal { return refusal }
                continuation.yield(delivery)
                return nil
            }
            if serving { service.start() }
            return Node(
                name: agentName, key: key, host: host, address: bound.appending(.p2p(host.peerID.multihash)),
                service: service, inbox: inbox)
        }

        func shutdown() async {
            for host in hosts.withLockedValue({ $0 }) { await host.shutdown() }
            try? await group.shutdownGracefully()
        }
    }

    static func message(
        _ kind: AgentMessage.Kind, from sender: AgentName, to recipient: AgentName, _ text: String? = nil,
        timestamp: UInt64 = MessageService.systemMilliseconds()
    ) -> AgentMessage {
        AgentMessage(
            kind: kind, sender: sender, recipient: recipient, timestamp: timestamp, content: text.map { .text($0) })
    }

    static func kind(_ body: () async throws -> Void) async -> MessageError.Kind? {
        do {
            try await body()
            return nil
        } catch {
            return (error as? MessageError)?.kind
        }
    }

    /// Writes `frames` on a fresh `/agent/msg/1.0.0` stream from `host` to `node` and reads the
    /// receipts until the stream ends.
    static func raw(_ host: Host, to node: Node, _ frames: [ByteBuffer]) async throws -> [MessageReceipt] {
        let connection = try await host.connect(to: node.address)
        let stream = try await host.newStream(on: connection, protocols: [MessageService.protocolID])
        defer { stream.close() }
        do {
            for frame in frames { try await stream.write(frame) }
            try await stream.closeWrite()
        } catch {
            // The receiver may reset the stream (after an oversized frame) while we still write.
        }
        var decoder = MessageFrameDecoder(maximumLength: MessageReceipt.maximumLength)
        var receipts: [MessageReceipt] = []
        do {
            while true {
                while let frame = try decoder.next() { receipts.append(try MessageReceipt(bytes: frame)) }
                guard var chunk = try await stream.read() else { break }
                decoder.append(&chunk)
            }
        } catch let error as MessageError {
            throw error
        } catch {
            // The receiver resets after an oversized frame; the receipt came first.
        }
        return receipts
    }

    @Test("a notification reaches the recipient's handler, signed, over a direct connection")
    func notification() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let outcome = try await alice.service.send(Self.message(.notification, from: alice.name, to: bob.name, "hello"))
        #expect(outcome.peer == bob.host.peerID)
        #expect(outcome.path == .direct)
        #expect(!outcome.wasDuplicate)
        var inbox = bob.inbox.makeAsyncIterator()
        let delivery = try #require(await inbox.next())
        #expect(delivery.message == outcome.message)
        #expect(delivery.message.message.content == .text("hello"))
        #expect(delivery.peer == alice.host.peerID)
        // With the recipient's record given (the messenger resolved it): no lookup, same delivery;
        // a record for another name is refused before anything is sent.
        let record = try await network.directory.record(for: bob.name)
        let second = try alice.service.sign(Self.message(.notification, from: alice.name, to: bob.name, "again"))
        #expect(try await alice.service.deliver(second, to: record).peer == bob.host.peerID)
        #expect(await inbox.next()?.message == second)
        let aliceRecord = try await network.directory.record(for: alice.name)
        #expect(await Self.kind { try await alice.service.deliver(second, to: aliceRecord) } == .unreachable)
        await network.shutdown()
    }

    @Test("a request gets its response; the response is not handed to the requester's handler")
    func requestResponse() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let responder = Task {
            var inbox = bob.inbox.makeAsyncIterator()
            guard let request = await inbox.next()?.message.message else { return }
            let reply = Self.message(.response(inReplyTo: request.id), from: bob.name, to: request.sender, "pong")
            try await bob.service.send(reply)
            try await bob.service.send(Self.message(.notification, from: bob.name, to: request.sender, "after"))
        }
        let request = Self.message(.request, from: alice.name, to: bob.name, "ping")
        let response = try await alice.service.request(request)
        #expect(response.message.kind == .response(inReplyTo: request.id))
        #expect(response.message.content == .text("pong"))
        try await responder.value
        // The first thing alice's handler sees is the notification sent after the response.
        var inbox = alice.inbox.makeAsyncIterator()
        #expect(await inbox.next()?.message.message.content == .text("after"))
        await network.shutdown()
    }

    @Test("an ERROR answers a request; a request nobody answers times out")
    func errorAndTimeout() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let responder = Task {
            var inbox = bob.inbox.makeAsyncIterator()
            guard let request = await inbox.next()?.message.message else { return }
            let error = AgentMessage.Kind.error(inReplyTo: request.id, code: "no_such_method", text: "frob")
            try await bob.service.send(Self.message(error, from: bob.name, to: request.sender))
            _ = await inbox.next()  // the second request, never answered
        }
        let answer = try await alice.service.request(Self.message(.request, from: alice.name, to: bob.name, "frob"))
        #expect(answer.message.type == .error)
        let silent = Self.message(.request, from: alice.name, to: bob.name, "anyone?")
        #expect(
            await Self.kind { _ = try await alice.service.request(silent, timeout: .milliseconds(300)) } == .timeout)
        try await responder.value
        await network.shutdown()
    }

    @Test("a forged sender is refused bad_signature and never handed on")
    func forgedSender() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let mallory = try await network.node("mallory", ip: 4)
        // Mallory signs a message that claims to come from alice with her own key.
        let forged = try SignedAgentMessage(
            signing: Self.message(.notification, from: alice.name, to: bob.name, "send money"), with: mallory.key)
        #expect(await Self.kind { try await mallory.service.deliver(forged) } == .badSignature)
        // Mallory cannot have her service sign as alice either.
        #expect(
            await Self.kind {
                try await mallory.service.send(Self.message(.notification, from: alice.name, to: bob.name))
            } == .unknownLocalName)
        try await alice.service.send(Self.message(.notification, from: alice.name, to: bob.name, "real"))
        var inbox = bob.inbox.makeAsyncIterator()
        #expect(await inbox.next()?.message.message.content == .text("real"))
        await network.shutdown()
    }

    @Test("tampered, misaddressed, stale, unknown-sender, garbage and oversized frames get their refusal codes")
    func hostileFrames() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let stranger = Ed25519.PrivateKey()
        let now = MessageService.systemMilliseconds()

        let honest = try alice.service.sign(Self.message(.notification, from: alice.name, to: bob.name, "hello"))
        var tamperedEnvelope = honest.envelope
        tamperedEnvelope[tamperedEnvelope.count - 1] ^= 1  // the last content byte
        var tampered: [UInt8] = []
        ProtobufWriter.appendBytesField(1, tamperedEnvelope, to: &tampered)
        ProtobufWriter.appendBytesField(2, honest.signature, to: &tampered)

        let carol = try AgentName("carol")
        let frames: [(String, [UInt8], MessageError.Kind)] = [
            ("tampered", tampered, .badSignature),
            (
                "wrong recipient",
                try alice.service.sign(Self.message(.notification, from: alice.name, to: carol)).bytes, .wrongRecipient
            ),
            (
                "too old",
                try alice.service.sign(
                    Self.message(.notification, from: alice.name, to: bob.name, timestamp: now - 601_000)
                ).bytes,
                .tooOld
            ),
            (
                "from the future",
                try alice.service.sign(
                    Self.message(.notification, from: alice.name, to: bob.name, timestamp: now + 360_000)
                ).bytes,
                .fromTheFuture
            ),
            (
                "unknown sender",
                try SignedAgentMessage(
                    signing: Self.message(.notification, from: try AgentName("dave"), to: bob.name), with: stranger
                ).bytes, .unknownSender
            ),
            ("garbage", [0x0a, 0x03, 0x01, 0x02], .malformed),
        ]
        let receipts = try await Self.raw(alice.host, to: bob, frames.map { MessageService.frame($0.1) })
        #expect(receipts.map { $0.refusal?.kind } == frames.map { $0.2 })
        #expect(receipts.last?.id == nil, "a frame that does not decode has no id")
        #expect(receipts.first?.id == honest.message.id)

        // A declared length over the limit: refused before the body is waited for, then reset.
        var oversized = ByteBuffer()
        oversized.writeUVarint(UInt64(MessageLimits.maximumMessage + 1))
        oversized.writeBytes([1, 2, 3])
        let refused = try await Self.raw(alice.host, to: bob, [oversized])
        #expect(refused.map { $0.refusal?.kind } == [.oversized])

        // None of it reached the handler: the first delivery is the honest message.
        try await alice.service.deliver(honest)
        var inbox = bob.inbox.makeAsyncIterator()
        #expect(await inbox.next()?.message == honest)
        await network.shutdown()
    }

    @Test("a replayed message is refused replayed, counted as delivered by its sender, and handed on once")
    func replay() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let signed = try alice.service.sign(Self.message(.notification, from: alice.name, to: bob.name, "once"))
        #expect(try await alice.service.deliver(signed).wasDuplicate == false)
        #expect(try await alice.service.deliver(signed).wasDuplicate == true)
        let receipts = try await Self.raw(alice.host, to: bob, [MessageService.frame(signed.bytes)])
        #expect(receipts.map { $0.refusal?.kind } == [.replayed])
        try await alice.service.send(Self.message(.notification, from: alice.name, to: bob.name, "next"))
        var inbox = bob.inbox.makeAsyncIterator()
        #expect(await inbox.next()?.message.message.content == .text("once"))
        #expect(await inbox.next()?.message.message.content == .text("next"))
        await network.shutdown()
    }

    @Test("a refusing handler makes the sender see refused, and the message may be sent again")
    func handlerRefusal() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3, refusal: MessageError(.refused, "alice is blocked"))
        let signed = try alice.service.sign(Self.message(.notification, from: alice.name, to: bob.name))
        #expect(await Self.kind { try await alice.service.deliver(signed) } == .refused)
        // Not remembered as accepted: the retry is refused again for the same reason, not as a replay.
        #expect(await Self.kind { try await alice.service.deliver(signed) } == .refused)
        await network.shutdown()
    }

    @Test("a node that does not speak the protocol, and a name without a record, are clear errors")
    func unsupportedAndUnreachable() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let silent = try await network.node("silent", ip: 3, serving: false)
        #expect(
            await Self.kind {
                try await alice.service.send(Self.message(.notification, from: alice.name, to: silent.name))
            }
                == .protocolNotSupported)
        let nobody = try AgentName("nobody")
        #expect(
            await Self.kind { try await alice.service.send(Self.message(.notification, from: alice.name, to: nobody)) }
                == .unreachable)
        await network.shutdown()
    }

    @Test("STREAM parts arrive in order; parts sent on separate streams out of order are put back in order")
    func streams() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let parts = (0..<20).map { AgentMessage.Content.text("part \($0)") }
        let streamID = try await alice.service.sendStream(from: alice.name, to: bob.name, parts: parts)
        var inbox = bob.inbox.makeAsyncIterator()
        for index in 0..<20 {
            let message = try #require(await inbox.next()).message.message
            #expect(message.kind == .stream(.init(streamID: streamID, sequence: UInt64(index), isEnd: index == 19)))
            #expect(message.content == parts[index])
        }

        let other = MessageID.random()
        let signed = try (0..<3).map { index in
            try alice.service.sign(
                AgentMessage(
                    kind: .stream(.init(streamID: other, sequence: UInt64(index), isEnd: index == 2)),
                    sender: alice.name,
                    recipient: bob.name, timestamp: MessageService.systemMilliseconds(), content: .text("\(index)")))
        }
        for index in [2, 1, 0] { try await alice.service.deliver(signed[index]) }
        for index in 0..<3 { #expect(await inbox.next()?.message == signed[index]) }
        // A first part 40 ahead of its stream's start is beyond the reassembly window.
        let late = try alice.service.sign(
            AgentMessage(
                kind: .stream(.init(streamID: MessageID.random(), sequence: 40, isEnd: false)), sender: alice.name,
                recipient: bob.name, timestamp: MessageService.systemMilliseconds(), content: .text("x")))
        #expect(await Self.kind { try await alice.service.deliver(late) } == .badStream)
        await network.shutdown()
    }

    @Test("three hosts: two senders at once, every message delivered once")
    func threeHosts() async throws {
        let network = Network()
        let alice = try await network.node("alice", ip: 2)
        let bob = try await network.node("bob", ip: 3)
        let carol = try await network.node("carol", ip: 4)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sender in [alice, carol] {
                group.addTask {
                    for index in 0..<25 {
                        try await sender.service.send(
                            Self.message(.notification, from: sender.name, to: bob.name, "\(index)"))
                    }
                }
            }
            try await group.waitForAll()
        }
        var inbox = bob.inbox.makeAsyncIterator()
        var seen: [AgentName: [String]] = [:]
        for _ in 0..<50 {
            let message = try #require(await inbox.next()).message.message
            seen[message.sender, default: []].append(String(decoding: message.content?.bytes ?? [], as: UTF8.self))
        }
        // Each sender sent one message at a time, so its messages arrived in its order.
        #expect(seen[alice.name] == (0..<25).map { "\($0)" })
        #expect(seen[carol.name] == (0..<25).map { "\($0)" })
        await network.shutdown()
    }
}
