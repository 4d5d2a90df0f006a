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

/// Deposits, drains, acknowledgements and re-replication across several replica hosts.
@Suite("mailbox deposits and drains across replicas")
struct MailboxClientTests {
    static let bob = try! AgentName("bob.agent")
    static let now: UInt64 = 1_800_000_000
    static let mailbox = MailboxWire.mailboxKey(for: bob)

    final class Network: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let bobKey = Ed25519.PrivateKey()
        let replicas: [MailboxServiceTests.Node]
        let sender: MailboxServiceTests.Node
        let recipientHost: Host
        let recipient: MailboxService
        /// Which replicas `findReplicas` returns, closest first (indices into `replicas`).
        let order = NIOLockedValueBox<[Int]>([0, 1, 2, 3])

        init() async throws {
            let keys = [MailboxClientTests.bob: bobKey.publicKey]
            var replicas: [MailboxServiceTests.Node] = []
            for _ in 0..<4 { replicas.append(try await MailboxServiceTests.node(group, replica: true, keys: keys)) }
            self.replicas = replicas
            sender = try await MailboxServiceTests.node(group, replica: false, keys: keys)
            recipientHost = Host(identity: bobKey, group: group)
            _ = try await recipientHost.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            recipient = MailboxService(
                host: recipientHost, store: nil, logger: Logger(label: "test"), now: { MailboxClientTests.now },
                resolveKey: { [bobKey] _ in bobKey.publicKey })
        }

        func client(for host: Host, service: MailboxService) -> MailboxClient {
            MailboxClient(service: service, host: host, logger: Logger(label: "test")) { [self] _ in
                order.withLockedValue { $0 }.map { index in
                    MailboxClient.Replica(peer: replicas[index].host.peerID, addresses: [replicas[index].address])
                }
            }
        }

        func shutdown() async throws {
            await recipientHost.shutdown()
            await sender.host.shutdown()
            for replica in replicas { await replica.host.shutdown() }
            try await group.shutdownGracefully()
        }
    }

    static func item(_ n: UInt8, size: Int = 500) -> MailboxStore.Item {
        .init(mailbox: mailbox, id: [UInt8](repeating: n, count: 16), sealed: [UInt8](repeating: n, count: size), expires: now + 3600)
    }

    @Test("stored at the 3 closest; a dead replica is replaced; a drain after losing one replica finds everything once; ACK empties")
    func depositDrainAcknowledge() async throws {
        let network = try await Network()
        let senderClient = network.client(for: network.sender.host, service: network.sender.service)
        let first = try await senderClient.deposit(Self.item(1), recipientPeer: nil)
        #expect(Set(first.confirmed) == Set(network.replicas[0..<3].map(\.host.peerID)))
        #expect(first.failures.isEmpty)

        // Replica 1 is gone: the next closest takes its place.
        await network.replicas[1].host.shutdown()
        let second = try await senderClient.deposit(Self.item(2), recipientPeer: nil)
        #expect(Set(second.confirmed) == Set([0, 2, 3].map { network.replicas[$0].host.peerID }))
        #expect(second.failures.map(\.0) == [network.replicas[1].host.peerID])

        // Replica 0 dies too before bob comes back: replicas 2 and 3 still hold both.
        await network.replicas[0].host.shutdown()
        network.order.withLockedValue { $0 = [0, 2, 3, 1] }
        let bobClient = network.client(for: network.recipientHost, service: network.recipient)
        let drain = try await bobClient.drain(name: Self.bob, key: network.bobKey)
        #expect(Set(drain.items.map(\.id)) == Set([Self.item(1).id, Self.item(2).id]))
        #expect(drain.items.count == 2)
        // Both dead replicas were asked (the drain asks beyond the 3 closest).
        #expect(Set(drain.failures.map(\.0)) == Set([network.replicas[0].host.peerID, network.replicas[1].host.peerID]))
        let acknowledged = await bobClient.acknowledge(name: Self.bob, ids: drain.items.map(\.id), key: network.bobKey, after: drain)
        #expect(acknowledged == 2)
        #expect(try await bobClient.drain(name: Self.bob, key: network.bobKey).items.isEmpty)
        try await network.shutdown()
    }

    @Test("a refusal no replica would accept is reported as permanent")
    func permanentRefusal() async throws {
        let network = try await Network()
        let senderClient = network.client(for: network.sender.host, service: network.sender.service)
        let tooLarge = Self.item(1, size: MailboxStore.Configuration().maximumMessageBytes + 1)
        let deposit = try await senderClient.deposit(tooLarge, recipientPeer: nil)
        #expect(deposit.confirmed.isEmpty)
        #expect(deposit.failures.count == 4)
        #expect(deposit.permanentRefusal?.kind == .tooLarge)
        try await network.shutdown()
    }

    @Test("re-replication copies what a replica holds to the current closest peers, and nothing twice")
    func replicate() async throws {
        let network = try await Network()
        network.order.withLockedValue { $0 = [0] }
        let senderClient = network.client(for: network.sender.host, service: network.sender.service)
        for n in 1...20 { _ = try await senderClient.deposit(Self.item(UInt8(n)), recipientPeer: nil) }
        #expect(try network.replicas[0].store!.usage(now: Self.now).messages == 20)
        // Replicas 2 and 3 are now among the closest.
        network.order.withLockedValue { $0 = [2, 0, 3] }
        let replicaClient = network.client(for: network.replicas[0].host, service: network.replicas[0].service)
        #expect(await replicaClient.replicate(from: network.replicas[0].store!, now: Self.now) == 40)
        #expect(try network.replicas[2].store!.usage(now: Self.now).messages == 20)
        #expect(try network.replicas[3].store!.usage(now: Self.now).messages == 20)
        #expect(await replicaClient.replicate(from: network.replicas[0].store!, now: Self.now) == 0)
        try await network.shutdown()
    }
}
