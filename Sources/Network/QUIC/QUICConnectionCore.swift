import CQuic
import Identity
import Logging
import NIOCore
import Session

#if canImport(Glibc)
    import Glibc
#endif

/// One QUIC connection (spec/network.md, "QUIC"): the cq_conn and its streams' application-facing
/// state. Each QUIC bidirectional stream is one libp2p stream (multistream-select runs on it; no
/// Noise, no yamux). Lives on its endpoint's event loop.
///
/// `@unchecked Sendable`: every mutable property is read and written only on `eventLoop` (the
/// endpoint's handler callbacks and timers run there, C callbacks run inside calls made there, and
/// every method used from elsewhere hops there first); the `let`s are immutable after `init`.
final class QUICConnectionCore: @unchecked Sendable {
    /// Bytes a stream may hold unacknowledged (queued or in flight) before its writer waits.
    static let streamSendLimit: UInt64 = 4 * 1024 * 1024
    /// Most bytes one read returns when several chunks are queued.
    static let maximumReadBatch = 1024 * 1024
    /// Capacity of the buffer received stream data is gathered in, when a datagram brings at least
    /// `fillThreshold` bytes (bulk data); smaller pieces get a buffer of their own size.
    static let fillCapacity = 16 * 1024
    static let fillThreshold = 1024

    final class Stream {
        var inbound = CircularBuffer<ByteBuffer>()
        /// Received bytes not yet queued in `inbound`: consecutive datagrams' stream data is
        /// gathered here (one allocation per `fillCapacity`, not per datagram); taken by the next read.
        var filling: ByteBuffer?
        var hasUnread: Bool { !inbound.isEmpty || filling != nil }
        var reader: CheckedContinuation<[ByteBuffer]?, Error>?
        var writer: CheckedContinuation<Void, Error>?
        var remoteClosed = false
        var writeClosed = false
        var abandoned = false
        var error: Error?
        var unacked: UInt64 = 0
    }

    let endpoint: QUICEndpoint
    let eventLoop: EventLoop
    let remote: SocketAddress
    let direction: ConnectionDirection
    /// The peer a dial expects (`/p2p/…`); nil when accepting.
    let expectedPeer: PeerID?
    /// A probe (`AddressProbe`): once the server's certificate authenticated `expectedPeer`, the
    /// handshake is aborted (TLS alert) before our Finished, so the peer never completes it nor
    /// registers a connection; the handshake promise then succeeds.
    let authenticateOnly: Bool
    /// The client's handshake timeout when not the endpoint's (hole-punch dials give up sooner).
    let handshakeTimeout: TimeAmount?
    private var authenticated = false
    var logger: Logger
    private(set) var conn: OpaquePointer?
    /// The peer the certificate authenticated (set during the handshake).
    private(set) var peer: PeerID?
    private var verifyError: NetworkError?
    /// The certificate this connection presents: held until the connection ends (its TLS session
    /// uses the credentials), whatever renewals happen meanwhile.
    private(set) var certificate: Libp2pTLS.Certificate?
    /// The SubjectPublicKeyInfo of the certificate the peer presented (tests).
    private(set) var peerCertificateKey: [UInt8] = []
    private(set) var streams: [Int64: Stream] = [:]
    /// Streams the peer reset, most recent last: a read after the state is gone reports the reset.
    private var resetByPeer = Set<Int64>()
    private var readersToWake: [Int64] = []
    private(set) var cids: [QUICConnectionID] = []
    private var timer: Scheduled<Void>?
    private var timerDeadline = UInt64.max
    private(set) var isHandshakeComplete = false
    private(set) var isClosed = false
    /// The last stream activity, for idleness (as `Connection.lastStreamTraffic`).
    private(set) var lastStreamTraffic = NIODeadline.now()
    let handshake: EventLoopPromise<Void>
    /// Set by the host's `Connection` once it is wired to this one (`quicEstablished`).
    var establishedAt: NIODeadline?
    /// Node memory reserved for the connection's receive window (`reserveReceiveWindow`), given
    /// back when the connection ends.
    private var reservedMemory: (resources: ResourceManager, bytes: Int)?
    /// Past this without identify completing, the host closes the connection (as for TCP).
    var identifyDeadline: Scheduled<Void>?
    var tickTask: RepeatedTask?
    /// Told once when the connection ends (after the handshake or not), with why.
    var onClosed: ((NetworkError?) -> Void)?
    /// Told when the peer opens a stream (set by the host once the connection is registered;
    /// streams opened before that wait in `unannounced`).
    var onStreamOpened: ((Int64) -> Void)? {
        didSet {
            guard let onStreamOpened else { return }
            let pending = unannounced
            unannounced = []
            for id in pending where streams[id] != nil { onStreamOpened(id) }
        }
    }
    private var unannounced: [Int64] = []

    init(
        endpoint: QUICEndpoint, remote: SocketAddress, direction: ConnectionDirection, expectedPeer: PeerID?,
        authenticateOnly: Bool = false, handshakeTimeout: TimeAmount? = nil, logger: Logger
    ) {
        self.authenticateOnly = authenticateOnly
        self.handshakeTimeout = handshakeTimeout
        self.endpoint = endpoint
        self.eventLoop = endpoint.eventLoop
        self.remote = remote
        self.direction = direction
        self.expectedPeer = expectedPeer
        self.logger = logger
        self.handshake = endpoint.eventLoop.makePromise()
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// The path's addresses as C sockaddrs, made once (every datagram is fed with them).
    private let localSockaddr = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let remoteSockaddr = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private var localSockaddrLength: socklen_t = 0
    private var remoteSockaddrLength: socklen_t = 0
    /// In the endpoint's list of connections to flush at the end of the read batch.
    var isDirty = false

    deinit {
        localSockaddr.deallocate()
        remoteSockaddr.deallocate()
    }

    private func storePathAddresses() {
        func store(_ address: SocketAddress, into storage: UnsafeMutablePointer<sockaddr_storage>) -> socklen_t {
            storage.initialize(to: sockaddr_storage())
            return address.withSockAddr { pointer, length in
                UnsafeMutableRawPointer(storage).copyMemory(from: pointer, byteCount: min(length, MemoryLayout<sockaddr_storage>.size))
                return socklen_t(length)
            }
        }
        localSockaddrLength = store(endpoint.localAddress, into: localSockaddr)
        remoteSockaddrLength = store(remote, into: remoteSockaddr)
    }

    private var localPointer: UnsafePointer<sockaddr> {
        UnsafeRawPointer(localSockaddr).assumingMemoryBound(to: sockaddr.self)
    }

    private var remotePointer: UnsafePointer<sockaddr> {
        UnsafeRawPointer(remoteSockaddr).assumingMemoryBound(to: sockaddr.self)
    }

    /// Creates the client side and sends the first flight.
    func startClient() throws(NetworkError) {
        var message = [CChar](repeating: 0, count: 256)
        var config = endpoint.cConfig
        if let handshakeTimeout { config.handshake_timeout = UInt64(handshakeTimeout.nanoseconds) }
        let now = NIODeadline.now().uptimeNanoseconds
        storePathAddresses()
        let certificate: Libp2pTLS.Certificate
        do {
            certificate = try endpoint.certificates.current()
        } catch {
            throw NetworkError(.connectionFailed, "no TLS certificate: \(error)")
        }
        self.certificate = certificate
        let created = withUnsafePointer(to: QUICConnectionCore.callbacks) { callbacks in
            cq_conn_client_new(
                &config, certificate.credentials, localPointer, localSockaddrLength, remotePointer,
                remoteSockaddrLength, callbacks, context, now, &message, message.count)
        }
        guard let created else { throw NetworkError(.connectionFailed, cMessage(message)) }
        conn = created
        flush()
    }

    /// Creates the server side from the client's first Initial (which the caller then feeds).
    func startServer(initial packet: UnsafeRawBufferPointer) -> Bool {
        var message = [CChar](repeating: 0, count: 256)
        var config = endpoint.cConfig
        var original = [UInt8](repeating: 0, count: 20)
        var originalLength = 0
        let now = NIODeadline.now().uptimeNanoseconds
        storePathAddresses()
        let certificate: Libp2pTLS.Certificate
        do {
            certificate = try endpoint.certificates.current()
        } catch {
            logger.error("QUIC Initial refused: no TLS certificate: \(error)")
            return false
        }
        self.certificate = certificate
        let created = withUnsafePointer(to: QUICConnectionCore.callbacks) { callbacks in
            cq_conn_server_new(
                &config, certificate.credentials, packet.bindMemory(to: UInt8.self).baseAddress,
                packet.count, localPointer, localSockaddrLength, remotePointer, remoteSockaddrLength, callbacks,
                context, now, &original, &originalLength, &message, message.count)
        }
        guard let created else {
            logger.debug("QUIC Initial refused: \(cMessage(message))")
            return false
        }
        conn = created
        // Retransmitted Initials still carry the client's original destination id.
        let id = original.withUnsafeBufferPointer { QUICConnectionID($0.baseAddress!, count: originalLength) }
        if let id { addRoute(id) }
        return true
    }

    /// A connection that never got a cq_conn (its Initial was refused, or creating it failed):
    /// the handshake promise fails, so that nothing waits on it (and NIO sees no leaked promise).
    func discardUnstarted(_ error: Error) {
        guard conn == nil, !isClosed else { return }
        isClosed = true
        handshake.fail(error)
    }

    // MARK: Datagrams and timers

    func receive(_ packet: UnsafeRawBufferPointer) {
        guard let conn, !isClosed else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        let result = cq_conn_read(
            conn, localPointer, localSockaddrLength, remotePointer, remoteSockaddrLength,
            packet.bindMemory(to: UInt8.self).baseAddress, packet.count, now)
        switch result {
        case 0:
            endpoint.markDirty(self)
        case 1:
            teardown(NetworkError(.connectionClosed, "the peer closed the QUIC connection"), sendClose: false)
        default:
            teardown(failure(), sendClose: true)
        }
    }

    /// Why the connection failed: the certificate verdict when it refused the peer, else the
    /// library's message.
    private func failure() -> NetworkError {
        if let verifyError { return verifyError }
        guard let conn else { return NetworkError(.connectionClosed, "QUIC connection closed") }
        let message = String(cString: cq_conn_error(conn))
        let alert = cq_conn_tls_alert(conn)
        if !isHandshakeComplete {
            return NetworkError(
                .connectionFailed,
                "QUIC handshake with \(remote) failed: \(message)\(alert != 0 ? " (TLS alert \(alert))" : "")")
        }
        return NetworkError(.connectionClosed, "QUIC connection to \(remote) failed: \(message)")
    }

    /// Sends what the connection has to send and re-arms its timer.
    func flush() {
        guard let conn, !isClosed else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        while true {
            let count = cq_conn_write(conn, endpoint.sendBuffer, endpoint.sendSizes, QUICEndpoint.sendBatch, now)
            if count < 0 {
                teardown(failure(), sendClose: true)
                return
            }
            endpoint.sendBatch(count: Int(count), to: remote)
            if count < QUICEndpoint.sendBatch { break }
        }
        endpoint.flushChannel()
        armTimer()
    }

    private func armTimer() {
        guard let conn else { return }
        let expiry = cq_conn_expiry(conn)
        // A timer already set to fire no later stays (it finds nothing due and re-arms): pacing
        // moves the expiry on with nearly every flush, and a cancel + schedule each time costs.
        guard expiry < timerDeadline else { return }
        timer?.cancel()
        timerDeadline = expiry
        guard expiry != UInt64.max else {
            timer = nil
            return
        }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        timer = eventLoop.scheduleTask(deadline: NIODeadline.uptimeNanoseconds(expiry)) {
            loopBound.value.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        timerDeadline = .max
        guard let conn, !isClosed else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        if cq_conn_expiry(conn) <= now, cq_conn_handle_expiry(conn, now) != 0 {
            teardown(failure(), sendClose: true)
            return
        }
        flush()
    }

    /// Wakes readers that got data in this batch of datagrams (one wake-up per batch, not per
    /// datagram).
    func wakeReaders() {
        guard !readersToWake.isEmpty else { return }
        let ids = readersToWake
        readersToWake.removeAll(keepingCapacity: true)
        for id in ids {
            guard let stream = streams[id], let reader = stream.reader else { continue }
            if let batch = takeBatch(stream, id: id) {
                stream.reader = nil
                reader.resume(returning: batch)
            } else if let error = stream.error {
                stream.reader = nil
                reader.resume(throwing: error)
            } else if stream.remoteClosed {
                stream.reader = nil
                reader.resume(returning: nil)
            }
            freeIfDone(id)
        }
    }

    // MARK: Memory

    /// Reserves the connection window from the node's memory budget: all a peer can make this
    /// connection hold of received data (spec/network.md, "QUIC limits"). False when the budget
    /// cannot hold it (the caller closes the connection) or the connection is closed already.
    func reserveReceiveWindow(from resources: ResourceManager) -> Bool {
        eventLoop.assertInEventLoop()
        guard !isClosed, reservedMemory == nil else { return reservedMemory != nil }
        let bytes = Int(endpoint.configuration.connectionWindow)
        guard resources.reserveMemory(bytes) else { return false }
        reservedMemory = (resources, bytes)
        return true
    }

    // MARK: Closing

    /// Closes with application error 0 (a CONNECTION_CLOSE goes out).
    func close(error: NetworkError? = nil) {
        eventLoop.assertInEventLoop()
        teardown(error ?? NetworkError(.connectionClosed, "QUIC connection closed"), sendClose: true)
    }

    /// Ends the connection: an optional last CONNECTION_CLOSE, then routes, timer, streams and the
    /// C state go; `onClosed` and the handshake promise learn why.
    private func teardown(_ error: NetworkError, sendClose: Bool) {
        guard !isClosed else { return }
        isClosed = true
        if sendClose, let conn {
            let size = cq_conn_write_close(conn, 0, endpoint.sendBuffer, NIODeadline.now().uptimeNanoseconds)
            if size > 0 {
                endpoint.send(UnsafeRawBufferPointer(start: endpoint.sendBuffer, count: Int(size)), to: remote)
                endpoint.flushChannel()
            }
        }
        if !isHandshakeComplete { logger.debug("QUIC handshake failed: \(error)") }
        timer?.cancel()
        timer = nil
        identifyDeadline?.cancel()
        identifyDeadline = nil
        if let (resources, bytes) = reservedMemory {
            resources.releaseMemory(bytes)
            reservedMemory = nil
        }
        endpoint.remove(self)
        // Readers that data reached in this batch get it first (their wake-up would otherwise be
        // dropped with `readersToWake`); every other waiting reader and writer fails with `error`.
        // No continuation may outlive the streams table: a reader left parked in it was never
        // resumed (its task, identify's among them, hung and held up the host's shutdown).
        wakeReaders()
        for id in Array(streams.keys) { fail(id, with: error) }
        for stream in streams.values {
            if let reader = stream.reader {
                stream.reader = nil
                reader.resume(throwing: error)
            }
        }
        streams.removeAll()
        readersToWake.removeAll()
        if let conn { cq_conn_free(conn) }
        conn = nil
        if authenticated {
            handshake.succeed(())
        } else if !isHandshakeComplete {
            handshake.fail(error)
        }
        let onClosed = self.onClosed
        self.onClosed = nil
        onStreamOpened = nil
        onClosed?(isHandshakeComplete ? error : nil)
    }

    // MARK: Routing

    fileprivate func addRoute(_ id: QUICConnectionID) {
        cids.append(id)
        endpoint.route(id, to: self)
    }

    fileprivate func removeRoute(_ id: QUICConnectionID) {
        cids.removeAll { $0 == id }
        endpoint.unroute(id, from: self)
    }

    // MARK: Streams (all on the event loop)

    func openStream() throws(NetworkError) -> Int64 {
        eventLoop.assertInEventLoop()
        guard let conn, !isClosed, isHandshakeComplete else {
            throw NetworkError(.connectionClosed, "QUIC connection is closed")
        }
        var id: Int64 = -1
        guard cq_stream_open(conn, &id) == 0 else {
            throw NetworkError(.resourceLimit, "the peer's stream limit is reached")
        }
        streams[id] = Stream()
        lastStreamTraffic = .now()
        return id
    }

    func read(_ id: Int64, continuation: CheckedContinuation<[ByteBuffer]?, Error>) {
        eventLoop.assertInEventLoop()
        guard let stream = streams[id] else {
            if resetByPeer.contains(id) {
                continuation.resume(throwing: SessionError(.streamReset, "stream \(id) was reset by the peer"))
            } else {
                continuation.resume(returning: nil)
            }
            return
        }
        if stream.reader != nil {
            continuation.resume(throwing: NetworkError(.protocolViolation, "concurrent reads on one stream"))
        } else if let batch = takeBatch(stream, id: id) {
            continuation.resume(returning: batch)
            flush()
        } else if let error = stream.error {
            continuation.resume(throwing: error)
        } else if stream.remoteClosed {
            continuation.resume(returning: nil)
        } else {
            stream.reader = continuation
        }
        freeIfDone(id)
    }

    /// Takes queued chunks up to `maximumReadBatch` and reopens that much flow-control window.
    private func takeBatch(_ stream: Stream, id: Int64) -> [ByteBuffer]? {
        var batch: [ByteBuffer] = []
        var size = 0
        while let next = stream.inbound.first, batch.isEmpty || size + next.readableBytes <= Self.maximumReadBatch {
            stream.inbound.removeFirst()
            size += next.readableBytes
            batch.append(next)
        }
        if stream.inbound.isEmpty, let filling = stream.filling,
            batch.isEmpty || size + filling.readableBytes <= Self.maximumReadBatch
        {
            stream.filling = nil
            size += filling.readableBytes
            batch.append(filling)
        }
        guard !batch.isEmpty else { return nil }
        if let conn { cq_stream_consumed(conn, id, size) }
        return batch
    }

    func write(_ bytes: ByteBuffer, on id: Int64, continuation: CheckedContinuation<Void, Error>) {
        eventLoop.assertInEventLoop()
        guard let conn, let stream = streams[id] else {
            continuation.resume(throwing: SessionError(.streamClosed, "stream \(id) is closed"))
            return
        }
        if let error = stream.error {
            continuation.resume(throwing: error)
            return
        }
        guard !stream.writeClosed else {
            continuation.resume(throwing: SessionError(.streamClosed, "stream \(id) is closed for writing"))
            return
        }
        let held = bytes.withUnsafeReadableBytes { raw in
            cq_stream_write(conn, id, raw.bindMemory(to: UInt8.self).baseAddress, raw.count)
        }
        guard held >= 0 else {
            continuation.resume(throwing: SessionError(.streamClosed, "stream \(id) is closed for writing"))
            return
        }
        lastStreamTraffic = .now()
        stream.unacked = UInt64(held)
        if stream.unacked > Self.streamSendLimit {
            stream.writer = continuation  // resumed from `streamAcked`
        } else {
            continuation.resume()
        }
        flush()
    }

    func closeWrite(_ id: Int64, continuation: CheckedContinuation<Void, Error>?) {
        eventLoop.assertInEventLoop()
        guard let conn, let stream = streams[id], !stream.writeClosed else {
            continuation?.resume()
            return
        }
        stream.writeClosed = true
        _ = cq_stream_close_write(conn, id)
        continuation?.resume()
        flush()
        freeIfDone(id)
    }

    /// The user is done: unread bytes are dropped (and credited), our side closes after what is
    /// queued, and the state goes once the transport closes the stream.
    func abandon(_ id: Int64) {
        eventLoop.assertInEventLoop()
        guard let stream = streams[id] else { return }
        stream.abandoned = true
        var unread = 0
        while let chunk = stream.inbound.popFirst() { unread += chunk.readableBytes }
        unread += stream.filling?.readableBytes ?? 0
        stream.filling = nil
        if unread > 0, let conn { cq_stream_consumed(conn, id, unread) }
        closeWrite(id, continuation: nil)
        freeIfDone(id)
    }

    func reset(_ id: Int64) {
        eventLoop.assertInEventLoop()
        guard streams[id] != nil else { return }
        if let conn { _ = cq_stream_reset(conn, id, 0) }
        fail(id, with: SessionError(.streamReset, "stream \(id) was reset"))
        streams[id] = nil
        flush()
    }

    private func fail(_ id: Int64, with error: Error) {
        guard let stream = streams[id] else { return }
        stream.error = error
        if let reader = stream.reader, !stream.hasUnread {
            stream.reader = nil
            reader.resume(throwing: error)
        }
        if let writer = stream.writer {
            stream.writer = nil
            writer.resume(throwing: error)
        }
    }

    /// A stream state goes once the transport closed it (or we reset it) and its user took
    /// everything; an abandoned one once the transport closed it.
    private var transportClosed = Set<Int64>()

    private func freeIfDone(_ id: Int64) {
        guard let stream = streams[id], transportClosed.contains(id) else { return }
        guard stream.abandoned || (stream.reader == nil && !stream.hasUnread && stream.writer == nil) else {
            return
        }
        streams[id] = nil
        transportClosed.remove(id)
    }

    // MARK: C callbacks (inside cq_conn_* calls on the event loop)

    fileprivate func verify(extension value: UnsafeBufferPointer<UInt8>, spki: UnsafeBufferPointer<UInt8>) -> Int32 {
        do {
            peerCertificateKey = Array(spki)
            let authenticated = try Libp2pTLS.verify(extension: ArraySlice(value), spki: ArraySlice(spki))
            if let expectedPeer, authenticated != expectedPeer {
                verifyError = NetworkError(
                    .refused,
                    "peer id mismatch: dialled \(expectedPeer), but \(remote) authenticated as \(authenticated)")
                return -1
            }
            peer = authenticated
            if authenticateOnly {
                self.authenticated = true
                return -1
            }
            return 0
        } catch {
            verifyError = NetworkError(.refused, "QUIC peer at \(remote) refused: \(error.message)")
            return -1
        }
    }

    fileprivate func handshakeCompleted() {
        isHandshakeComplete = true
        lastStreamTraffic = .now()
        // Not from inside the C callback: the promise's callbacks wire and register the connection.
        let handshake = self.handshake
        eventLoop.execute { handshake.succeed(()) }
    }

    fileprivate func streamOpened(_ id: Int64) {
        guard streams[id] == nil else { return }
        streams[id] = Stream()
        lastStreamTraffic = .now()
        if let onStreamOpened {
            onStreamOpened(id)
        } else {
            unannounced.append(id)
        }
    }

    fileprivate func streamData(_ id: Int64, _ data: UnsafeBufferPointer<UInt8>, fin: Bool) {
        guard let stream = streams[id] else {
            // A stream we reset or freed: credit what still arrives.
            if data.count > 0, let conn { cq_stream_consumed(conn, id, data.count) }
            return
        }
        lastStreamTraffic = .now()
        if stream.abandoned {
            if data.count > 0, let conn { cq_stream_consumed(conn, id, data.count) }
        } else if data.count > 0 {
            append(UnsafeRawBufferPointer(data), to: stream)
        }
        if fin { stream.remoteClosed = true }
        if stream.reader != nil { readersToWake.append(id) }
        endpoint.markDirty(self)
    }

    /// Queues received bytes: into the buffer being filled while it has room, else a new one.
    private func append(_ data: UnsafeRawBufferPointer, to stream: Stream) {
        if var filling = stream.filling {
            stream.filling = nil  // the buffer's only reference while written to (no copy)
            if filling.writableBytes >= data.count {
                filling.writeBytes(data)
                stream.filling = filling
                return
            }
            stream.inbound.append(filling)
        }
        if data.count >= Self.fillThreshold {
            var buffer = endpoint.allocator.buffer(capacity: max(Self.fillCapacity, data.count))
            buffer.writeBytes(data)
            stream.filling = buffer
        } else {
            stream.inbound.append(endpoint.allocator.buffer(bytes: data))
        }
    }

    fileprivate func streamReset(_ id: Int64) {
        resetByPeer.insert(id)
        if resetByPeer.count > 1024 { resetByPeer.remove(resetByPeer.first!) }
        guard let stream = streams[id] else { return }
        stream.error = SessionError(.streamReset, "stream \(id) was reset by the peer")
        if let writer = stream.writer {
            stream.writer = nil
            writer.resume(throwing: stream.error!)
        }
        if stream.reader != nil { readersToWake.append(id) }
        endpoint.markDirty(self)
    }

    fileprivate func streamClosed(_ id: Int64) {
        guard let stream = streams[id] else { return }
        transportClosed.insert(id)
        if let writer = stream.writer {
            stream.writer = nil
            writer.resume(throwing: SessionError(.streamClosed, "stream \(id) closed"))
        }
        if !stream.remoteClosed, stream.error == nil {
            stream.error = SessionError(.streamReset, "stream \(id) was closed before its end")
        }
        if stream.reader != nil { readersToWake.append(id) }
        endpoint.markDirty(self)
        freeIfDone(id)
    }

    fileprivate func streamAcked(_ id: Int64, unacked: UInt64) {
        guard let stream = streams[id] else { return }
        stream.unacked = unacked
        if unacked <= Self.streamSendLimit, let writer = stream.writer {
            stream.writer = nil
            writer.resume()
        }
    }

    /// The connection a C callback's context names (`context`: unretained; the endpoint holds the
    /// connection while its cq_conn exists).
    private static func core(_ ctx: UnsafeMutableRawPointer?) -> QUICConnectionCore {
        Unmanaged<QUICConnectionCore>.fromOpaque(ctx!).takeUnretainedValue()
    }

    /// The C callbacks (cq_conn_*_new copies the struct).
    static let callbacks: cq_callbacks = {
        return cq_callbacks(
            verify_peer: { ctx, value, valueLength, spki, spkiLength in
                QUICConnectionCore.core(ctx).verify(
                    extension: UnsafeBufferPointer(start: value, count: valueLength),
                    spki: UnsafeBufferPointer(start: spki, count: spkiLength))
            },
            handshake_completed: { ctx in QUICConnectionCore.core(ctx).handshakeCompleted() },
            stream_opened: { ctx, id in QUICConnectionCore.core(ctx).streamOpened(id) },
            stream_data: { ctx, id, data, length, fin in
                QUICConnectionCore.core(ctx).streamData(id, UnsafeBufferPointer(start: data, count: length), fin: fin != 0)
            },
            stream_reset: { ctx, id, _ in QUICConnectionCore.core(ctx).streamReset(id) },
            stream_closed: { ctx, id in QUICConnectionCore.core(ctx).streamClosed(id) },
            stream_acked: { ctx, id, unacked in QUICConnectionCore.core(ctx).streamAcked(id, unacked: unacked) },
            cid_added: { ctx, cid, length in
                if let cid, let id = QUICConnectionID(cid, count: length) { QUICConnectionCore.core(ctx).addRoute(id) }
            },
            cid_removed: { ctx, cid, length in
                if let cid, let id = QUICConnectionID(cid, count: length) { QUICConnectionCore.core(ctx).removeRoute(id) }
            })
    }()
}

/// A QUIC connection id (at most 20 bytes) as a dictionary key, without allocating.
struct QUICConnectionID: Hashable {
    private var low: UInt64 = 0
    private var high: UInt64 = 0
    private var tail: UInt32 = 0
    private var length: UInt8 = 0

    init?(_ bytes: UnsafePointer<UInt8>, count: Int) {
        guard count <= 20 else { return nil }
        length = UInt8(count)
        for index in 0..<count {
            let byte = bytes[index]
            if index < 8 {
                low |= UInt64(byte) << (8 * index)
            } else if index < 16 {
                high |= UInt64(byte) << (8 * (index - 8))
            } else {
                tail |= UInt32(byte) << (8 * (index - 16))
            }
        }
    }
}
