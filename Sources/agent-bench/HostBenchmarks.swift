import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Network
import Session

/// Our stack end to end: two `Host`s in one process over loopback TCP (Noise + yamux), the client
/// on one event loop group and the server on another, one thread each, so that each side's
/// connection work gets a core.
struct HostPair {
    let client: Host
    let server: Host
    /// The server's listen address with `/p2p/<peer id>`.
    let serverAddress: Multiaddr

    /// Starts both hosts (perf served on both) and connects the client to the server.
    /// - Parameter listen: the server's (and client's) listen address: TCP by default, or
    ///   `/ip4/127.0.0.1/udp/0/quic-v1` for the pair over QUIC.
    static func start(
        client clientGroup: EventLoopGroup, server serverGroup: EventLoopGroup, configuration: Host.Configuration,
        logger: Logger, listen: String = "/ip4/127.0.0.1/tcp/0"
    ) async throws -> HostPair {
        let server = try await startHost(group: serverGroup, configuration: configuration, logger: logger, listen: listen)
        let client = try await startHost(group: clientGroup, configuration: configuration, logger: logger, listen: listen)
        _ = try await client.host.connect(to: server.address)
        return HostPair(client: client.host, server: server.host, serverAddress: server.address)
    }

    /// A host serving perf, listening on a free loopback port; returns it with its full address.
    static func startHost(
        group: EventLoopGroup, configuration: Host.Configuration, logger: Logger, listen: String = "/ip4/127.0.0.1/tcp/0"
    ) async throws -> (host: Host, address: Multiaddr) {
        let host = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration, logger: logger)
        Perf.register(on: host)
        let bound = try await host.listen(on: try Multiaddr(listen))
        return (host, bound.appending(.p2p(host.peerID.multihash)))
    }

    func shutdown() async {
        await client.shutdown()
        await server.shutdown()
    }

    /// perf downloads of `bytes` in total, split over `streams` concurrent streams on the one
    /// connection; returns bytes/s over the wall time of the whole batch.
    func perfDownload(bytes: Int, streams: Int) async throws -> Double {
        let perStream = UInt64(bytes / streams)
        let clock = ContinuousClock()
        let start = clock.now
        let received = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for _ in 0..<streams {
                group.addTask { [client, server] in
                    try await Perf.run(client, peer: server.peerID, upload: 0, download: perStream).downloadBytes
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(received) / (clock.now - start).seconds
    }

    /// `count` ping round trips on one stream, after 10 unmeasured ones; each in seconds.
    func pingRoundTrips(count: Int) async throws -> [Double] {
        let rtts = try await Ping.ping(client, peer: server.peerID, count: count + 10)
        return rtts.dropFirst(10).map(\.seconds)
    }
}

/// Connection set-up rates: whole `Host.connect`s, and the bare upgrade without a host.
enum HandshakeBenchmark {
    /// `count` connects to `address`, spread over `dialers` hosts that each connect, close and
    /// connect again; returns connects/s. Each connect is TCP, multistream `/noise`, Noise XX with
    /// the libp2p payloads and multistream `/yamux/1.0.0`; identify, which the hosts start on every
    /// new connection, runs in the background and is cut short by the close.
    static func hostConnects(count: Int, dialers: Int, to address: Multiaddr, group: EventLoopGroup, logger: Logger)
        async throws -> Double
    {
        var hosts: [Host] = []
        for _ in 0..<dialers { hosts.append(Host(identity: Ed25519.PrivateKey(), group: group, logger: logger)) }
        let perDialer = max(1, count / dialers)
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for host in hosts {
                group.addTask {
                    for _ in 0..<perDialer {
                        let connection = try await host.connect(to: address)
                        connection.close()
                        try await connection.closeFuture.get()
                    }
                }
            }
            try await group.waitForAll()
        }
        let rate = Double(perDialer * dialers) / (clock.now - start).seconds
        for host in hosts { await host.shutdown() }
        return rate
    }

    /// `count` bare upgrades — TCP, multistream `/noise`, Noise XX, multistream `/yamux/1.0.0`,
    /// through `SecureConnectionHandler` alone, no host — with `concurrency` running at once;
    /// returns upgrades/s.
    static func upgrades(count: Int, concurrency: Int, client: EventLoopGroup, server: EventLoopGroup) async throws
        -> Double
    {
        let serverIdentity = Ed25519.PrivateKey()
        let serverStatic = X25519.PrivateKey()
        let serverSignature = NoiseHandshake.staticKeySignature(identity: serverIdentity, staticKey: serverStatic)
        let serverPeer = PeerID(publicKey: serverIdentity.publicKey)
        let listener = try await ServerBootstrap(group: server)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SecureConnectionHandler(
                            configuration: .init(
                                role: .responder, identity: serverIdentity, staticKey: serverStatic,
                                staticKeySignature: serverSignature)))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        let clientIdentity = Ed25519.PrivateKey()
        let clientStatic = X25519.PrivateKey()
        let clientSignature = NoiseHandshake.staticKeySignature(identity: clientIdentity, staticKey: clientStatic)
        let perTask = max(1, count / concurrency)

        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    for _ in 0..<perTask {
                        let loop = client.next()
                        let established = loop.makePromise(of: Void.self)
                        let channel = try await ClientBootstrap(group: loop)
                            .channelOption(.socketOption(.tcp_nodelay), value: 1)
                            .channelInitializer { channel in
                                channel.eventLoop.makeCompletedFuture {
                                    try channel.pipeline.syncOperations.addHandlers([
                                        SecureConnectionHandler(
                                            configuration: .init(
                                                role: .initiator, identity: clientIdentity, staticKey: clientStatic,
                                                expectedPeer: serverPeer, staticKeySignature: clientSignature)),
                                        UpgradeWatcher(established: established),
                                    ])
                                }
                            }
                            .connect(host: "127.0.0.1", port: port).get()
                        try await established.futureResult.get()
                        try await channel.close()
                    }
                }
            }
            try await group.waitForAll()
        }
        let rate = Double(perTask * concurrency) / (clock.now - start).seconds
        try? await listener.close()
        return rate
    }
}

/// Completes `established` when the secure connection below it is up, or fails it.
private final class UpgradeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let established: EventLoopPromise<Void>

    init(established: EventLoopPromise<Void>) {
        self.established = established
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .established? = event as? SecureConnectionEvent { established.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        established.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        established.fail(BenchmarkError("connection closed before the upgrade finished"))
        context.fireChannelInactive()
    }
}
