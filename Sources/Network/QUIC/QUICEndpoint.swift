import CQuic
import Identity
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// One UDP socket speaking QUIC v1 (spec/network.md, "QUIC"), for listening and dialling alike (so
/// that dials leave from the listen port, as hole punching needs): the pipeline handler of a NIO
/// datagram channel. All ngtcp2 and GnuTLS work for the socket runs on the channel's event loop;
/// datagrams are routed to connections by destination connection id.
///
/// `@unchecked Sendable`: every mutable property is read and written only on `eventLoop` (handler
/// callbacks run there; `connect` and `close` hop there first); the `let`s are immutable after
/// `init`, and the send buffers are only touched on the loop.
final class QUICEndpoint: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    struct Configuration: Sendable {
        /// Flow-control windows, fixed (ngtcp2's auto-tuning is capped at them): the connection
        /// window bounds what a peer can make us buffer on one connection (unread and out-of-order
        /// stream data), and is what the connection reserves from the node's memory budget. 2 MiB,
        /// so the default budget (1 GiB) holds the default connection limit (512) of QUIC
        /// connections; one stream gets 1 MiB per round trip.
        var streamWindow: UInt64 = 1 << 20
        var connectionWindow: UInt64 = 2 << 20
        /// Bidirectional streams a peer may have open at once on one connection.
        var maximumStreams: UInt64 = 256
        var idleTimeout: TimeAmount = .seconds(30)
        var handshakeTimeout: TimeAmount = .seconds(10)
        /// PINGs keep a quiet connection from idling out (the host's own idle policy closes it).
        var keepAlive: TimeAmount = .seconds(10)
        /// Server handshakes in flight at once; beyond them every new Initial is refused
        /// statelessly (CONNECTION_CLOSE with CONNECTION_REFUSED, nothing kept).
        var maximumHandshakes = 64
        /// From this many server handshakes in flight on, a new Initial must prove its source
        /// address first: it gets a stateless Retry, and only an Initial with a valid Retry token
        /// takes a handshake slot (RFC 9000 §8.1.2). A flood from spoofed or unanswering sources
        /// thus holds at most this many slots, and real clients still get the rest.
        var retryThreshold = 16
        /// Connections at once on this socket; further Initials are refused statelessly.
        var maximumConnections = 1024
        /// UDP GSO (Linux): a run of full-size datagrams of one flush leaves as one write that the
        /// kernel cuts into datagrams (`UDP_SEGMENT`), where the system supports it (opt-in:
        /// `Host.Configuration.quicSegmentationOffload`).
        var segmentationOffload = false
        /// The TLS certificate's validity, and how long before its end new handshakes get a new
        /// one (seconds); the clock (Unix seconds) both are read on (injectable for tests).
        var certificateLifetime: Int64 = 100 * 86_400
        var certificateRenewal: Int64 = 10 * 86_400
        var clock: @Sendable () -> Int64 = { Int64(time(nil)) }

        init() {}

        /// The node's limits mapped to QUIC (spec/network.md, "QUIC limits"): the peer may open
        /// `connection.streams` bidirectional streams at once (MAX_STREAMS; one more each time one
        /// of its streams ends), and the connection window is at most
        /// `connection.receive_window_memory`.
        init(limits: ResourceLimits, handshakeTimeout: TimeAmount) {
            maximumStreams = UInt64(limits.connectionStreams)
            connectionWindow = min(connectionWindow, UInt64(limits.connectionReceiveWindowMemory))
            streamWindow = min(streamWindow, connectionWindow)
            self.handshakeTimeout = handshakeTimeout
        }
    }

    /// Datagrams written per `cq_conn_write` call.
    static let sendBatch: Int32 = 32
    /// SO_RCVBUF and SO_SNDBUF asked for on the socket (the kernel caps them at
    /// `net.core.rmem_max` / `wmem_max`, and doubles what it grants). The default receive buffer
    /// (`rmem_default`, 208 KiB) holds ~170 full datagrams, under a millisecond of a fast sender:
    /// while the event loop is off the CPU, datagrams past it are dropped and congestion control
    /// backs off. The plain C baseline asks for the same.
    static let socketBufferSize = 4 * 1024 * 1024

    let eventLoop: EventLoop
    /// The host's certificates (renewed before they expire; `QUICCertificates`).
    let certificates: QUICCertificates
    let configuration: Configuration
    let cConfig: cq_config
    let logger: Logger
    let allocator = ByteBufferAllocator()
    /// Where `cq_conn_write` puts datagrams; reused for every connection of the socket.
    let sendBuffer: UnsafeMutablePointer<UInt8>
    let sendSizes: UnsafeMutablePointer<Int>
    private var context: ChannelHandlerContext?
    /// The socket's address as bound; the local side of every path.
    private(set) var localAddress: SocketAddress
    private var routes: [QUICConnectionID: QUICConnectionCore] = [:]
    private var connections: [ObjectIdentifier: QUICConnectionCore] = [:]
    private var dirty: [QUICConnectionCore] = []
    private var reading = false
    private var handshakesInFlight = 0
    private var isClosed = false
    /// Whether Initials from unknown peers start connections (a listener) or are dropped.
    var accepting = false
    /// A server connection that completed its handshake (the host admits and registers it).
    var onAccepted: (@Sendable (QUICConnectionCore) -> Void)?
    /// Datagrams dropped: unparseable, for no connection, or over the handshake or connection
    /// limits (tests; status).
    private(set) var droppedDatagrams = 0
    /// Initials answered with a stateless CONNECTION_CLOSE (over the handshake or connection limit).
    private(set) var refusedInitials = 0
    /// Initials answered with a stateless Retry (address validation under load).
    private(set) var retriesSent = 0

    init(
        eventLoop: EventLoop, localAddress: SocketAddress, certificates: QUICCertificates,
        configuration: Configuration, logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.localAddress = localAddress
        self.certificates = certificates
        self.configuration = configuration
        self.logger = logger
        var config = cq_config()
        config.stream_window = configuration.streamWindow
        config.connection_window = configuration.connectionWindow
        config.max_streams_bidi = configuration.maximumStreams
        config.idle_timeout = UInt64(configuration.idleTimeout.nanoseconds)
        config.handshake_timeout = UInt64(configuration.handshakeTimeout.nanoseconds)
        config.keep_alive = UInt64(configuration.keepAlive.nanoseconds)
        let secret = Sodium.randomBytes(32)
        withUnsafeMutableBytes(of: &config.static_secret) { $0.copyBytes(from: secret) }
        self.cConfig = config
        sendBuffer = .allocate(capacity: Int(Self.sendBatch) * Int(CQ_MAX_DATAGRAM))
        sendSizes = .allocate(capacity: Int(Self.sendBatch))
    }

    deinit {
        sendBuffer.deallocate()
        sendSizes.deallocate()
    }

    /// Binds a UDP socket at `address` with a new endpoint as its handler.
    static func bind(
        host: String, port: Int, group: EventLoopGroup, certificates: QUICCertificates,
        configuration: Configuration, logger: Logger
    ) async throws -> (Channel, QUICEndpoint) {
        let eventLoop = group.next()
        let placeholder = try SocketAddress(ipAddress: host, port: port)
        let endpoint = QUICEndpoint(
            eventLoop: eventLoop, localAddress: placeholder, certificates: certificates, configuration: configuration,
            logger: logger)
        // No SO_REUSEADDR: two sockets sharing a UDP port would split a connection's datagrams
        // between them. An IPv6 socket is IPv6-only (NIO makes it dual-stack), so that
        // `/ip6/::/udp/N` and `/ip4/0.0.0.0/udp/N` are two sockets, each with its own connections.
        var bootstrap = DatagramBootstrap(group: eventLoop)
        if placeholder.protocol == .inet6 {
            bootstrap = bootstrap.channelOption(
                ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
        }
        // No UDP GRO: with GSO senders on both sides, QUIC through the NAT lab's routers (NAT on
        // veth links) failed with GRO on the receiving sockets (UDPHolePunchLabTests, cone NATs),
        // and passed with either one alone; GSO is the one kept.
        let channel = try await bootstrap
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(Self.socketBufferSize))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(Self.socketBufferSize))
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelOption(.datagramVectorReadMessageCount, value: 16)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(endpoint) }
            }
            .bind(host: host, port: port).get()
        guard let bound = channel.localAddress else {
            channel.close(promise: nil)
            throw NetworkError(.invalidAddress, "UDP socket on \(host):\(port) has no local address")
        }
        try await eventLoop.submit { endpoint.localAddress = bound }.get()
        return (channel, endpoint)
    }

    // MARK: Pipeline

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        reading = true
        envelope.data.withUnsafeReadableBytes { packet in
            receive(packet, from: envelope.remoteAddress)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        flushDirty()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for connection in connections.values { connection.flush() }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A datagram socket reports ICMP errors (port unreachable) per send; connections recover
        // or time out on their own.
        logger.debug("QUIC socket error: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        for connection in Array(connections.values) {
            connection.close(error: NetworkError(.connectionClosed, "the QUIC socket closed"))
        }
        self.context = nil
        context.fireChannelInactive()
    }

    // MARK: Datagrams

    private func receive(_ packet: UnsafeRawBufferPointer, from remote: SocketAddress) {
        guard !isClosed, packet.count > 0, let base = packet.bindMemory(to: UInt8.self).baseAddress else { return }
        var dcid = (UInt64(0), UInt64(0), UInt32(0))  // 20 bytes
        var length = 0
        var isInitial: Int32 = 0
        let routed = withUnsafeMutableBytes(of: &dcid) { raw in
            cq_packet_route(base, packet.count, raw.bindMemory(to: UInt8.self).baseAddress, &length, &isInitial)
        }
        guard routed == 0,
            let id = withUnsafeBytes(of: &dcid, { raw in
                QUICConnectionID(raw.bindMemory(to: UInt8.self).baseAddress!, count: length)
            })
        else {
            droppedDatagrams += 1
            return
        }
        if let connection = routes[id] {
            connection.receive(packet)
            return
        }
        // A new connection: only a client Initial (padded to at least 1200 bytes, RFC 9000 §14.1)
        // to a listener, within the limits.
        guard isInitial != 0, packet.count >= 1200, accepting else {
            droppedDatagrams += 1
            return
        }
        guard screen(packet, from: remote) else { return }
        let connection = QUICConnectionCore(
            endpoint: self, remote: remote, direction: .inbound, expectedPeer: nil, logger: logger)
        connections[ObjectIdentifier(connection)] = connection
        guard connection.startServer(initial: packet) else {
            connections[ObjectIdentifier(connection)] = nil
            for id in connection.cids { routes[id] = nil }
            connection.discardUnstarted(NetworkError(.protocolViolation, "not an acceptable QUIC Initial"))
            droppedDatagrams += 1
            return
        }
        handshakesInFlight += 1
        connection.handshake.futureResult.whenComplete { [self] result in
            handshakesInFlight -= 1
            if case .success = result { onAccepted?(connection) }
        }
        connection.receive(packet)
    }

    /// Under load, a new client Initial is screened before any state is made for it: over the
    /// limits it is refused, from `retryThreshold` handshakes on it must carry a Retry token (or
    /// gets a Retry). Both answers are stateless. Whether to make a connection for it.
    private func screen(_ packet: UnsafeRawBufferPointer, from remote: SocketAddress) -> Bool {
        let mode: Int32
        if handshakesInFlight >= configuration.maximumHandshakes || connections.count >= configuration.maximumConnections {
            mode = Int32(CQ_SCREEN_REFUSE)
        } else if handshakesInFlight >= configuration.retryThreshold {
            mode = Int32(CQ_SCREEN_VALIDATE)
        } else {
            return true  // a Retry token in it is checked when the connection is made
        }
        var size = Int(CQ_MAX_DATAGRAM)
        let verdict = withUnsafePointer(to: cConfig) { config in
            remote.withSockAddr { address, length in
                cq_initial_screen(
                    config, packet.bindMemory(to: UInt8.self).baseAddress, packet.count, address, socklen_t(length), mode,
                    NIODeadline.now().uptimeNanoseconds, sendBuffer, &size)
            }
        }
        switch verdict {
        case Int32(CQ_INITIAL_ACCEPT):
            return true
        case Int32(CQ_INITIAL_RETRY):
            retriesSent += 1
        case Int32(CQ_INITIAL_REFUSE):
            refusedInitials += 1
        default:
            droppedDatagrams += 1
            return false
        }
        send(UnsafeRawBufferPointer(start: sendBuffer, count: size), to: remote)
        flushChannel()
        return false
    }

    /// Connections that received something in the current batch of datagrams: their readers wake
    /// and their answers go out once, at the end of the batch.
    func markDirty(_ connection: QUICConnectionCore) {
        guard !connection.isDirty else { return }
        connection.isDirty = true
        dirty.append(connection)
        if !reading { flushDirty() }
    }

    private func flushDirty() {
        while !dirty.isEmpty {
            let batch = dirty
            dirty.removeAll(keepingCapacity: true)
            for connection in batch {
                connection.isDirty = false
                connection.wakeReaders()
                connection.flush()
            }
        }
    }

    /// Whether UDP GSO is used (configured and supported by the system).
    private lazy var usesSegmentationOffload = configuration.segmentationOffload && System.supportsUDPSegmentationOffload
    /// Most datagrams in one GSO write (the kernel's limit is 64, and 64 KiB per write).
    private static let maximumSegments = 40

    /// Sends the `count` datagrams `cq_conn_write` left in `sendBuffer` (datagram `i` at offset
    /// `i * CQ_MAX_DATAGRAM`, `sendSizes[i]` bytes), copied into one buffer for all of them. With
    /// GSO, each run of equal-size datagrams (and a shorter one ending it) is one write the kernel
    /// splits; without, each datagram is a slice of that buffer (NIO sends them with sendmmsg).
    func sendBatch(count: Int, to remote: SocketAddress) {
        guard let context, count > 0 else { return }
        var total = 0
        for index in 0..<count { total += sendSizes[index] }
        var buffer = allocator.buffer(capacity: total)
        for index in 0..<count {
            buffer.writeBytes(
                UnsafeRawBufferPointer(start: sendBuffer + index * Int(CQ_MAX_DATAGRAM), count: sendSizes[index]))
        }
        var index = 0
        var offset = 0
        while index < count {
            let segment = sendSizes[index]
            var end = index + 1
            var length = segment
            if usesSegmentationOffload {
                while end < count, end - index < Self.maximumSegments, sendSizes[end] <= segment {
                    length += sendSizes[end]
                    end += 1
                    if sendSizes[end - 1] < segment { break }  // a shorter datagram ends the run
                }
            }
            let slice = buffer.getSlice(at: offset, length: length)!
            let metadata: AddressedEnvelope<ByteBuffer>.Metadata? =
                end - index > 1 ? .init(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: segment) : nil
            context.write(
                wrapOutboundOut(AddressedEnvelope(remoteAddress: remote, data: slice, metadata: metadata)), promise: nil)
            offset += length
            index = end
        }
    }

    func send(_ datagram: UnsafeRawBufferPointer, to remote: SocketAddress) {
        guard let context else { return }
        let buffer = allocator.buffer(bytes: datagram)
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: remote, data: buffer)), promise: nil)
    }

    func flushChannel() {
        context?.flush()
    }

    // MARK: Connections

    func route(_ id: QUICConnectionID, to connection: QUICConnectionCore) {
        routes[id] = connection
    }

    func unroute(_ id: QUICConnectionID, from connection: QUICConnectionCore) {
        if routes[id] === connection { routes[id] = nil }
    }

    func remove(_ connection: QUICConnectionCore) {
        for id in connection.cids where routes[id] === connection { routes[id] = nil }
        connections[ObjectIdentifier(connection)] = nil
    }

    /// Dials `remote` and completes once the handshake authenticated `peer`.
    /// With `authenticateOnly`, a probe: see `QUICConnectionCore.authenticateOnly`.
    func connect(
        to remote: SocketAddress, peer: PeerID, authenticateOnly: Bool = false, handshakeTimeout: TimeAmount? = nil
    ) -> EventLoopFuture<QUICConnectionCore>
    {
        eventLoop.flatSubmit { [self] in
            guard !isClosed, context != nil else {
                return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "the QUIC socket is closed"))
            }
            var logger = self.logger
            logger[metadataKey: "remote"] = "\(remote)"
            let connection = QUICConnectionCore(
                endpoint: self, remote: remote, direction: .outbound, expectedPeer: peer,
                authenticateOnly: authenticateOnly, handshakeTimeout: handshakeTimeout, logger: logger)
            connections[ObjectIdentifier(connection)] = connection
            do {
                try connection.startClient()
            } catch {
                remove(connection)
                connection.discardUnstarted(error)
                return eventLoop.makeFailedFuture(error)
            }
            return connection.handshake.futureResult.map { connection }
        }
    }

    /// Sends one datagram of random bytes to `remote` (UDP hole punching: it opens our NAT's
    /// mapping towards the peer's address, so that the peer's Initial gets through; the peer's
    /// endpoint drops it as a packet for no connection).
    func sendPunchDatagram(to remote: SocketAddress) {
        eventLoop.execute { [self] in
            guard !isClosed else { return }
            var random = SystemRandomNumberGenerator()
            var bytes = [UInt8](repeating: 0, count: 64)
            for index in bytes.indices { bytes[index] = random.next() }
            bytes[0] &= 0x7f  // a short header: nobody takes it for an Initial
            bytes.withUnsafeBytes { send($0, to: remote) }
            flushChannel()
        }
    }

    /// Closes every connection on the socket with a CONNECTION_CLOSE while the socket can still
    /// send it (also those whose handshake completed but that the host has not registered yet).
    func closeConnections() -> EventLoopFuture<Void> {
        eventLoop.submit { [self] in
            for connection in Array(connections.values) { connection.close() }
        }
    }

    /// Ends every connection whose handshake has not completed with `error` (its dial fails with
    /// it at once instead of at the handshake timeout); established connections are untouched.
    func abortHandshakes(_ error: NetworkError) -> EventLoopFuture<Void> {
        eventLoop.submit { [self] in
            for connection in Array(connections.values) where !connection.isHandshakeComplete {
                connection.close(error: error)
            }
        }
    }

    /// Connections on this socket (tests).
    var connectionCount: Int {
        eventLoop.assertInEventLoop()
        return connections.count
    }
}
