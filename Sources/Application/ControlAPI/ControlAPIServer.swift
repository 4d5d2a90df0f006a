import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The control API server: JSON-RPC 2.0 over a Unix domain socket, one JSON object per line
/// (spec/control-api.md).
///
/// ```swift
/// var methods = ControlAPIMethods()
/// methods.register("node.id") { _ in ["peer_id": .string(peerID)] }
/// let server = try await ControlAPIServer.bind(socketPath: dataDir.apiSocketPath, methods: methods)
/// await server.run()          // until shutdown() or cancellation
/// ```
///
/// ``bind(socketPath:methods:configuration:logger:eventLoopGroup:)`` creates the socket (mode 0600,
/// never reachable by others before that), refusing a path where another live daemon answers and
/// replacing a stale socket file. Connections are accepted from then on; ``run()`` serves their
/// requests, each in a child task. ``shutdown()`` stops accepting, closes every connection and
/// removes the socket file; `run()` then returns once every request task has finished.
public final class ControlAPIServer: Sendable {
    /// The socket path.
    public let socketPath: String
    private let serverChannel: any Channel
    private let socketIdentity: UnixSocketFile.Identity
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let connections: AsyncStream<ControlAPIServerConnection>
    private let gracePeriod: TimeAmount

    private struct State {
        var isShutDown = false
        var isShutDownComplete = false
        /// Later ``shutdown()`` calls wait here for the first one to finish.
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        var nextConnectionID: UInt64 = 1
        var open: [UInt64: ControlAPIServerConnection] = [:]
        /// Accepted connections go to `run()` through this; finished at shutdown. Unbounded as a
        /// type, bounded by `maxConnections` in use.
        var connectionsContinuation: AsyncStream<ControlAPIServerConnection>.Continuation
    }

    private init(
        socketPath: String, serverChannel: any Channel, socketIdentity: UnixSocketFile.Identity, logger: Logger,
        state: NIOLockedValueBox<State>, connections: AsyncStream<ControlAPIServerConnection>, gracePeriod: TimeAmount
    ) {
        self.gracePeriod = gracePeriod
        self.socketPath = socketPath
        self.serverChannel = serverChannel
        self.socketIdentity = socketIdentity
        self.logger = logger
        self.state = state
        self.connections = connections
    }

    /// Creates the socket at `socketPath` and starts accepting connections.
    ///
    /// - Throws: `alreadyRunning` when another live daemon answers at `socketPath`;
    ///   `socketFailure` when the path is too long for a Unix socket, its directory is missing, a
    ///   file that is not a socket is in the way, or the socket cannot be created, secured or moved.
    public static func bind(
        socketPath: String,
        methods: ControlAPIMethods,
        configuration: ControlAPIConfiguration = ControlAPIConfiguration(),
        logger: Logger = Logger(label: "agentd.control-api"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(ControlAPIError) -> ControlAPIServer {
        let logger = {
            var logger = logger
            logger[metadataKey: "socket"] = "\(socketPath)"
            return logger
        }()
        try checkLength(of: socketPath)
        let occupant = try UnixSocketFile.occupant(of: socketPath)
        switch occupant {
        case .nothing:
            break
        case .otherFile:
            throw ControlAPIError(
                .socketFailure, "\(socketPath) exists and is not a socket; remove it or choose another path")
        case .socket:
            if try await isAnswering(socketPath, eventLoopGroup: eventLoopGroup) {
                throw ControlAPIError(
                    .alreadyRunning,
                    "another agentd is already serving the control API at \(socketPath); stop it first, or use another --data-dir"
                )
            }
            logger.info("replacing a stale control API socket left by a process that is gone")
        }

        let (connections, continuation) = AsyncStream.makeStream(of: ControlAPIServerConnection.self)
        let state = NIOLockedValueBox(State(connectionsContinuation: continuation))
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                accept(channel, state: state, methods: methods, configuration: configuration, logger: logger)
            }
        let channel = try await listen(at: socketPath, with: bootstrap, replacingStale: occupant != .nothing)
        do throws(ControlAPIError) {
            guard case .socket(let identity) = try UnixSocketFile.occupant(of: socketPath) else {
                throw ControlAPIError(.socketFailure, "the socket at \(socketPath) vanished right after it was created")
            }
            logger.info("control API listening")
            return ControlAPIServer(
                socketPath: socketPath, serverChannel: channel, socketIdentity: identity, logger: logger, state: state,
                connections: connections, gracePeriod: configuration.shutdownGracePeriod)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    #if os(Linux)
        /// Binds straight at `socketPath`, mode 0600 from the start (``UnixSocketFile/bindOwnerOnly(_:backlog:)``):
        /// every path that fits `sun_path` works (spec/control-api.md §1).
        private static func listen(
            at socketPath: String, with bootstrap: ServerBootstrap, replacingStale: Bool
        ) async throws(ControlAPIError) -> any Channel {
            if replacingStale {
                guard unlink(socketPath) == 0 || errno == ENOENT else {
                    throw UnixSocketFile.failure("cannot remove the stale socket \(socketPath)", errno: errno)
                }
            }
            let descriptor = try UnixSocketFile.bindOwnerOnly(socketPath, backlog: 256)
            do {
                // The channel owns the descriptor from here (it closes it; only if NIO cannot wrap it
                // at all, which takes a failing fcntl, would it stay open until the process exits).
                return try await bootstrap.withBoundSocket(descriptor).get()
            } catch {
                unlink(socketPath)
                throw ControlAPIError(.socketFailure, "cannot listen on \(socketPath): \(error)")
            }
        }
    #else
        /// Binds in a fresh private directory (mode 0700) beside `socketPath`, makes the socket 0600
        /// there and renames it into place: a socket file takes its mode from the umask at bind
        /// time, and nobody can reach it inside the private directory before the `chmod`. The
        /// temporary path must fit `sun_path` too.
        private static func listen(
            at socketPath: String, with bootstrap: ServerBootstrap, replacingStale: Bool
        ) async throws(ControlAPIError) -> any Channel {
            let privateDirectory = try UnixSocketFile.makePrivateDirectory(besides: socketPath)
            let temporaryPath = privateDirectory + "/s"
            var boundChannel: (any Channel)?
            do throws(ControlAPIError) {
                try checkLength(of: temporaryPath, for: socketPath)
                let channel: any Channel
                do {
                    channel = try await bootstrap.bind(unixDomainSocketPath: temporaryPath).get()
                } catch {
                    throw ControlAPIError(.socketFailure, "cannot listen on \(socketPath): \(error)")
                }
                boundChannel = channel
                try UnixSocketFile.setOwnerOnly(temporaryPath)
                try UnixSocketFile.move(temporaryPath, to: socketPath)
                UnixSocketFile.removeQuietly(file: nil, directory: privateDirectory)
                return channel
            } catch {
                try? await boundChannel?.close()
                UnixSocketFile.removeQuietly(file: temporaryPath, directory: privateDirectory)
                throw error
            }
        }
    #endif

    /// Serves requests until ``shutdown()`` is called or the calling task is cancelled; returns
    /// after the socket is removed and every request task has finished.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await connection in connections {
                group.addTask { await connection.serve() }
            }
            // Shut down (or cancelled): stop accepting and close every connection, which ends each
            // connection's request stream; then cancel what still runs.
            await shutdown()
            group.cancelAll()
        }
    }

    /// Stops accepting connections, removes the socket file (if it is still ours), answers every
    /// request still running with `-32000 shutting_down` and closes every open connection once
    /// that is written (at most `shutdownGracePeriod` later for a client that does not read).
    /// Idempotent: every call returns once that is done. A running ``run()`` returns once its
    /// tasks have finished: they are cancelled.
    public func shutdown() async {
        let open: [ControlAPIServerConnection]? = state.withLockedValue { state in
            guard !state.isShutDown else { return nil }
            state.isShutDown = true
            state.connectionsContinuation.finish()
            return Array(state.open.values)
        }
        guard let open else {
            await withCheckedContinuation { continuation in
                let finished = state.withLockedValue { state in
                    if !state.isShutDownComplete { state.shutdownWaiters.append(continuation) }
                    return state.isShutDownComplete
                }
                if finished { continuation.resume() }
            }
            return
        }
        try? await serverChannel.close()
        UnixSocketFile.remove(socketPath, ifIdentity: socketIdentity)
        for connection in open {
            let channel = connection.channel
            let deadline = channel.eventLoop.scheduleTask(in: gracePeriod) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in deadline.cancel() }
            connection.shutDown()
        }
        for connection in open {
            try? await connection.channel.closeFuture.get()
        }
        logger.info("control API stopped")
        let waiters = state.withLockedValue { state in
            state.isShutDownComplete = true
            defer { state.shutdownWaiters = [] }
            return state.shutdownWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Connections open now.
    public var connectionCount: Int { state.withLockedValue { $0.open.count } }

    // MARK: - Accepting

    private static func accept(
        _ channel: any Channel, state: NIOLockedValueBox<State>, methods: ControlAPIMethods,
        configuration: ControlAPIConfiguration, logger: Logger
    ) -> EventLoopFuture<Void> {
        let admitted: ControlAPIServerConnection? = state.withLockedValue { state in
            guard !state.isShutDown, state.open.count < configuration.maxConnections else { return nil }
            let id = state.nextConnectionID
            state.nextConnectionID += 1
            let connection = ControlAPIServerConnection(
                id: id, channel: channel, configuration: configuration, logger: logger)
            state.open[id] = connection
            return connection
        }
        guard let connection = admitted else {
            logger.warning("refusing a control API connection: \(configuration.maxConnections) are open")
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(RefusingHandler(limit: configuration.maxConnections))
            }
        }
        channel.closeFuture.whenComplete { _ in
            _ = state.withLockedValue { $0.open.removeValue(forKey: connection.id) }
        }
        return channel.eventLoop.makeCompletedFuture {
            let handler = ControlAPIConnectionHandler(connection: connection, methods: methods)
            try channel.pipeline.syncOperations.addHandler(handler)
            connection.attach(handler)
            let delivered = state.withLockedValue { state -> Bool in
                if case .enqueued = state.connectionsContinuation.yield(connection) { return true }
                return false
            }
            if !delivered { channel.close(promise: nil) }
        }
    }

    // MARK: - Socket path

    /// `sun_path` holds 108 bytes on Linux and 104 on macOS, including the terminating NUL; SwiftNIO,
    /// which both the server and the client use, takes at most 103 bytes on every platform.
    static let maximumPathLength = 103

    private static func checkLength(of path: String, for requested: String? = nil) throws(ControlAPIError) {
        do {
            _ = try SocketAddress(unixDomainSocketPath: path)
        } catch {
            if let requested {
                throw ControlAPIError(
                    .socketFailure,
                    "the socket path \(requested) is too long to be bound safely (the temporary path \(path) "
                        + "must fit a Unix socket address too); use a shorter path")
            }
            throw ControlAPIError(
                .socketFailure,
                "the socket path \(path) is \(path.utf8.count) bytes, too long for a Unix socket (at most \(maximumPathLength)); use a shorter path"
            )
        }
    }

    /// Whether something accepts connections at `path`: a live daemon. Connection refused means the
    /// socket file is stale.
    private static func isAnswering(_ path: String, eventLoopGroup: any EventLoopGroup) async throws(ControlAPIError)
        -> Bool
    {
        do {
            let channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(.seconds(2))
                .connect(unixDomainSocketPath: path)
                .get()
            try? await channel.close()
            return true
        } catch let error as IOError where error.errnoCode == ECONNREFUSED || error.errnoCode == ENOENT {
            return false
        } catch {
            throw ControlAPIError(
                .socketFailure,
                "cannot tell whether a daemon is serving at \(path): \(error); remove the file if none is")
        }
    }
}

/// Answers one error line and closes: the connection limit is reached.
private final class RefusingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let limit: Int
    private var refused = false

    init(limit: Int) { self.limit = limit }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func refuse(context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        let error = ControlAPIError(
            .failed, "the daemon serves at most \(limit) control API connections at once; try again later",
            detail: "too_many_connections")
        var buffer = context.channel.allocator.buffer(capacity: 256)
        buffer.writeJSONValue(JSONRPCResponse.failure(id: .null, error: error))
        buffer.writeInteger(UInt8(ascii: "\n"))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }
}
