import AgentTesting
import CQuic
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// Hostile datagrams at a QUIC listener: random bytes, truncated and replayed Initials, and a
/// flood of valid Initials. The listener never crashes, keeps its state bounded (handshake slots),
/// and still serves real peers afterwards (spec/network.md, "QUIC").
@Suite("QUIC: hostile datagrams and Initial floods")
struct QUICHostileTests {
    /// C callbacks for throwaway client connections whose only use is their first Initial.
    static let silentCallbacks = cq_callbacks(
        verify_peer: { _, _, _, _, _ in -1 }, handshake_completed: { _ in }, stream_opened: { _, _ in },
        stream_data: { _, _, _, _, _ in }, stream_reset: { _, _, _ in }, stream_closed: { _, _ in },
        stream_acked: { _, _, _ in }, cid_added: { _, _, _ in }, cid_removed: { _, _, _ in })

    /// A real client Initial (a fresh connection id each call), as our C layer writes it.
    static func clientInitial(to remote: SocketAddress, certificate: Libp2pTLS.Certificate) throws -> [UInt8] {
        var config = cq_config()
        config.stream_window = 1 << 20
        config.connection_window = 1 << 22
        config.max_streams_bidi = 16
        config.idle_timeout = 30_000_000_000
        config.handshake_timeout = 10_000_000_000
        let local = try SocketAddress(ipAddress: "127.0.0.1", port: 9)
        var message = [CChar](repeating: 0, count: 256)
        let now = NIODeadline.now().uptimeNanoseconds
        let conn = local.withSockAddr { localAddress, localLength in
            remote.withSockAddr { remoteAddress, remoteLength in
                withUnsafePointer(to: silentCallbacks) { callbacks in
                    cq_conn_client_new(
                        &config, certificate.credentials, localAddress, socklen_t(localLength), remoteAddress,
                        socklen_t(remoteLength), callbacks, nil, now, &message, message.count)
                }
            }
        }
        let client = try #require(conn)
        defer { cq_conn_free(client) }
        var buffer = [UInt8](repeating: 0, count: 8 * Int(CQ_MAX_DATAGRAM))
        var sizes = [Int](repeating: 0, count: 8)
        let count = cq_conn_write(client, &buffer, &sizes, 8, now)
        try #require(count >= 1)
        return Array(buffer[..<sizes[0]])
    }

    struct Target {
        let group: MultiThreadedEventLoopGroup
        let host: Host
        let address: Multiaddr
        let endpoint: QUICEndpoint
        let socket: Channel
        let remote: SocketAddress
        let received: Received

        func send(_ bytes: [UInt8]) async throws {
            try await socket.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: bytes)))
        }

        func counters() async throws -> (connections: Int, dropped: Int, refused: Int) {
            try await endpoint.eventLoop.submit {
                (endpoint.connectionCount, endpoint.droppedDatagrams, endpoint.refusedInitials)
            }.get()
        }

        /// A real peer can still connect and ping.
        func stillServes() async throws {
            let client = Host(identity: Ed25519.PrivateKey(), group: group)
            _ = try await client.connect(to: address)
            #expect(try await Ping.ping(client, peer: host.peerID, count: 2).count == 2)
            await client.shutdown()
        }

        func shutdown() async throws {
            try await socket.close()
            await host.shutdown()
            try await group.shutdownGracefully()
        }
    }

    /// Datagrams the test socket received, in order.
    final class Received: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let datagrams = NIOLockedValueBox<[[UInt8]]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).data.readableBytesView)
            datagrams.withLockedValue { $0.append(bytes) }
        }

        /// Takes the first datagram received that is a long-header packet of `type` (0 Initial,
        /// 3 Retry), dropping the ones before it; waits up to 10 s.
        func take(longHeaderType type: UInt8) async -> [UInt8]? {
            for _ in 0..<500 {
                let found = datagrams.withLockedValue { datagrams -> [UInt8]? in
                    guard let index = datagrams.firstIndex(where: { $0.count > 5 && $0[0] & 0x80 != 0 && ($0[0] >> 4) & 3 == type })
                    else { return nil }
                    defer { datagrams.removeFirst(index + 1) }
                    return datagrams[index]
                }
                if let found { return found }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
    }

    static func target(handshakeTimeout: TimeAmount = .seconds(10)) async throws -> Target {
        let received = Received()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = Host.Configuration()
        configuration.handshakeTimeout = handshakeTimeout
        let host = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        let bound = try await host.listen(on: Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"))
        let endpoint = try #require(host.core.quic.listenerEndpoints.first)
        let (ip, port) = try QUICAddress.hostAndPort(of: bound)
        let socket = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(received) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return Target(
            group: group, host: host, address: bound.appending(.p2p(host.peerID.multihash)), endpoint: endpoint,
            socket: socket, remote: try SocketAddress(ipAddress: ip, port: port), received: received)
    }

    @Test("random datagrams (seeded; long and short headers, every size) are dropped; the listener still serves")
    func randomDatagrams() async throws {
        let target = try await Self.target()
        var rng = SeededGenerator(seed: 0x5175_1c)
        for index in 0..<3000 {
            let size = index % 3 == 0 ? 1200 + Int(rng.next() % 300) : 1 + Int(rng.next() % 1500)
            var bytes = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if index % 3 == 0 {
                // A long-header Initial of QUIC v1 with random connection ids and payload.
                bytes[0] = 0xc0 | (bytes[0] & 0x0f)
                bytes[1...4] = [0, 0, 0, 1]
                bytes[5] = 8
                bytes[14] = 8
            }
            try await target.send(bytes)
        }
        try await target.stillServes()
        let counters = try await target.counters()
        #expect(counters.dropped > 1000)
        #expect(counters.connections <= 1)  // at most the real peer's, while it closes
        try await target.shutdown()
    }

    @Test("every truncation of a real Initial is dropped; a replayed Initial makes one connection, not many")
    func truncatedAndReplayed() async throws {
        let target = try await Self.target()
        let certificate = try Libp2pTLS.Certificate(identity: Ed25519.PrivateKey())
        let initial = try Self.clientInitial(to: target.remote, certificate: certificate)
        #expect(initial.count >= 1200)
        for length in stride(from: 0, to: initial.count, by: 7) {
            try await target.send(Array(initial[..<length]))
        }
        #expect(try await target.counters().connections == 0)
        for _ in 0..<200 { try await target.send(initial) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await target.counters().connections == 1)
        try await target.stillServes()
        try await target.shutdown()
    }

    @Test("an Initial flood from sources that never answer holds at most the Retry threshold's slots; a real peer gets in meanwhile through a Retry")
    func initialFlood() async throws {
        // The flood's handshakes would hold their slots for 30 s: the real peer must not need them
        // to time out.
        let target = try await Self.target(handshakeTimeout: .seconds(30))
        let certificate = try Libp2pTLS.Certificate(identity: Ed25519.PrivateKey())
        let configuration = QUICEndpoint.Configuration()
        for _ in 0..<(configuration.maximumHandshakes * 3) {
            try await target.send(try Self.clientInitial(to: target.remote, certificate: certificate))
        }
        let threshold = configuration.retryThreshold
        let filled = try await QUICLimitsTests.eventually { () async throws -> Bool in
            let counters = try await target.counters()
            return counters.connections >= threshold
        }
        #expect(filled)
        let flooded = try await target.counters()
        // Below the threshold Initials make connections; from it on each gets a stateless Retry
        // (the kernel may drop some of the burst before the socket reads it).
        #expect(flooded.connections == configuration.retryThreshold)
        #expect(try await target.endpoint.eventLoop.submit { target.endpoint.retriesSent }.get() > 0)
        // A real dial follows the Retry with the token and takes a free slot, while the flood's
        // handshakes still hold theirs.
        try await target.stillServes()
        #expect(try await target.counters().connections >= configuration.retryThreshold)
        try await target.shutdown()
    }

    /// A client connection of our C layer driven by hand from the test socket (its Initials, the
    /// Retry it gets, its Initial with the token).
    final class RawClient {
        let conn: OpaquePointer
        let local: SocketAddress
        let remote: SocketAddress

        init(local: SocketAddress, remote: SocketAddress, certificate: Libp2pTLS.Certificate) throws {
            var config = cq_config()
            config.stream_window = 1 << 20
            config.connection_window = 1 << 22
            config.max_streams_bidi = 16
            config.idle_timeout = 30_000_000_000
            config.handshake_timeout = 30_000_000_000
            var message = [CChar](repeating: 0, count: 256)
            let made = local.withSockAddr { localAddress, localLength in
                remote.withSockAddr { remoteAddress, remoteLength in
                    withUnsafePointer(to: QUICHostileTests.silentCallbacks) { callbacks in
                        cq_conn_client_new(
                            &config, certificate.credentials, localAddress, socklen_t(localLength), remoteAddress,
                            socklen_t(remoteLength), callbacks, nil, NIODeadline.now().uptimeNanoseconds, &message,
                            message.count)
                    }
                }
            }
            conn = try #require(made)
            self.local = local
            self.remote = remote
        }

        deinit { cq_conn_free(conn) }

        /// The first datagram it has to send now (an Initial).
        func initial() throws -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 8 * Int(CQ_MAX_DATAGRAM))
            var sizes = [Int](repeating: 0, count: 8)
            let count = cq_conn_write(conn, &buffer, &sizes, 8, NIODeadline.now().uptimeNanoseconds)
            try #require(count >= 1)
            return Array(buffer[..<sizes[0]])
        }

        /// Feeds a datagram from the server; cq_conn_read's result.
        func read(_ datagram: [UInt8]) -> Int32 {
            local.withSockAddr { localAddress, localLength in
                remote.withSockAddr { remoteAddress, remoteLength in
                    cq_conn_read(
                        conn, localAddress, socklen_t(localLength), remoteAddress, socklen_t(remoteLength), datagram,
                        datagram.count, NIODeadline.now().uptimeNanoseconds)
                }
            }
        }
    }

    @Test("clients that follow the Retry fill the other handshake slots; past them every Initial is refused statelessly (CONNECTION_CLOSE), and a real dial fails at once")
    func statelessRefusal() async throws {
        let target = try await Self.target(handshakeTimeout: .seconds(30))
        let certificate = try Libp2pTLS.Certificate(identity: Ed25519.PrivateKey())
        let configuration = QUICEndpoint.Configuration()
        let local = try #require(target.socket.localAddress)
        var clients: [RawClient] = []
        // Below the threshold, plain Initials start handshakes.
        for _ in 0..<configuration.retryThreshold {
            let client = try RawClient(local: local, remote: target.remote, certificate: certificate)
            try await target.send(try client.initial())
            clients.append(client)
        }
        let filled = try await QUICLimitsTests.eventually { () async throws -> Bool in
            try await target.counters().connections == configuration.retryThreshold
        }
        #expect(filled)
        // From there on each gets a Retry; answering it with the token takes a slot.
        for _ in configuration.retryThreshold..<configuration.maximumHandshakes {
            let client = try RawClient(local: local, remote: target.remote, certificate: certificate)
            try await target.send(try client.initial())
            let retry = try #require(await target.received.take(longHeaderType: 3), "no Retry")
            #expect(client.read(retry) == 0)
            try await target.send(try client.initial())
            clients.append(client)
        }
        let full = try await QUICLimitsTests.eventually { () async throws -> Bool in
            try await target.counters().connections == configuration.maximumHandshakes
        }
        #expect(full)
        // Every slot is taken: a new Initial, with or without a token, is refused with an Initial
        // CONNECTION_CLOSE, and nothing is kept for it.
        let refused = try RawClient(local: local, remote: target.remote, certificate: certificate)
        target.received.datagrams.withLockedValue { $0.removeAll() }
        try await target.send(try refused.initial())
        // The server's handshakes retransmit their Initials to the same socket meanwhile: the
        // refused client ignores those (another connection id) and stops at its CONNECTION_CLOSE.
        var stopped = false
        for _ in 0..<200 where !stopped {
            guard let datagram = await target.received.take(longHeaderType: 0) else { break }
            stopped = refused.read(datagram) != 0
        }
        #expect(stopped, "no CONNECTION_CLOSE for the refused client")
        #expect(try await target.counters().refused >= 1)
        #expect(try await target.counters().connections == configuration.maximumHandshakes)
        // A real dial learns at once that it is refused (not at its handshake timeout).
        let group = target.group
        var clientConfiguration = Host.Configuration()
        clientConfiguration.handshakeTimeout = .seconds(20)
        let dialer = Host(identity: Ed25519.PrivateKey(), group: group, configuration: clientConfiguration)
        let started = NIODeadline.now()
        await #expect(throws: NetworkError.self) { _ = try await dialer.connect(to: target.address) }
        #expect(NIODeadline.now() - started < .seconds(15))
        await dialer.shutdown()
        clients.removeAll()
        try await target.shutdown()
    }
}
