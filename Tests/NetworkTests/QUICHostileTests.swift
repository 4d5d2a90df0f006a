import AgentTesting
import CQuic
import Identity
import Multiformats
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

    static func target(handshakeTimeout: TimeAmount = .seconds(10)) async throws -> Target {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = Host.Configuration()
        configuration.handshakeTimeout = handshakeTimeout
        let host = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        let bound = try await host.listen(on: Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"))
        let endpoint = try #require(host.core.quic.listenerEndpoints.first)
        let (ip, port) = try QUICAddress.hostAndPort(of: bound)
        let socket = try await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        return Target(
            group: group, host: host, address: bound.appending(.p2p(host.peerID.multihash)), endpoint: endpoint,
            socket: socket, remote: try SocketAddress(ipAddress: ip, port: port))
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

    @Test("an Initial flood fills at most the handshake slots; the rest is refused; real peers get in once slots free")
    func initialFlood() async throws {
        let target = try await Self.target(handshakeTimeout: .seconds(1))
        let certificate = try Libp2pTLS.Certificate(identity: Ed25519.PrivateKey())
        let limit = QUICEndpoint.Configuration().maximumHandshakes
        for _ in 0..<(limit * 3) {
            try await target.send(try Self.clientInitial(to: target.remote, certificate: certificate))
        }
        try await Task.sleep(for: .milliseconds(200))
        let flooded = try await target.counters()
        // At most the slots; beyond them refused and counted (the kernel may drop some of the burst
        // before the socket reads it, so not every extra Initial reaches the count).
        #expect(flooded.connections <= limit)
        #expect(flooded.refused > 0)
        // The flood's handshakes never complete (nobody answers the server): they time out, the
        // slots free, and a real dial gets in (its Initial is retransmitted until then).
        try await target.stillServes()
        try await target.shutdown()
    }
}
