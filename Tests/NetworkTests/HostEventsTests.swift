import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

@Suite("Host events: one stream per subscriber, in order, bounded, finished at shutdown", .timeLimit(.minutes(1)))
struct HostEventsTests {
    /// Reads events until `predicate` matches one; returns all read.
    static func read(
        _ iterator: inout AsyncStream<HostEvent>.Iterator, until predicate: (HostEvent) -> Bool
    ) async -> [HostEvent] {
        var seen: [HostEvent] = []
        while let event = await iterator.next() {
            seen.append(event)
            if predicate(event) { return seen }
        }
        return seen
    }

    @Test("a connection is seen as connected, then identified with the observed address, then disconnected, on both sides")
    func lifecycle() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let server = Host(identity: Ed25519.PrivateKey(), group: group)
        let client = Host(identity: Ed25519.PrivateKey(), group: group)
        var serverEvents = server.events(label: "test").makeAsyncIterator()
        var clientEvents = client.events(label: "test").makeAsyncIterator()
        let bound = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let listened = await Self.read(&serverEvents) { if case .listenAddressesChanged = $0 { true } else { false } }
        guard case .listenAddressesChanged(let addresses)? = listened.last else {
            Issue.record("no listen event: \(listened)")
            return
        }
        #expect(addresses == [bound])

        let connection = try await client.connect(to: bound.appending(.p2p(server.peerID.multihash)))
        // Client: connected, then identified (identify of the server) with the address the server
        // saw us come from, then that observed address on its own.
        let clientSeen = await Self.read(&clientEvents) { if case .observedAddress = $0 { true } else { false } }
        guard clientSeen.count == 3,
            case .connected(let peer, let id, .outbound, let remote) = clientSeen[0],
            case .identified(let identifiedPeer, let identifiedID, let info) = clientSeen[1],
            case .observedAddress(let observed, let reporter) = clientSeen[2]
        else {
            Issue.record("client events: \(clientSeen)")
            return
        }
        #expect(peer == server.peerID && id == connection.id && remote == bound)
        #expect(identifiedPeer == server.peerID && identifiedID == connection.id)
        #expect(info.listenAddresses.contains(bound))
        #expect(reporter == server.peerID && observed == info.observedAddress)
        #expect(observed.description.hasPrefix("/ip4/127.0.0.1/tcp/"))

        // After listening, the advertised addresses changed too; then the client connects.
        let serverSeen = await Self.read(&serverEvents) { if case .identified = $0 { true } else { false } }
            .filter { if case .advertisedAddressesChanged = $0 { false } else { true } }
        guard case .connected(client.peerID, _, .inbound, _)? = serverSeen.first else {
            Issue.record("server events: \(serverSeen)")
            return
        }

        connection.close()
        let closedSeen = await Self.read(&clientEvents) { if case .disconnected = $0 { true } else { false } }
        guard case .disconnected(server.peerID, connection.id, 0)? = closedSeen.last else {
            Issue.record("client events after close: \(closedSeen)")
            return
        }
        let serverClosed = await Self.read(&serverEvents) { if case .disconnected = $0 { true } else { false } }
        guard case .disconnected(client.peerID, _, 0)? = serverClosed.last else {
            Issue.record("server events after close: \(serverClosed)")
            return
        }
        await client.shutdown()
        await server.shutdown()
        // Shutdown finishes the streams.
        #expect(await clientEvents.next().map { "\($0)" } == nil)
        #expect(await serverEvents.next().map { "\($0)" } == nil)
        // A subscription after shutdown ends at once.
        var late = server.events(label: "late").makeAsyncIterator()
        #expect(await late.next().map { "\($0)" } == nil)
        try await group.shutdownGracefully()
    }

    @Test("a subscriber that does not read loses the oldest events beyond its buffer, counted and logged, never silently")
    func slowSubscriberBounded() async throws {
        let log = LogRecorder()
        let bus = HostEventBus(logger: log.logger)
        let stream = bus.subscribe(label: "slow", bufferSize: 4)
        let address = try Multiaddr("/ip4/127.0.0.1/tcp/1")
        for index in 0..<1000 { bus.emit(.listenAddressesChanged([address, try Multiaddr("/ip4/127.0.0.1/tcp/\(index + 2)")])) }
        #expect(bus.droppedEvents(label: "slow") == 996)
        #expect(log.lines(containing: "does not keep up").count == 1, "\(log)")
        bus.finish()
        var kept: [Int] = []
        for await event in stream {
            if case .listenAddressesChanged(let addresses) = event, case .tcp(let port)? = addresses.last?.components.last {
                kept.append(Int(port))
            }
        }
        // The newest four survive, in order.
        #expect(kept == [998, 999, 1000, 1001])
    }

    @Test("dropping a subscription ends it; the bus keeps no subscriber behind")
    func unsubscribe() async throws {
        let bus = HostEventBus(logger: Logger(label: "test"))
        let reader = Task {
            var count = 0
            for await _ in bus.subscribe(label: "reader", bufferSize: 8) { count += 1 }
            return count
        }
        while bus.subscriberCount == 0 { await Task.yield() }
        reader.cancel()
        _ = await reader.value
        #expect(bus.subscriberCount == 0)
        bus.emit(.listenAddressesChanged([]))
        #expect(bus.droppedEvents(label: "reader") == 0)
    }
}
