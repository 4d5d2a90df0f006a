import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Session

/// Conversions between multiaddrs and socket addresses for QUIC v1: `/ip4|ip6/HOST/udp/PORT/quic-v1`.
public enum QUICAddress {
    /// The IP and port of a `/ip4|ip6/…/udp/PORT/quic-v1[/p2p/…]` address.
    /// - Throws: `NetworkError.invalidAddress` for anything else (DNS names are not resolved for
    ///   QUIC; the draft-29 `/quic` is not spoken).
    public static func hostAndPort(of address: Multiaddr) throws(NetworkError) -> (host: String, port: Int) {
        var components = address.components[...]
        if case .p2p? = components.last { components = components.dropLast() }
        guard components.count == 3, case .quicV1 = components.last!,
            case .udp(let port) = components[components.startIndex + 1]
        else {
            throw NetworkError(.invalidAddress, "\(address) is not a QUIC v1 address (/ip4|ip6/HOST/udp/PORT/quic-v1)")
        }
        switch components.first! {
        case .ip4(let ip): return (ip.description, Int(port))
        case .ip6(let ip): return (ip.description, Int(port))
        default:
            throw NetworkError(.invalidAddress, "\(address) does not start with /ip4 or /ip6")
        }
    }

    public static func isQUIC(_ address: Multiaddr) -> Bool {
        (try? hostAndPort(of: address)) != nil
    }

    /// The QUIC multiaddr of a socket address, e.g. `/ip4/127.0.0.1/udp/4001/quic-v1`.
    public static func multiaddr(of socketAddress: SocketAddress) -> Multiaddr? {
        guard let tcp = TCPAddress.multiaddr(of: socketAddress), let port = socketAddress.port else { return nil }
        return Multiaddr([tcp.components[0], .udp(UInt16(port)), .quicV1])
    }
}

/// The flow-control windows a host's QUIC connections use under `limits` (spec/network.md, "QUIC
/// limits"): what agent-bench gives its plain C baseline, so both run with the same windows.
public enum QUICWindows {
    public static func windows(for limits: ResourceLimits) -> (stream: UInt64, connection: UInt64) {
        let configuration = QUICEndpoint.Configuration(limits: limits, handshakeTimeout: .seconds(10))
        return (configuration.streamWindow, configuration.connectionWindow)
    }
}

/// The host's libp2p TLS certificate for QUIC (spec/network.md, "QUIC certificate renewal"): made
/// on first use, valid for `certificateLifetime`, and made anew (a new ephemeral key) for the next
/// handshake once less than `certificateRenewal` of its validity remains. A connection holds the
/// certificate it was made with until it ends, so a renewal drops no connection; new handshakes
/// present the new one.
///
/// `@unchecked Sendable`: the mutable state is behind `lock`; the rest is immutable.
final class QUICCertificates: @unchecked Sendable {
    let identity: Ed25519.PrivateKey
    let lifetime: Int64
    let renewal: Int64
    let clock: @Sendable () -> Int64
    let logger: Logger
    private let lock = NIOLock()
    private var certificate: Libp2pTLS.Certificate?
    /// Certificates made so far (tests; status).
    private(set) var made = 0

    init(identity: Ed25519.PrivateKey, configuration: QUICEndpoint.Configuration, logger: Logger) {
        self.identity = identity
        self.lifetime = configuration.certificateLifetime
        self.renewal = configuration.certificateRenewal
        self.clock = configuration.clock
        self.logger = logger
    }

    /// The certificate new handshakes use.
    func current() throws -> Libp2pTLS.Certificate {
        try lock.withLock {
            let now = clock()
            if let certificate, now < certificate.notAfter - renewal { return certificate }
            do {
                let fresh = try Libp2pTLS.Certificate(identity: identity, now: now, lifetime: lifetime)
                if certificate != nil { logger.info("QUIC TLS certificate renewed, valid until \(fresh.notAfter)") }
                certificate = fresh
                made += 1
                return fresh
            } catch {
                // The old one still works until it expires: keep it and try again next handshake.
                if let certificate, now < certificate.notAfter {
                    logger.error("QUIC TLS certificate renewal failed: \(error)")
                    return certificate
                }
                throw error
            }
        }
    }
}

/// The host's QUIC sockets: one endpoint per listen address, plus one per address family bound to
/// an ephemeral port for dials when nothing listens in that family. Dials leave from a listener of
/// the address's family when there is one (spec/network.md, "QUIC").
///
/// `@unchecked Sendable`: the mutable state is behind `lock`.
final class QUICSockets: @unchecked Sendable {
    let group: EventLoopGroup
    let identity: Ed25519.PrivateKey
    let configuration: QUICEndpoint.Configuration
    let logger: Logger
    let certificates: QUICCertificates
    private let lock = NIOLock()
    private var listeners: [(channel: Channel, endpoint: QUICEndpoint)] = []
    private var dialers: [Bool: EventLoopFuture<(Channel, QUICEndpoint)>] = [:]  // keyed by isIPv6
    private var isClosed = false

    init(group: EventLoopGroup, identity: Ed25519.PrivateKey, configuration: QUICEndpoint.Configuration, logger: Logger) {
        self.group = group
        self.identity = identity
        self.configuration = configuration
        self.logger = logger
        self.certificates = QUICCertificates(identity: identity, configuration: configuration, logger: logger)
    }

    /// Binds a listener; `onAccepted` gets each inbound connection once its handshake completed.
    func listen(on address: Multiaddr, onAccepted: @escaping @Sendable (QUICConnectionCore) -> Void) async throws
        -> (Channel, Multiaddr)
    {
        let (host, port) = try QUICAddress.hostAndPort(of: address)
        _ = try certificates.current()  // fails here, before binding, when no certificate can be made
        let (channel, endpoint): (Channel, QUICEndpoint)
        do {
            (channel, endpoint) = try await QUICEndpoint.bind(
                host: host, port: port, group: group, certificates: certificates, configuration: configuration,
                logger: logger)
        } catch let error as NetworkError {
            throw error
        } catch {
            throw NetworkError(.connectionFailed, "cannot listen on \(address): \(error)")
        }
        try await endpoint.eventLoop.submit {
            endpoint.onAccepted = onAccepted
            endpoint.accepting = true
        }.get()
        guard let local = channel.localAddress.flatMap(QUICAddress.multiaddr(of:)) else {
            channel.close(promise: nil)
            throw NetworkError(.invalidAddress, "QUIC listener on \(address) has no usable local address")
        }
        let closed = lock.withLock { () -> Bool in
            if !isClosed { listeners.append((channel, endpoint)) }
            return isClosed
        }
        if closed {
            channel.close(promise: nil)
            throw NetworkError(.shutdown, "the host is shut down")
        }
        return (channel, local)
    }

    /// Dials `address` and completes once the handshake authenticated `peer`.
    func dial(
        _ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop, authenticateOnly: Bool = false,
        handshakeTimeout: TimeAmount? = nil
    ) -> EventLoopFuture<QUICConnectionCore> {
        let host: String
        let port: Int
        let remote: SocketAddress
        do {
            (host, port) = try QUICAddress.hostAndPort(of: address)
            remote = try SocketAddress(ipAddress: host, port: port)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let isIPv6 = remote.protocol == .inet6
        return endpoint(isIPv6: isIPv6, on: eventLoop).flatMap { endpoint in
            endpoint.connect(
                to: remote, peer: peer, authenticateOnly: authenticateOnly, handshakeTimeout: handshakeTimeout)
        }
    }

    /// A listener of the family, else the family's dial-only socket (bound on first use).
    private func endpoint(isIPv6: Bool, on eventLoop: EventLoop) -> EventLoopFuture<QUICEndpoint> {
        do {
            _ = try certificates.current()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let certificates = self.certificates
        let future = lock.withLock { () -> EventLoopFuture<(Channel, QUICEndpoint)>? in
            if let listener = listeners.first(where: { ($0.channel.localAddress?.protocol == .inet6) == isIPv6 }) {
                return eventLoop.makeSucceededFuture(listener)
            }
            if let dialer = dialers[isIPv6] { return dialer }
            guard !isClosed else { return nil }
            let promise = eventLoop.makePromise(of: (Channel, QUICEndpoint).self)
            dialers[isIPv6] = promise.futureResult
            let configuration = self.configuration
            let group = self.group
            let logger = self.logger
            promise.completeWithTask {
                try await QUICEndpoint.bind(
                    host: isIPv6 ? "::" : "0.0.0.0", port: 0, group: group, certificates: certificates,
                    configuration: configuration, logger: logger)
            }
            return promise.futureResult
        }
        guard let future else {
            return eventLoop.makeFailedFuture(NetworkError(.shutdown, "the host is shut down"))
        }
        return future.map { $0.1 }
    }

    /// The listener a hole punch to `remote` leaves from (its family's); nil when none listens.
    func listener(for remote: SocketAddress) -> QUICEndpoint? {
        let isIPv6 = remote.protocol == .inet6
        return lock.withLock {
            listeners.first { ($0.channel.localAddress?.protocol == .inet6) == isIPv6 }?.endpoint
        }
    }

    /// The listening endpoints (tests, status).
    var listenerEndpoints: [QUICEndpoint] { lock.withLock { listeners.map(\.endpoint) } }

    /// Fails every QUIC handshake in flight, on every socket, with "the host is shut down": the
    /// host's shutdown then does not wait for a dial to a silent address until its handshake
    /// timeout (10 s). Connections already established are closed later, with the sockets.
    func abortHandshakes() async {
        let sockets = lock.withLock {
            () -> ([QUICEndpoint], [EventLoopFuture<(Channel, QUICEndpoint)>]) in
            (listeners.map(\.endpoint), Array(dialers.values))
        }
        var endpoints = sockets.0
        for dialer in sockets.1 {
            // A dial-only socket that failed to bind has no handshakes to fail.
            if let (_, endpoint) = try? await dialer.get() { endpoints.append(endpoint) }
        }
        let error = NetworkError(.shutdown, "the host is shut down")
        for endpoint in endpoints {
            // Fails only when the socket's event loop is gone, and then nothing is left to fail.
            try? await endpoint.abortHandshakes(error).get()
        }
    }

    /// Closes every socket (their connections end with them).
    func close() async {
        let (listeners, dialers) = lock.withLock {
            () -> ([(channel: Channel, endpoint: QUICEndpoint)], [EventLoopFuture<(Channel, QUICEndpoint)>]) in
            isClosed = true
            return (self.listeners, Array(self.dialers.values))
        }
        var sockets = listeners.map { ($0.channel, $0.endpoint) }
        for dialer in dialers {
            if let socket = try? await dialer.get() { sockets.append(socket) }
        }
        for (channel, endpoint) in sockets {
            // Peers learn of the close now rather than at their idle timeout.
            try? await endpoint.closeConnections().get()
            try? await channel.close()
        }
    }

    /// Closes every connection of every socket at once, without CONNECTION_CLOSE being awaited.
    func abort() {
        let channels = lock.withLock { listeners.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}

extension HostCore {
    /// Dials a QUIC address: the TLS handshake authenticates `peer` (a certificate for another
    /// peer fails the dial with a `peer id mismatch`), then the connection is registered as a TCP
    /// one would be.
    func dialQUIC(
        _ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop, handshakeTimeout: TimeAmount? = nil
    ) -> EventLoopFuture<Connection> {
        quic.dial(address, peer: peer, on: eventLoop, handshakeTimeout: handshakeTimeout)
            .flatMap { [self] core in
                // The connection lives on its socket's loop (the dial's future may complete on
                // another).
                core.eventLoop.flatSubmit { [self] () -> EventLoopFuture<Connection> in
                    guard core.reserveReceiveWindow(from: resources) else {
                        let refusal = NetworkError(
                            .resourceLimit, "system.memory limit reached: no room for a QUIC connection's receive window")
                        core.close(error: refusal)
                        return core.eventLoop.makeFailedFuture(refusal)
                    }
                    let connection = makeQUICConnection(core, direction: .outbound)
                    connection.quicEstablished()
                    return connection.establishedFuture
                }
            }
            .flatMapThrowing { [self] connection in
                if let refusal = register(connection) { throw refusal }
                return connection
            }
    }

    /// A hole punch over UDP (DCUtR, libp2p/specs relay/DCUtR.md: "In case of QUIC, ... A dials,
    /// B sends UDP packets filled with random bytes to A's address ... in random intervals between
    /// 10 and 200 ms"). `.initiator` (A, the SYNC receiver) dials from the QUIC listen port, with
    /// `timeout` as the handshake timeout; `.responder` (B) sends random datagrams from its listen
    /// port until the connection A dials has come in through our listener (our NAT now lets it
    /// in), or `timeout` passes.
    func punchQUIC(_ address: Multiaddr, peer: PeerID, role: NoiseHandshakeState.Role, timeout: TimeAmount)
        async throws -> Connection
    {
        let (host, port) = try QUICAddress.hostAndPort(of: address)
        let remote = try SocketAddress(ipAddress: host, port: port)
        guard let endpoint = quic.listener(for: remote) else {
            throw NetworkError(.invalidAddress, "no QUIC listener of \(address)'s address family to punch from")
        }
        if role == .initiator {
            let eventLoop = endpoint.eventLoop
            return try await eventLoop.flatSubmit { [self] in
                dialQUIC(address, peer: peer, on: eventLoop, handshakeTimeout: timeout)
            }.get()
        }
        let deadline = NIODeadline.now() + timeout
        var random = SystemRandomNumberGenerator()
        while NIODeadline.now() < deadline {
            if let direct = directConnection(to: peer), direct.quic != nil { return direct }
            endpoint.sendPunchDatagram(to: remote)
            try await Task.sleep(nanoseconds: UInt64.random(in: 10_000_000...200_000_000, using: &random))
        }
        if let direct = directConnection(to: peer), direct.quic != nil { return direct }
        throw NetworkError(.timeout, "no QUIC connection from \(peer) came in through \(address) within the punch")
    }

    /// A QUIC connection our listener accepted completed its handshake: admission (deny list,
    /// limits per IP and subnet), then registration, as for TCP. On the socket's event loop.
    func acceptQUIC(_ core: QUICConnectionCore) {
        guard (try? checkNotShutDown()) != nil else {
            core.close()
            return
        }
        let keys: ResourceManager.AddressKeys?
        switch resources.admitHandshake(from: IPAddress(core.remote)) {
        case .success(let admittedKeys): keys = admittedKeys
        case .failure:
            core.close()
            return
        }
        // The receive window is reserved before the connection counts as established: a node
        // out of memory budget refuses it (as a yamux session refuses streams).
        guard core.reserveReceiveWindow(from: resources) else {
            resources.handshakeEnded(keys)
            core.close()
            return
        }
        let connection = makeQUICConnection(core, direction: .inbound)
        connection.addressKeys = keys
        connection.quicEstablished()
        resources.handshakeEnded(keys)
        if connection.isClosing { return }
        _ = register(connection)
    }

    func makeQUICConnection(_ core: QUICConnectionCore, direction: ConnectionDirection) -> Connection {
        let transport = TransportChannelInfo(
            path: .direct, remoteAddress: QUICAddress.multiaddr(of: core.remote), remoteIP: IPAddress(core.remote))
        return Connection(
            id: allocateConnectionID(), direction: direction, transport: transport, eventLoop: core.eventLoop,
            host: self, configuration: yamuxConfiguration,
            liveness: ConnectionLiveness(
                streamQuietPeriod: configuration.streamQuietPeriod, idleTimeout: configuration.idleTimeout),
            identifyTimeout: configuration.identifyTimeout, logger: logger, quic: core)
    }
}
