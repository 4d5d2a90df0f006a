import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One accepted client connection, shared by its NIO handler (on the event loop) and the tasks
/// that run its requests.
///
/// The handler parses lines and hands valid requests to ``requests``; ``serve()`` runs each in a
/// child task and writes its answer with ``send(_:as:)``. All writes are counted in
/// ``Outbound/pendingBytes`` until the socket has taken them: that count is what bounds the
/// daemon's memory for a client that does not read.
final class ControlAPIServerConnection: Sendable {
    /// A valid request and its handler.
    struct Work: Sendable {
        var request: JSONRPCRequest
        var handler: ControlAPIMethods.Handler
        /// Names the request among those awaiting an answer (ids may repeat); set by ``submit(_:)``.
        var token: UInt64 = 0
    }

    enum Message {
        /// A response: never dropped (their number is bounded by the concurrent-request limit),
        /// but while the pending bytes are over the limit the handler reads no further requests.
        case response
        /// A notification: dropped with the subscriber when it would pass the limit.
        case notification
    }

    private struct Outbound {
        var pendingBytes = 0
        var isClosed = false
        /// Set by ``shutDown()``: no request is taken any more.
        var isShuttingDown = false
        var nextToken: UInt64 = 1
        /// Requests with an id whose response is not sent yet, by token: at shutdown each is
        /// answered `shutting_down` at once, and its own answer, if it comes, is not sent.
        var unanswered: [UInt64: JSONValue] = [:]
    }

    let id: UInt64
    let channel: any Channel
    let configuration: ControlAPIConfiguration
    let logger: Logger
    /// Requests handed over by the handler. Unbounded as a type, bounded in use: the handler stops
    /// parsing at `maxConcurrentRequestsPerConnection` requests not yet finished.
    let requests: AsyncStream<Work>
    private let requestsContinuation: AsyncStream<Work>.Continuation
    private let outbound = NIOLockedValueBox(Outbound())
    /// Set once the handler is added; callbacks into it run on the event loop.
    private let handler: NIOLockedValueBox<NIOLoopBound<ControlAPIConnectionHandler>?> = NIOLockedValueBox(nil)

    init(id: UInt64, channel: any Channel, configuration: ControlAPIConfiguration, logger: Logger) {
        self.id = id
        self.channel = channel
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "conn"] = "\(id)"
        self.logger = logger
        (requests, requestsContinuation) = AsyncStream.makeStream(of: Work.self)
    }

    func attach(_ handler: ControlAPIConnectionHandler) {
        let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        self.handler.withLockedValue { $0 = bound }
    }

    var isClosed: Bool { outbound.withLockedValue { $0.isClosed } }

    var pendingBytes: Int { outbound.withLockedValue { $0.pendingBytes } }

    /// Hands a request to ``serve()``. False when the connection is no longer served (closed, or
    /// the server is shutting down).
    func submit(_ work: Work) -> Bool {
        var work = work
        let admitted = outbound.withLockedValue { state -> Bool in
            guard !state.isShuttingDown, !state.isClosed else { return false }
            work.token = state.nextToken
            state.nextToken += 1
            if let id = work.request.id { state.unanswered[work.token] = id }
            return true
        }
        guard admitted else { return false }
        if case .enqueued = requestsContinuation.yield(work) { return true }
        outbound.withLockedValue { _ = $0.unanswered.removeValue(forKey: work.token) }
        return false
    }

    /// The server is shutting down (spec/control-api.md §1): every request still running is
    /// answered `-32000 shutting_down` now, whether or not its handler heeds the cancellation that
    /// follows; no further request is taken; the connection closes once those answers are written.
    func shutDown() {
        let unanswered = outbound.withLockedValue { state -> [(UInt64, JSONValue)] in
            state.isShuttingDown = true
            defer { state.unanswered = [:] }
            return state.unanswered.sorted { $0.key < $1.key }
        }
        let error = ControlAPIError(.failed, "the daemon is shutting down", detail: "shutting_down")
        for (_, id) in unanswered {
            try? send(JSONRPCResponse.failure(id: id, error: error), as: .response)
        }
        requestsContinuation.finish()  // serve() ends its loop and cancels the running requests
        onLoop { $0.shutDown() }
    }

    /// The channel is closed: no more requests, and every send from now on throws.
    func didClose() {
        outbound.withLockedValue { $0.isClosed = true }
        requestsContinuation.finish()
        handler.withLockedValue { $0 = nil }
    }

    /// Runs every request of this connection in a child task, until the connection closes or the
    /// calling task is cancelled; then cancels the requests still running and waits for them.
    func serve() async {
        await withDiscardingTaskGroup { group in
            for await work in requests {
                group.addTask { await self.perform(work) }
            }
            group.cancelAll()
        }
    }

    private func perform(_ work: Work) async {
        defer { requestFinished() }
        let request = work.request
        switch work.handler {
        case .call(let handler):
            let answer: JSONValue
            do {
                let result = try await handler(request.params)
                answer = JSONRPCResponse.success(id: request.id ?? .null, result: result)
            } catch {
                answer = JSONRPCResponse.failure(id: request.id ?? .null, error: Self.answerError(for: error))
                logger.debug(
                    "control API method failed", metadata: ["method": "\(request.method)", "error": "\(error)"])
            }
            guard request.id != nil else { return }  // a notification gets no response
            try? send(answer, as: .response, answering: work.token)
        case .subscription(let handler):
            // A subscription needs an id for its response; invoked as a notification it is ignored.
            guard let id = request.id else { return }
            let subscriber = ControlAPISubscriber(connection: self, requestID: id, token: work.token)
            do {
                try await handler(request.params, subscriber)
                if !subscriber.isAccepted {
                    let error = ControlAPIError(
                        .internalError, "the subscription \(request.method) ended without accepting")
                    try? send(JSONRPCResponse.failure(id: id, error: error), as: .response, answering: work.token)
                    return
                }
                logger.debug("subscription ended", metadata: ["method": "\(request.method)"])
            } catch {
                if !subscriber.isAccepted {
                    try? send(
                        JSONRPCResponse.failure(id: id, error: Self.answerError(for: error)), as: .response,
                        answering: work.token)
                    return
                }
                if !isClosed {
                    logger.warning(
                        "subscription failed; closing the connection",
                        metadata: ["method": "\(request.method)", "error": "\(error)"])
                }
            }
            // spec §6: the end of a subscription closes its connection, so the client's stream ends.
            closeAfterPendingWrites()
        }
    }

    /// The error a handler's failure is answered with.
    static func answerError(for error: any Error) -> ControlAPIError {
        if let error = error as? ControlAPIError { return error }
        if error is CancellationError {
            return ControlAPIError(.failed, "the request was cancelled", detail: "cancelled")
        }
        return ControlAPIError(.failed, "\(error)")
    }

    /// Encodes `message` as one line and writes it. Throws `connectionClosed` when the connection is
    /// closed, and for a notification `slowConsumer` when it would pass the pending-bytes limit (the
    /// connection is then closed). With `token`, the message is the response to that request and
    /// is dropped if the request was answered already (at shutdown).
    func send(_ message: JSONValue, as kind: Message, answering token: UInt64? = nil) throws(ControlAPIError) {
        var buffer = channel.allocator.buffer(capacity: 256)
        buffer.writeJSONValue(message)
        if buffer.readableBytes > configuration.maxResponseLength {
            let error = ControlAPIError(
                .internalError,
                "the \(kind == .response ? "response" : "notification") is \(buffer.readableBytes) bytes, over the "
                    + "\(configuration.maxResponseLength)-byte limit", detail: "response_too_large")
            guard kind == .response else { throw error }
            buffer.clear()
            buffer.writeJSONValue(JSONRPCResponse.failure(id: message["id"] ?? .null, error: error))
        }
        buffer.writeInteger(UInt8(ascii: "\n"))
        let count = buffer.readableBytes
        let limit = configuration.maxOutboundBytesPerConnection
        enum Verdict { case write, closed, drop(pending: Int), answered }
        let verdict = outbound.withLockedValue { state -> Verdict in
            if state.isClosed { return .closed }
            if let token, state.unanswered.removeValue(forKey: token) == nil { return .answered }
            if kind == .notification && state.pendingBytes + count > limit {
                state.isClosed = true
                return .drop(pending: state.pendingBytes)
            }
            state.pendingBytes += count
            return .write
        }
        switch verdict {
        case .closed:
            throw ControlAPIError(.connectionClosed, "the client has disconnected")
        case .drop(let pending):
            logger.warning(
                "dropping a subscriber that does not read: \(pending) bytes unsent, the limit is \(limit)",
                metadata: ["pending_bytes": "\(pending)"])
            channel.close(promise: nil)
            throw ControlAPIError(
                .slowConsumer,
                "the client did not read \(pending) bytes of notifications (limit \(limit)); it was dropped")
        case .answered:
            return
        case .write:
            channel.writeAndFlush(buffer).whenComplete { _ in self.didWrite(count) }
        }
    }

    private func didWrite(_ count: Int) {
        outbound.withLockedValue { $0.pendingBytes -= count }
        onLoop { $0.outboundDrained() }
    }

    private func requestFinished() {
        onLoop { $0.requestFinished() }
    }

    private func closeAfterPendingWrites() {
        onLoop { $0.closeWhenIdle() }
    }

    private func onLoop(_ body: @escaping @Sendable (ControlAPIConnectionHandler) -> Void) {
        guard let bound = handler.withLockedValue({ $0 }) else { return }
        channel.eventLoop.execute { body(bound.value) }
    }
}
