#if canImport(Glibc)
    import Glibc
#endif
import Identity
import Multiformats
import NIOCore
import NIOPosix

/// How a connection reaches its peer.
public enum ConnectionPath: Sendable, Hashable {
    /// Over a transport connection of its own (TCP).
    case direct
    /// Through a circuit relay v2 relay: the bytes run inside a stream of a connection to `relay`
    /// (spec/network.md, "Circuit relay").
    case relayed(relay: PeerID)

    public var isRelayed: Bool {
        if case .relayed = self { return true }
        return false
    }

    /// `direct` or `relayed`, as `agentctl` prints it.
    public var name: String { isRelayed ? "relayed" : "direct" }
}

/// What a transport tells the host about a channel it dialled or accepted, before the upgrade.
public struct TransportChannelInfo: Sendable {
    /// Whether the bytes run straight to the peer or through a relay.
    public var path: ConnectionPath
    /// The remote end as a multiaddr without `/p2p`: the socket's address (TCP), or the circuit
    /// address `…/p2p/RELAY/p2p-circuit` (relayed).
    public var remoteAddress: Multiaddr?
    /// The remote IP that admission limits count the channel under, if the channel has one of its
    /// own (a relayed channel counts under its two peers, never under the relay's IP).
    public var remoteIP: IPAddress?

    public init(path: ConnectionPath, remoteAddress: Multiaddr?, remoteIP: IPAddress?) {
        self.path = path
        self.remoteAddress = remoteAddress
        self.remoteIP = remoteIP
    }
}

/// Installs the upgrade (multistream-select, Noise, yamux) on a fresh channel; called on the
/// channel's event loop before it reads a byte.
typealias TransportUpgrade = @Sendable (Channel, TransportChannelInfo) throws -> Void

/// A way of carrying libp2p connections: TCP, or a circuit through a relay. A transport produces
/// connected byte channels; the host runs the same upgrade on each, whatever the transport (libp2p's
/// transport/upgrader split; spec/network.md, "Transports").
protocol Transport: Sendable {
    /// A name for logs and errors ("tcp", "circuit").
    var name: String { get }

    /// Whether this transport dials `address` (a trailing `/p2p/…` aside).
    func canDial(_ address: Multiaddr) -> Bool

    /// Opens a channel to `address` for `peer` on `eventLoop` and runs `upgrade` on it before any
    /// byte is read. The future completes once the channel is connected and `upgrade` ran; the
    /// upgrade itself goes on afterwards (the caller waits for the connection it installed).
    func dial(_ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop, upgrade: @escaping TransportUpgrade)
        -> EventLoopFuture<Void>
}

/// The TCP transport: `/ip4|ip6|dns*/HOST/tcp/PORT`.
struct TCPTransport: Transport {
    let group: EventLoopGroup
    let dialTimeout: TimeAmount
    /// The receive buffer allocator of every TCP connection (see `HostCore.receiveAllocator`).
    let receiveAllocator: AdaptiveRecvByteBufferAllocator

    var name: String { "tcp" }

    /// SO_REUSEPORT (NIO names only SO_REUSEADDR).
    static let reusePort = ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_REUSEPORT))

    func canDial(_ address: Multiaddr) -> Bool {
        (try? TCPAddress.hostAndPort(of: address)) != nil
    }

    func dial(_ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop, upgrade: @escaping TransportUpgrade)
        -> EventLoopFuture<Void>
    {
        dial(address, on: eventLoop, from: nil, timeout: dialTimeout, upgrade: upgrade)
    }

    /// Dials `address`; with `localAddress`, from that address (SO_REUSEADDR and SO_REUSEPORT, as
    /// our listeners set them): a hole punch dials from the listen port, so that a port-preserving
    /// NAT maps it to the port the peer was told to dial (spec/network.md, "Hole punching").
    func dial(
        _ address: Multiaddr, on eventLoop: EventLoop, from localAddress: SocketAddress?, timeout: TimeAmount,
        upgrade: @escaping TransportUpgrade
    ) -> EventLoopFuture<Void> {
        let (host, port): (String, Int)
        do {
            (host, port) = try TCPAddress.hostAndPort(of: address)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        var bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: receiveAllocator)
            .connectTimeout(timeout)
        if let localAddress {
            bootstrap = bootstrap
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(TCPTransport.reusePort, value: 1)
                .bind(to: localAddress)
        }
        bootstrap = bootstrap
            .channelInitializer { channel in
                // Before the connect completes the socket has no remote address: `Connection`
                // reads the socket's own once the handshake is done.
                channel.eventLoop.makeCompletedFuture { try upgrade(channel, Self.info(of: channel)) }
            }
        return bootstrap.connect(host: host, port: port)
            .flatMapError { error in
                eventLoop.makeFailedFuture(
                    NetworkError(.connectionFailed, "cannot connect to \(address): \(HostCore.describe(connectError: error))"))
            }
            .map { _ in }
    }

    /// Listens on `/ip4|ip6/…/tcp/PORT` (`/tcp/0` picks a port); each accepted channel gets
    /// `upgrade`. Returns the listening channel and its bound address.
    func listen(on address: Multiaddr, upgrade: @escaping TransportUpgrade) async throws -> (Channel, Multiaddr) {
        let (host, port) = try TCPAddress.hostAndPort(of: address)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Hole punches dial from the listen port (`dial(_:on:from:timeout:upgrade:)`).
            .serverChannelOption(TCPTransport.reusePort, value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: receiveAllocator)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try upgrade(channel, Self.info(of: channel)) }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw NetworkError(.connectionFailed, "cannot listen on \(address): \(error)")
        }
        guard let local = channel.localAddress.flatMap(TCPAddress.multiaddr(of:)) else {
            channel.close(promise: nil)
            throw NetworkError(.invalidAddress, "listener on \(address) has no usable local address")
        }
        return (channel, local)
    }

    static func info(of channel: Channel) -> TransportChannelInfo {
        TransportChannelInfo(
            path: .direct, remoteAddress: channel.remoteAddress.flatMap(TCPAddress.multiaddr(of:)),
            remoteIP: channel.remoteAddress.flatMap(IPAddress.init))
    }
}
