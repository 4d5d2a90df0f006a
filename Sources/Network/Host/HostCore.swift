#if canImport(Glibc)
import Glibc
#endif
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Session

/// The shared state of a host, guarded by a lock; connections call into it from their loops.
///
/// `@unchecked Sendable`: every mutable property is accessed only under `lock`.
final class HostCore: @unchecked Sendable {
    let identity: Ed25519.PrivateKey
    let peerID: PeerID
    let staticKey = X25519.PrivateKey()
    /// The Noise payload's signature over `staticKey`, made once for all handshakes.
    let staticKeySignature: [UInt8]
    let group: EventLoopGroup
    let configuration: Host.Configuration
    let logger: Logger
    /// Host events for the node's services (`Host.events`).
    let events: HostEventBus
    /// Owns the limits and their accounting (see `ResourceManager`).
    let resources: ResourceManager
    /// `configuration.yamux` with the per-connection and per-stream limits applied.
    let yamuxConfiguration: YamuxConfiguration
    /// The address scopes of admitted connections, released when they close.
    private var admitted: [ObjectIdentifier: ResourceManager.AddressKeys?] = [:]

    private let lock = NIOLock()
    private var handlers: [String: @Sendable (MuxedStream) async -> Void] = [:]
    private var connectionsByPeer: [PeerID: [Connection]] = [:] {
        // Kept at each change, so that the per-second trimming check costs nothing.
        didSet { connectionCount = connectionsByPeer.values.reduce(0) { $0 + $1.count } }
    }
    private var connectionCount = 0
    private var pendingDials: [PeerID: EventLoopFuture<Connection>] = [:]
    private var pendingConnections: [ObjectIdentifier: Connection] = [:]
    private var tasks: [Int: (label: String, task: Task<Void, Never>)] = [:]
    private var nextTaskID = 0
    private var listeners: [Channel] = []
    /// The transports dials choose from, in order (TCP first).
    private var transports: [any Transport]
    let tcp: TCPTransport
    /// The QUIC sockets (listeners, and dial-only sockets made on demand; spec/network.md, "QUIC").
    let quic: QUICSockets
    private var boundAddresses: [Multiaddr] = []
    private var punchExpectations: [Multiaddr: (peer: PeerID, role: NoiseHandshakeState.Role)] = [:]
    private var circuitAddressesByRelay: [PeerID: (order: Int, addresses: [Multiaddr])] = [:]
    private var nextCircuitOrder = 0
    private var peerStore = PeerStore()
    private var protection = ConnectionProtection()
    private var nextConnectionID = 1
    private var isShutDown = false
    private var trimming = false
    /// When a trim last closed nothing (every connection busy or in its grace period): the next
    /// waits `trimBackoff`, rather than every idle connection's tick starting one.
    private var fruitlessTrimAt: NIODeadline?
    static let trimBackoff: TimeAmount = .seconds(10)

    init(identity: Ed25519.PrivateKey, group: EventLoopGroup, configuration: Host.Configuration, logger: Logger) {
        self.identity = identity
        self.peerID = PeerID(publicKey: identity.publicKey)
        precondition(
            0 <= configuration.connectionLowWater && configuration.connectionLowWater <= configuration.connectionHighWater,
            "Host.Configuration: connectionLowWater must be between 0 and connectionHighWater")
        self.staticKeySignature = NoiseHandshake.staticKeySignature(identity: identity, staticKey: staticKey)
        self.group = group
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "self"] = "\(peerID)"
        self.logger = logger
        self.events = HostEventBus(logger: logger)
        self.resources = ResourceManager(limits: configuration.limits, denyList: configuration.denyList, logger: logger)
        var yamux = configuration.yamux
        yamux.maximumStreams = configuration.limits.connectionStreams
        yamux.sessionReceiveWindowBudget = max(
            configuration.limits.connectionReceiveWindowMemory, Int(yamux.initialReceiveWindow))
        yamux.sessionSendQueueBudget = configuration.limits.connectionSendQueueMemory
        yamux.maximumQueuedBytesPerStream = configuration.limits.streamSendQueueBytes
        self.yamuxConfiguration = yamux
        self.tcp = TCPTransport(
            group: group, dialTimeout: configuration.dialTimeout, receiveAllocator: Self.receiveAllocator)
        self.transports = [tcp]
        var quicConfiguration = QUICEndpoint.Configuration(
            limits: configuration.limits, handshakeTimeout: configuration.handshakeTimeout)
        quicConfiguration.segmentationOffload = configuration.quicSegmentationOffload
        self.quic = QUICSockets(group: group, identity: identity, configuration: quicConfiguration, logger: logger)
    }

    var listenAddresses: [Multiaddr] { lock.withLock { boundAddresses } }

    var advertisedAddresses: [Multiaddr] {
        LocalInterface.advertisedAddresses(
            bound: listenAddresses, announced: configuration.announcedAddresses, interfaces: LocalInterface.current())
            + circuitAddresses
    }

    /// Our circuit addresses (`…/p2p/RELAY/p2p-circuit`) through the relays where we hold a
    /// reservation, in the order the reservations were made; advertised after the direct ones.
    var circuitAddresses: [Multiaddr] {
        lock.withLock { circuitAddressesByRelay.sorted { $0.value.order < $1.value.order }.flatMap(\.value.addresses) }
    }

    /// Sets (or with an empty list removes) the circuit addresses through `relay`; peers learn
    /// them by identify push, the node's services by `.advertisedAddressesChanged`.
    func setCircuitAddresses(_ addresses: [Multiaddr], through relay: PeerID) {
        let changed = lock.withLock { () -> Bool in
            let old = circuitAddressesByRelay[relay]?.addresses ?? []
            guard old != addresses else { return false }
            if addresses.isEmpty {
                circuitAddressesByRelay[relay] = nil
            } else {
                let order = circuitAddressesByRelay[relay]?.order ?? nextCircuitOrder
                nextCircuitOrder += 1
                circuitAddressesByRelay[relay] = (order, addresses)
            }
            return true
        }
        guard changed else { return }
        events.emit(.advertisedAddressesChanged(advertisedAddresses))
        Identify.pushToAll(core: self)
    }

    var protocolIDs: [String] { lock.withLock { handlers.keys.sorted() } }

    func setHandler(_ id: String, _ handler: @escaping @Sendable (MuxedStream) async -> Void) {
        let isNew = lock.withLock { () -> Bool in
            defer { handlers[id] = handler }
            return handlers[id] == nil
        }
        // Peers already connected learn the new protocol (identify push).
        if isNew { Identify.pushToAll(core: self) }
    }

    /// Stops serving `id`; peers already connected learn it (identify push).
    func removeHandler(_ id: String) {
        let removed = lock.withLock { handlers.removeValue(forKey: id) != nil }
        if removed { Identify.pushToAll(core: self) }
    }

    func peerInfo(_ peer: PeerID) -> IdentifyInfo? { lock.withLock { peerStore.info(for: peer) } }

    /// Stores what identify over `connection` told us, if that connection is still registered (an
    /// answer that arrives after the peer left is dropped: the store keeps connected peers only).
    /// Whether it was stored.
    @discardableResult
    func setPeerInfo(_ info: IdentifyInfo, from connection: Connection) -> Bool {
        guard let peer = connection.remotePeer else { return false }
        let stored = lock.withLock {
            guard connectionsByPeer[peer]?.contains(where: { $0 === connection }) == true else { return false }
            peerStore.set(info, for: peer)
            return true
        }
        guard stored else { return false }
        events.emit(.identified(peer, connection: connection.id, info: info))
        if let observed = info.observedAddress { events.emit(.observedAddress(observed, reportedBy: peer)) }
        return true
    }

    /// Peers in the peer store, and peers with an established connection, read together (tests).
    var peerStoreOccupancy: (stored: Int, connected: Int) {
        lock.withLock { (peerStore.count, connectionsByPeer.count) }
    }

    func protect(_ peer: PeerID, tag: String) { lock.withLock { protection.protect(peer, tag: tag) } }

    func unprotect(_ peer: PeerID, tag: String) -> Bool { lock.withLock { protection.unprotect(peer, tag: tag) } }

    func isProtected(_ peer: PeerID, tag: String? = nil) -> Bool {
        lock.withLock { protection.isProtected(peer, tag: tag) }
    }

    func connection(to peer: PeerID) -> Connection? {
        lock.withLock { Self.preferred(connectionsByPeer[peer]) }
    }

    /// The connection new streams to a peer use: a direct one before a relayed one.
    private static func preferred(_ connections: [Connection]?) -> Connection? {
        guard let connections else { return nil }
        return connections.first { !$0.isClosing && !$0.path.isRelayed } ?? connections.first { !$0.isClosing }
    }

    /// The registered connection with this id, if it is still open.
    func connection(id: Int) -> Connection? {
        lock.withLock { connectionsByPeer.values.lazy.flatMap { $0 }.first { $0.id == id && !$0.isClosing } }
    }

    /// A registered direct (not relayed) connection to `peer` that is not closing.
    func directConnection(to peer: PeerID) -> Connection? {
        lock.withLock { connectionsByPeer[peer]?.first { !$0.isClosing && !$0.path.isRelayed } }
    }

    /// The dial to `peer` in flight through `connect(to:reuse: .anyToPeer)`, if any: joining it
    /// costs nothing, a second dial costs a handshake and a duplicate connection.
    func pendingDial(to peer: PeerID) -> EventLoopFuture<Connection>? {
        lock.withLock { pendingDials[peer] }
    }

    /// How many connections (inbound and outbound, including failed handshakes) this host made.
    var connectionsMade: Int { lock.withLock { nextConnectionID - 1 } }

    /// The next connection id.
    func allocateConnectionID() -> Int {
        lock.withLock {
            defer { nextConnectionID += 1 }
            return nextConnectionID
        }
    }

    private func makeConnection(direction: ConnectionDirection, channel: Channel, transport: TransportChannelInfo)
        -> Connection
    {
        Connection(
            id: allocateConnectionID(), direction: direction, transport: transport, eventLoop: channel.eventLoop, host: self,
            configuration: yamuxConfiguration,
            liveness: ConnectionLiveness(
                streamQuietPeriod: configuration.streamQuietPeriod, idleTimeout: configuration.idleTimeout),
            identifyTimeout: configuration.identifyTimeout, logger: logger)
    }

    /// Socket reads adapt between 2 KiB and 256 KiB (NIO's default stops at 64 KiB). A Noise
    /// transport message takes 65537 bytes on the wire, so 64 KiB reads end inside nearly every
    /// message and each byte would be copied to join its message before decryption; 256 KiB reads
    /// hold about four whole messages, which are decrypted straight from the read buffer, and cost
    /// a quarter of the read calls. NIO reuses the buffer across reads, so the cost is one buffer
    /// of up to 256 KiB per busy connection.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 2048, maximum: 256 * 1024)

    // MARK: Listening

    func listen(on address: Multiaddr) async throws -> Multiaddr {
        let local: Multiaddr
        if QUICAddress.isQUIC(address) {
            // QUIC sockets are closed by `quic.close()` after the connections on them (`shutdown`).
            (_, local) = try await quic.listen(on: address) { [weak self] connection in
                self?.acceptQUIC(connection)
            }
            lock.withLock { boundAddresses.append(local) }
        } else {
            let channel: Channel
            (channel, local) = try await tcp.listen(on: address) { [self] channel, transport in
                try initializeInbound(channel, transport: transport)
            }
            lock.withLock {
                listeners.append(channel)
                boundAddresses.append(local)
            }
        }
        logger.info("listening", metadata: ["addr": "\(local)"])
        events.emit(.listenAddressesChanged(listenAddresses))
        events.emit(.advertisedAddressesChanged(advertisedAddresses))
        // Peers already connected learn the new address (identify push).
        Identify.pushToAll(core: self)
        return local
    }

    /// Every established connection that is not closing.
    var liveConnections: [Connection] {
        lock.withLock { connectionsByPeer.values.flatMap { $0 }.filter { !$0.isClosing } }
    }

    /// Upgrades a channel a transport accepted (a TCP connection, or a circuit a relay opened to
    /// us) as the responder.
    func initializeInbound(_ channel: Channel, transport: TransportChannelInfo) throws {
        guard !lock.withLock({ isShutDown }) else {
            channel.close(promise: nil)
            return
        }
        // Admission before any handshake work: the deny list, and handshakes and connections in
        // flight per node, per IP and per subnet (refusals are counted and logged, rate-limited).
        let keys: ResourceManager.AddressKeys?
        switch resources.admitHandshake(from: transport.remoteIP) {
        case .success(let admittedKeys): keys = admittedKeys
        case .failure:
            channel.close(promise: nil)
            return
        }
        // A hole punch's peer whose SYN our listener accepted: the exchange fixed our role, which
        // may be the initiator's (`expectPunch`).
        let punch = transport.remoteAddress.flatMap { address in lock.withLock { punchExpectations[address] } }
        let role = punch?.role ?? .responder
        let connection = makeConnection(
            direction: role == .initiator ? .outbound : .inbound, channel: channel, transport: transport)
        connection.addressKeys = keys
        lock.withLock { pendingConnections[ObjectIdentifier(connection)] = connection }
        try channel.pipeline.syncOperations.addHandlers([
            SecureConnectionHandler(
                configuration: .init(
                    role: role, identity: identity, staticKey: staticKey, expectedPeer: punch?.peer,
                    handshakeTimeout: configuration.handshakeTimeout, rekey: configuration.rekey,
                    staticKeySignature: staticKeySignature)),
            connection,
        ])
        connection.establishedFuture.whenComplete { [self] result in
            resources.handshakeEnded(keys)
            lock.withLock { pendingConnections[ObjectIdentifier(connection)] = nil }
            if case .success(let connection) = result { _ = register(connection) }
        }
    }

    // MARK: Dialling

    func connect(to address: Multiaddr, reuse: Host.ConnectionReuse = .anyToPeer) async throws -> Connection {
        guard let multihash = address.peerIDMultihash else {
            throw NetworkError(.invalidAddress, "\(address) has no /p2p/<peer id>: the peer to authenticate is unknown")
        }
        let peer: PeerID
        do {
            peer = try PeerID(multihash: multihash)
        } catch {
            throw NetworkError(.invalidAddress, "\(address): \(error.message)")
        }
        guard peer != peerID else {
            throw NetworkError(.invalidAddress, "\(address) is this node itself")
        }
        if resources.isDenied(peer) {
            throw NetworkError(.refused, "peer \(peer) is blocked (agentctl unblock \(peer) lifts it)")
        }
        if let ip = IPAddress(address), let network = resources.deniedNetwork(containing: ip) {
            throw NetworkError(.refused, "\(address) is in the blocked network \(network) (agentctl unblock \(network) lifts it)")
        }
        if reuse == .sameAddress {
            return try await connectThrough(address, peer: peer)
        }
        // One critical section decides: reuse a live connection, join the dial in flight, or
        // become the dial (its promise is in `pendingDials` before the lock is released, so a
        // second caller always joins it; only the caller that put an entry there removes it).
        enum Plan {
            case reuse(Connection)
            case join(EventLoopFuture<Connection>)
            case dial(EventLoopPromise<Connection>)
            case shutDown
        }
        let eventLoop = group.next()
        let plan = lock.withLock { () -> Plan in
            if let existing = Self.preferred(connectionsByPeer[peer]) { return .reuse(existing) }
            if let pending = pendingDials[peer] { return .join(pending) }
            // A dial submitted to a loop of a group that is shutting down never runs (NIO then traps
            // on the unfulfilled promise): a task still working for a shut-down host fails here.
            guard !isShutDown else { return .shutDown }
            let promise = eventLoop.makePromise(of: Connection.self)
            pendingDials[peer] = promise.futureResult
            return .dial(promise)
        }
        switch plan {
        case .reuse(let connection):
            return connection
        case .join(let future):
            return try await future.get()
        case .shutDown:
            throw NetworkError(.shutdown, "the host is shut down")
        case .dial(let promise):
            eventLoop.execute { [self] in
                self.dial(address, peer: peer, on: eventLoop).cascade(to: promise)
            }
            promise.futureResult.whenComplete { [self] _ in
                lock.withLock {
                    if pendingDials[peer] === promise.futureResult { pendingDials[peer] = nil }
                }
            }
            return try await promise.futureResult.get()
        }
    }

    /// `connect(to:reuse: .sameAddress)`: a live connection counts only if it runs to `address`
    /// itself; otherwise `address` is dialled, and the handshake proves the peer there is `peer`. A
    /// user who names an address asks about that address: answering from a connection the peer
    /// made to us (or that we made elsewhere) would report a dead address or the wrong peer's
    /// address as working. The dial is not shared with `pendingDials`, which stand for "some
    /// connection to the peer", not for this address.
    private func connectThrough(_ address: Multiaddr, peer: PeerID) async throws -> Connection {
        // The address as a connection records it: without the peer's /p2p (a circuit address keeps
        // its relay's).
        var components = address.components
        if case .p2p? = components.last { components.removeLast() }
        let target = Multiaddr(components)
        let existing = lock.withLock {
            connectionsByPeer[peer]?.first { !$0.isClosing && $0.direction == .outbound && $0.remoteAddress == target }
        }
        if let existing { return existing }
        let eventLoop = group.next()
        let dialled = try await eventLoop.flatSubmit { [self] in self.dial(address, peer: peer, on: eventLoop) }.get()
        // One logical connection per peer and path (`register`): the new one may have lost to an
        // older one of its path, which answers instead (a relayed dial never answers with the
        // direct connection: the caller asked for the circuit).
        if !dialled.isClosing { return dialled }
        return lock.withLock {
            connectionsByPeer[peer]?.first { !$0.isClosing && $0.path.isRelayed == dialled.path.isRelayed }
        } ?? dialled
    }

    /// The transport that dials `address`, or an error naming what is supported.
    func transport(for address: Multiaddr) throws(NetworkError) -> any Transport {
        if let transport = lock.withLock({ transports.first { $0.canDial(address) } }) { return transport }
        throw NetworkError(
            .invalidAddress,
            "\(address): no transport dials this address (supported: /ip4|ip6|dns*/HOST/tcp/PORT, /ip4|ip6/HOST/udp/PORT/quic-v1, and …/p2p/RELAY/p2p-circuit)")
    }

    /// Adds a transport (the circuit relay client adds itself); dials try transports in order.
    func add(transport: any Transport) {
        lock.withLock { transports.append(transport) }
    }

    /// While a hole punch to `peer` runs: a connection our listener accepts from one of
    /// `addresses` (the peer's punch reached us before ours left) takes `role`, as our own dial
    /// would, instead of the listener's responder role (two responders would wait on each other).
    func expectPunch(from addresses: [Multiaddr], peer: PeerID, role: NoiseHandshakeState.Role) {
        lock.withLock { for address in addresses { punchExpectations[address] = (peer, role) } }
    }

    func endPunch(from addresses: [Multiaddr], peer: PeerID) {
        lock.withLock {
            for address in addresses where punchExpectations[address]?.peer == peer { punchExpectations[address] = nil }
        }
    }

    /// A hole punch's dial (DCUtR): from our TCP listen port, in the role the exchange fixed
    /// (`.initiator` for the peer that received SYNC, `.responder` for the one that sent it: TCP
    /// simultaneous open gives no dialler and listener). The new direct connection coexists with
    /// the relayed one (`register`).
    func punch(_ address: Multiaddr, peer: PeerID, role: NoiseHandshakeState.Role, timeout: TimeAmount) async throws
        -> Connection
    {
        try checkNotShutDown()
        guard let ip = IPAddress(address) else {
            throw NetworkError(.invalidAddress, "\(address) is not an IP address to punch to")
        }
        // The deny list holds for punches as for any dial (`connect`).
        if resources.isDenied(peer) {
            throw NetworkError(.refused, "peer \(peer) is blocked (agentctl unblock \(peer) lifts it)")
        }
        if let network = resources.deniedNetwork(containing: ip) {
            throw NetworkError(.refused, "\(address) is in the blocked network \(network) (agentctl unblock \(network) lifts it)")
        }
        if QUICAddress.isQUIC(address) { return try await punchQUIC(address, peer: peer, role: role, timeout: timeout) }
        let listener = lock.withLock {
            boundAddresses.first { IPAddress($0)?.family == ip.family && (try? TCPAddress.hostAndPort(of: $0)) != nil }
        }
        guard let listener, let local = try? TCPAddress.hostAndPort(of: listener),
            let localAddress = try? SocketAddress(ipAddress: local.host, port: local.port)
        else {
            throw NetworkError(.invalidAddress, "no TCP listener of \(address)'s address family to punch from")
        }
        let eventLoop = group.next()
        return try await eventLoop.flatSubmit { [self] in
            dial(address, peer: peer, on: eventLoop, punching: (role, localAddress, timeout))
        }.get()
    }

    private func dial(
        _ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop,
        punching: (role: NoiseHandshakeState.Role, from: SocketAddress, timeout: TimeAmount)? = nil
    ) -> EventLoopFuture<Connection> {
        if punching == nil, QUICAddress.isQUIC(address) { return dialQUIC(address, peer: peer, on: eventLoop) }
        let transport: any Transport
        do {
            transport = try self.transport(for: address)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let connectionBox = NIOLockedValueBox<Connection?>(nil)
        let role = punching?.role ?? .initiator
        let upgrade: TransportUpgrade = { [self] channel, info in
            let connection = makeConnection(
                direction: role == .initiator ? .outbound : .inbound, channel: channel, transport: info)
            connectionBox.withLockedValue { $0 = connection }
            try channel.pipeline.syncOperations.addHandlers([
                SecureConnectionHandler(
                    configuration: .init(
                        role: role, identity: identity, staticKey: staticKey, expectedPeer: peer,
                        handshakeTimeout: configuration.handshakeTimeout, rekey: configuration.rekey,
                        staticKeySignature: staticKeySignature)),
                connection,
            ])
        }
        let connected: EventLoopFuture<Void>
        if let punching {
            connected = tcp.dial(address, on: eventLoop, from: punching.from, timeout: punching.timeout, upgrade: upgrade)
        } else {
            connected = transport.dial(address, peer: peer, on: eventLoop, upgrade: upgrade)
        }
        return connected
        .flatMap { _ in
            guard let connection = connectionBox.withLockedValue({ $0 }) else {
                preconditionFailure("a connected \(transport.name) channel ran its upgrade")
            }
            return connection.establishedFuture
        }
        .flatMapThrowing { [self] connection in
            if let refusal = register(connection) { throw refusal }
            return connection
        }
    }

    /// A short reason for a failed TCP connect ("connection refused" rather than NIO's nested dump).
    static func describe(connectError error: Error) -> String {
        var underlying = error
        if let connectionError = error as? NIOConnectionError, let first = connectionError.connectionErrors.first {
            underlying = first.error
        }
        if let ioError = underlying as? IOError {
            return String(cString: strerror(ioError.errnoCode)).lowercased()
        }
        if underlying is ChannelError, case .connectTimeout = underlying as! ChannelError {
            return "timed out"
        }
        return "\(underlying)"
    }

    /// Throws `.shutdown` once `shutdown` or `abortConnections` started.
    func checkNotShutDown() throws(NetworkError) {
        guard !lock.withLock({ isShutDown }) else { throw NetworkError(.shutdown, "the host is shut down") }
    }

    // MARK: Registry

    /// Adds an established connection to the registry, or closes it and says why (the deny list or
    /// a connection limit refused it, or the host is shutting down).
    func register(_ connection: Connection) -> NetworkError? {
        guard let peer = connection.remotePeer else { return nil }
        guard !lock.withLock({ isShutDown }) else {
            connection.close()
            return NetworkError(.shutdown, "the host is shutting down")
        }
        // The peer id is known now: the deny list and the connection limits decide.
        if let refusal = resources.admitConnection(peer: peer, inboundFrom: connection.addressKeys) {
            connection.close()
            return NetworkError(refusal.entry == nil ? .refused : .resourceLimit, refusal.message)
        }
        lock.withLock { admitted[ObjectIdentifier(connection)] = connection.addressKeys }
        // One logical connection per peer. When both sides dialled at once, each holds two; both
        // keep the one initiated by the smaller peer id (the same choice on both sides) and close
        // the other. Two connections with the same initiator: keep the older.
        let redundant = lock.withLock { () -> Connection? in
            // A connection that is already closing never wins: the peer reconnected after closing it
            // (its close has not reached us yet), and keeping the old one would kill the new one.
            connectionsByPeer[peer]?.removeAll { $0.isClosing }
            // A relayed and a direct connection coexist (the direct one replaces the relayed one
            // after a hole punch, spec/network.md "Dial policy"); the rule holds within each kind.
            guard let existing = connectionsByPeer[peer]?.first(where: { $0.path.isRelayed == connection.path.isRelayed })
            else {
                connectionsByPeer[peer, default: []].append(connection)
                return nil
            }
            let initiator = { (c: Connection) -> PeerID in c.direction == .outbound ? self.peerID : peer }
            let existingInitiator = initiator(existing)
            let newInitiator = initiator(connection)
            if existingInitiator != newInitiator, newInitiator.bytes.lexicographicallyPrecedes(existingInitiator.bytes) {
                connectionsByPeer[peer]?.removeAll { $0 === existing }
                connectionsByPeer[peer, default: []].append(connection)
                return existing
            }
            return connection
        }
        if let redundant {
            logger.debug("closing duplicate connection", metadata: ["peer": "\(peer)", "conn": "\(redundant.id)"])
            redundant.close()
            if redundant === connection { return nil }
        }
        logger.info(
            "connected", metadata: ["peer": "\(peer)", "direction": "\(connection.direction.rawValue)", "conn": "\(connection.id)"])
        events.emit(
            .connected(peer, connection: connection.id, direction: connection.direction, remoteAddress: connection.remoteAddress))
        Identify.identify(connection: connection, host: self)
        trimIfCrowded()
        return nil
    }

    // MARK: Trimming

    /// Starts a trim when more than `connectionHighWater` connections are established (one at a
    /// time). Called on every registration and every tick of an idle connection; cheap otherwise.
    func trimIfCrowded() {
        let start = lock.withLock { () -> Bool in
            guard !trimming, !isShutDown else { return false }
            guard connectionCount > configuration.connectionHighWater else { return false }
            if let fruitless = fruitlessTrimAt, NIODeadline.now() - fruitless < Self.trimBackoff { return false }
            trimming = true
            return true
        }
        guard start else { return }
        spawn("connection trimming") { [self] in
            let closed = await trim()
            lock.withLock {
                trimming = false
                fruitlessTrimAt = closed == 0 ? .now() : nil
            }
        }
    }

    /// Closes idle connections (`ConnectionLiveness`) of unprotected peers, the longest idle first,
    /// until `connectionLowWater` remain (or no such connection is left); returns how many it closed.
    @discardableResult
    func trim() async -> Int {
        let (live, unprotected) = lock.withLock { () -> (Int, [Connection]) in
            var live = 0
            var unprotected: [Connection] = []
            for (peer, connections) in connectionsByPeer {
                let open = connections.filter { !$0.isClosing }
                live += open.count
                if !protection.isProtected(peer) { unprotected += open }
            }
            return (live, unprotected)
        }
        let excess = live - configuration.connectionLowWater
        guard excess > 0 else { return 0 }
        let now = NIODeadline.now()
        var idle: [(connection: Connection, since: NIODeadline)] = []
        for connection in unprotected {
            guard let state = try? await connection.eventLoop.submit({ connection.activity(now: now) }).get(),
                state.isIdle, let established = state.establishedAt,
                now - established >= configuration.connectionGracePeriod
            else { continue }
            idle.append((connection, state.lastStreamTraffic))
        }
        idle.sort { $0.since < $1.since }
        var closed = 0
        for (connection, _) in idle where closed < excess {
            // Checked again on the connection's loop: one that got busy (or protected) meanwhile stays.
            if (try? await connection.closeIfIdle().get()) == true { closed += 1 }
        }
        if closed > 0 {
            logger.info(
                "trimmed idle connections",
                metadata: [
                    "closed": "\(closed)", "connections": "\(live)",
                    "low": "\(configuration.connectionLowWater)", "high": "\(configuration.connectionHighWater)",
                ])
        }
        return closed
    }

    func connectionClosed(_ connection: Connection) {
        if let keys = lock.withLock({ admitted.removeValue(forKey: ObjectIdentifier(connection)) }) {
            resources.connectionClosed(inboundFrom: keys)
        }
        guard let peer = connection.remotePeer else { return }
        let wasRegistered = lock.withLock { connectionsByPeer[peer]?.contains { $0 === connection } ?? false }
        guard wasRegistered else { return }
        let remaining = lock.withLock { () -> Int in
            unregister(connection, of: peer)
            return connectionsByPeer[peer]?.count ?? 0
        }
        logger.info("disconnected", metadata: ["peer": "\(peer)", "conn": "\(connection.id)"])
        events.emit(.disconnected(peer, connection: connection.id, remaining: remaining))
    }

    /// Removes `connection` from the registry; with the peer's last connection, its peer store
    /// entry goes too. Under `lock`.
    private func unregister(_ connection: Connection, of peer: PeerID) {
        connectionsByPeer[peer]?.removeAll { $0 === connection }
        if connectionsByPeer[peer]?.isEmpty == true {
            connectionsByPeer[peer] = nil
            peerStore.remove(peer)
        }
    }

    func connectionInfos() async -> [ConnectionInfo] {
        let all = lock.withLock { connectionsByPeer.values.flatMap { $0 } }
        var infos: [ConnectionInfo] = []
        for connection in all {
            if let info = try? await connection.eventLoop.submit({ connection.info() }).get() { infos.append(info) }
        }
        return infos.sorted { $0.id < $1.id }
    }

    /// Adds `entry` to the deny list and closes the connections it covers.
    func block(_ entry: DenyList.Entry) async throws(NetworkError) -> Bool {
        guard try resources.deny(entry) else { return false }
        var covered: [Connection] = []
        for connection in lock.withLock({ connectionsByPeer.values.flatMap { $0 } }) {
            switch entry {
            case .peer(let peer):
                if connection.remotePeer == peer { covered.append(connection) }
            case .network(let network):
                let address = try? await connection.eventLoop.submit { connection.remoteAddress }.get()
                if let ip = address.flatMap(IPAddress.init), network.contains(ip) { covered.append(connection) }
            }
        }
        for connection in covered {
            logger.info("closing connection of a blocked peer", metadata: ["peer": "\(connection.remotePeer?.description ?? "?")", "conn": "\(connection.id)"])
            connection.close()
            _ = await Self.wait(for: connection.closeFuture, timeout: .seconds(5))
        }
        return true
    }

    // MARK: Streams

    func acceptStream(_ stream: RawStream, on connection: Connection) {
        let supported = protocolIDs
        spawn("inbound stream \(stream.id) on connection \(connection.id)") { [self] in
            do {
                let muxed = try await stream.negotiateInbound(
                    supported: supported, timeout: configuration.streamNegotiationTimeout)
                guard let handler = lock.withLock({ handlers[muxed.protocolID] }) else {
                    stream.reset()
                    return
                }
                // Streams of one protocol per peer are bounded (the protocol_peer scope).
                guard let peer = connection.remotePeer,
                    resources.admitInboundStream(peer: peer, protocolID: muxed.protocolID) == nil
                else {
                    stream.reset()
                    return
                }
                defer { resources.inboundStreamEnded(peer: peer, protocolID: muxed.protocolID) }
                await handler(muxed)
                // The handler is done: whatever it left open is closed gracefully and freed.
                stream.abandon()
            } catch {
                logger.debug("inbound stream failed: \(error)", metadata: ["peer": "\(connection.remotePeer?.description ?? "?")"])
                stream.reset()
            }
        }
    }

    /// Runs `body` as a task of this host: `shutdown()` waits for it, so that nothing of the host
    /// touches an event loop after `shutdown()` returns.
    /// - Parameter label: names the task in the shutdown report if it does not finish.
    /// - Returns: false if the host is shut down (then `body` never runs).
    @discardableResult
    func spawn(_ label: @autoclosure () -> String, _ body: @escaping @Sendable () async -> Void) -> Bool {
        let label = label()
        return lock.withLock {
            guard !isShutDown else { return false }
            let id = nextTaskID
            nextTaskID += 1
            let task = Task { [self] in
                await body()
                _ = lock.withLock { tasks.removeValue(forKey: id) }
            }
            tasks[id] = (label, task)
            return true
        }
    }

    /// Opens a stream on `connection` and agrees one of `protocols` (multistream-select).
    func newStream(on connection: Connection, protocols: [String], priority: YamuxPriority = .normal) async throws
        -> MuxedStream
    {
        let raw = try await connection.eventLoop.flatSubmit { connection.openStream(priority: priority) }.get()
        do {
            return try await raw.negotiateOutbound(proposals: protocols, timeout: configuration.streamNegotiationTimeout)
        } catch {
            raw.reset()
            throw error
        }
    }

    /// Runs `body` as a task of this host and returns its result: refused once shutdown began, and
    /// `shutdown()` cancels and waits for it, so that the caller's event loop group is never shut
    /// down under it (NIO traps on promises left behind on a stopped loop). Cancelling the caller
    /// cancels `body`.
    /// - Throws: `NetworkError(.shutdown)` when the host is shut down; whatever `body` throws.
    func runTracked<Result: Sendable>(
        _ label: String, _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        let outcome = NIOLockedValueBox<Swift.Result<Result, Error>?>(nil)
        let task = lock.withLock { () -> Task<Void, Never>? in
            guard !isShutDown else { return nil }
            let id = nextTaskID
            nextTaskID += 1
            let task = Task { [self] in
                do {
                    let value = try await body()
                    outcome.withLockedValue { $0 = .success(value) }
                } catch {
                    outcome.withLockedValue { $0 = .failure(error) }
                }
                _ = lock.withLock { tasks.removeValue(forKey: id) }
            }
            tasks[id] = (label, task)
            return task
        }
        guard let task else { throw NetworkError(.shutdown, "the host is shut down") }
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            task.cancel()
        }
        guard let result = outcome.withLockedValue({ $0 }) else {
            preconditionFailure("a tracked task finished without an outcome")
        }
        return try result.get()
    }

    func abortConnections() {
        let (listeners, connections) = lock.withLock { () -> ([Channel], [Connection]) in
            isShutDown = true
            return (self.listeners, connectionsByPeer.values.flatMap { $0 } + pendingConnections.values)
        }
        for listener in listeners { listener.close(promise: nil) }
        for connection in connections { connection.forceClose() }
        quic.abort()
    }

    func shutdown() async {
        let listeners = lock.withLock { () -> [Channel] in
            isShutDown = true
            return self.listeners
        }
        for listener in listeners { try? await listener.close() }
        // Close every connection, including ones that finish their handshake meanwhile (they are
        // refused by `register`, but may be pending here); a connection that does not close within
        // 5 s (a peer that never reads our GoAway) has its socket closed under it.
        for _ in 0..<10 {
            let connections = lock.withLock { connectionsByPeer.values.flatMap { $0 } + pendingConnections.values }
            if connections.isEmpty { break }
            for connection in connections {
                connection.close()
                let closed = await Self.wait(for: connection.closeFuture, timeout: .seconds(5))
                if !closed {
                    logger.warning("connection did not close within 5 s; closing its socket", metadata: ["conn": "\(connection.id)"])
                    connection.forceClose()
                    _ = await Self.wait(for: connection.closeFuture, timeout: .seconds(5))
                }
                lock.withLock {
                    if let peer = connection.remotePeer { unregister(connection, of: peer) }
                    pendingConnections[ObjectIdentifier(connection)] = nil
                }
            }
        }
        // Dials waiting for a QUIC handshake (a peer's silent QUIC address) fail now, not at the
        // handshake timeout that the tasks below would otherwise wait for.
        await quic.abortHandshakes()
        // Handlers see their streams fail and return; wait for them (and for identify), but not
        // forever: a handler that ignores its failed stream is reported, not waited for.
        let deadline = NIODeadline.now() + .seconds(10)
        while let running = lock.withLock({ tasks.first }) {
            running.value.task.cancel()
            let remaining = deadline - .now()
            let finished = remaining > .zero ? await Self.wait(for: running.value.task, timeout: remaining) : false
            if !finished {
                let left = lock.withLock { tasks.values.map(\.label) }
                logger.error(
                    "shutdown: \(left.count) task(s) did not finish within 10 s; not waiting for them",
                    metadata: ["tasks": "\(left.prefix(10))"])
                break
            }
            _ = lock.withLock { tasks.removeValue(forKey: running.key) }
        }
        await quic.close()
        events.finish()
    }

    /// Waits for `future` at most `timeout`; true if it completed.
    static func wait(for future: EventLoopFuture<Void>, timeout: TimeAmount) async -> Bool {
        let promise = future.eventLoop.makePromise(of: Bool.self)
        let timer = future.eventLoop.scheduleTask(in: timeout) { promise.succeed(false) }
        future.whenComplete { _ in
            timer.cancel()
            promise.succeed(true)
        }
        return (try? await promise.futureResult.get()) ?? false
    }

    /// Waits for `task` at most `timeout`; true if it finished.
    static func wait(for task: Task<Void, Never>, timeout: TimeAmount) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let once = NIOLockedValueBox(false)
            let resume: @Sendable (Bool) -> Void = { value in
                let first = once.withLockedValue { done -> Bool in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: value) }
            }
            // The finished side resumes before it cancels the timer: a cancelled timer's sleep
            // returns at once, and on the other thread it could otherwise resume first with
            // `false` for a task that did finish (seen in CI as "0 task(s) did not finish").
            let timer = Task {
                do {
                    try await Task.sleep(nanoseconds: UInt64(max(timeout.nanoseconds, 0)))
                } catch {
                    return
                }
                resume(false)
            }
            Task {
                await task.value
                resume(true)
                timer.cancel()
            }
        }
    }
}
