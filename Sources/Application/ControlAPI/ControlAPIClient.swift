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

/// A client of the control API: one connection to the daemon's socket.
///
/// ```swift
/// let client = try await ControlAPIClient.connect(socketPath: dataDir.apiSocketPath)
/// let id = try await client.call("node.id")
/// for try await event in try await client.subscribe("messages.subscribe") { … }
/// await client.close()
/// ```
///
/// Calls may run concurrently on one client; responses are matched by id. Every error is a
/// ``ControlAPIError``: `daemonUnreachable` (no socket file, or nothing listening — the message names
/// the path), `timeout`, `remoteError` (``ControlAPIError/code`` and ``ControlAPIError/detail`` carry
/// the daemon's code and `kind`), `protocolError`, `connectionClosed`.
public final class ControlAPIClient: Sendable {
    /// The socket path.
    public let socketPath: String
    private let channel: any Channel
    private let handler: NIOLoopBound<ControlAPIClientHandler>
    private let configuration: ControlAPIClientConfiguration
    private let nextID = NIOLockedValueBox<UInt64>(1)

    private init(
        socketPath: String, channel: any Channel, handler: NIOLoopBound<ControlAPIClientHandler>,
        configuration: ControlAPIClientConfiguration
    ) {
        self.socketPath = socketPath
        self.channel = channel
        self.handler = handler
        self.configuration = configuration
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Connects to the daemon at `socketPath`. Throws `daemonUnreachable` when there is no socket
    /// file, nothing listens on it, or the connection is refused or times out.
    public static func connect(
        socketPath: String,
        configuration: ControlAPIClientConfiguration = ControlAPIClientConfiguration(),
        logger: Logger = Logger(label: "agentd.control-api.client"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(ControlAPIError) -> ControlAPIClient {
        // The handler is handed out by the initializer itself: the daemon may close the connection
        // (refusing it) before a later look-up in the pipeline could find it.
        let installed = NIOLockedValueBox<NIOLoopBound<ControlAPIClientHandler>?>(nil)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = ControlAPIClientHandler(
                            socketPath: socketPath, configuration: configuration, logger: logger)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        installed.withLockedValue { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                    }
                }
                .connect(unixDomainSocketPath: socketPath)
                .get()
        } catch {
            throw unreachable(socketPath, error)
        }
        guard let handler = installed.withLockedValue({ $0 }) else {
            channel.close(promise: nil)
            throw ControlAPIError(.connectionClosed, "the connection to \(socketPath) closed while it was set up")
        }
        return ControlAPIClient(
            socketPath: socketPath, channel: channel, handler: handler, configuration: configuration)
    }

    /// Calls `method` and returns its result. `params` must be an object, an array or `.null` (no
    /// params). Waits at most `timeout` (default: the configuration's `callTimeout`).
    public func call(_ method: String, _ params: JSONValue = .null, timeout: Duration? = nil)
        async throws(ControlAPIError) -> JSONValue
    {
        let id = nextID.withLockedValue { id in
            defer { id += 1 }
            return id
        }
        let line = try encode(JSONRPCRequest(id: .number(id), method: method, params: params))
        let promise = channel.eventLoop.makePromise(of: JSONValue.self)
        let handler = handler
        let limit = TimeAmount(timeout ?? configuration.callTimeout)
        channel.eventLoop.execute {
            handler.value.send(line: line, id: id, promise: promise, timeout: limit, method: method)
        }
        return try await Self.result(of: promise.futureResult) {
            handler.eventLoop.execute { handler.value.cancel(id: id) }
        }
    }

    /// Sends `method` as a notification: no id, no response. Returns when it is written.
    public func notify(_ method: String, _ params: JSONValue = .null) async throws(ControlAPIError) {
        let line = try encode(JSONRPCRequest(id: nil, method: method, params: params))
        let promise = channel.eventLoop.makePromise(of: JSONValue.self)
        let handler = handler
        channel.eventLoop.execute {
            handler.value.send(line: line, id: nil, promise: promise, timeout: .zero, method: method)
        }
        _ = try await Self.result(of: promise.futureResult) {}
    }

    /// Calls a subscription method and returns its notifications, which arrive until the daemon
    /// closes the subscription or the returned sequence is dropped (that closes this client). One
    /// subscription per client: use a client of its own for it, since while its subscriber does not
    /// consume, the client stops reading (and so also misses responses to other calls).
    public func subscribe(_ method: String, _ params: JSONValue = .null, timeout: Duration? = nil)
        async throws(ControlAPIError) -> ControlAPISubscription
    {
        let handler = handler
        let produced = NIOThrowingAsyncSequenceProducer.makeSequence(
            elementType: ControlAPINotification.self,
            backPressureStrategy: NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(
                lowWatermark: max(1, configuration.notificationBufferSize / 4),
                highWatermark: max(1, configuration.notificationBufferSize)),
            finishOnDeinit: true,
            delegate: ControlAPINotificationDemand(handler: handler))
        let source = produced.source
        let started: Bool
        do {
            started = try await handler.eventLoop.submit { handler.value.startNotifications(source) }.get()
        } catch {
            throw ControlAPIError(.connectionClosed, "the connection to \(socketPath) is closed")
        }
        precondition(started, "ControlAPIClient.subscribe: this client already has a subscription")
        do {
            let result = try await call(method, params, timeout: timeout)
            return ControlAPISubscription(result: result, notifications: produced.sequence, client: self)
        } catch {
            source.finish()
            throw error
        }
    }

    /// Closes the connection. Pending calls fail with `connectionClosed`.
    public func close() async {
        try? await channel.close()
    }

    // MARK: -

    private func encode(_ request: JSONRPCRequest) throws(ControlAPIError) -> ByteBuffer {
        switch request.params {
        case .object, .array, .null: break
        default:
            throw ControlAPIError(
                .invalidParams, "params must be an object or an array, not \(request.params.typeName)")
        }
        var line = channel.allocator.buffer(capacity: 128)
        line.writeJSONValue(request.json)
        line.writeInteger(UInt8(ascii: "\n"))
        return line
    }

    private static func result(
        of future: EventLoopFuture<JSONValue>, onCancel: @escaping @Sendable () -> Void
    ) async throws(ControlAPIError) -> JSONValue {
        do {
            return try await withTaskCancellationHandler {
                try await future.get()
            } onCancel: {
                onCancel()
            }
        } catch let error as ControlAPIError {
            throw error
        } catch {
            throw ControlAPIError(.connectionClosed, "\(error)")
        }
    }

    /// Why nothing answers at `path`, as a `daemonUnreachable` naming the path.
    static func unreachable(_ path: String, _ error: any Error) -> ControlAPIError {
        let reason: String
        switch error {
        case let error as IOError where error.errnoCode == ENOENT:
            reason = "no control socket at \(path)"
        case let error as IOError where error.errnoCode == ECONNREFUSED:
            reason = "nothing is listening at \(path) (the socket file is left from a daemon that is gone)"
        case let error as IOError where error.errnoCode == EACCES:
            reason = "permission denied connecting to \(path) (it belongs to another user?)"
        case let error as IOError where error.errnoCode == ENOTDIR:
            reason = "no control socket at \(path) (a path component is not a directory)"
        case ChannelError.connectTimeout:
            reason = "connecting to \(path) timed out"
        case SocketAddressError.unixDomainSocketPathTooLong:
            reason = "the socket path \(path) is too long for a Unix socket"
        default:
            reason = "cannot connect to \(path): \(error)"
        }
        return ControlAPIError(.daemonUnreachable, reason)
    }
}

/// The notifications of a subscription, in order. The sequence ends when the daemon ends the
/// subscription or closes the connection; it throws ``ControlAPIError`` `protocolError` when the
/// daemon's bytes make no sense. Dropping it closes the client's connection.
public struct ControlAPISubscription: AsyncSequence, Sendable {
    public typealias Element = ControlAPINotification

    typealias Notifications = NIOThrowingAsyncSequenceProducer<
        ControlAPINotification, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark,
        ControlAPINotificationDemand
    >

    /// The subscribe call's result.
    public let result: JSONValue
    private let notifications: Notifications
    /// Held so the connection stays open while the sequence is in use.
    private let client: ControlAPIClient

    init(result: JSONValue, notifications: Notifications, client: ControlAPIClient) {
        self.result = result
        self.notifications = notifications
        self.client = client
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: notifications.makeAsyncIterator(), client: client)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Notifications.AsyncIterator
        let client: ControlAPIClient

        /// The next notification; `nil` when the subscription is over. Throws ``ControlAPIError``.
        public mutating func next() async throws -> ControlAPINotification? {
            try await base.next()
        }
    }
}
