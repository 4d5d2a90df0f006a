import Logging
import NIOCore

/// The client side of a control API connection, on its event loop: matches responses to pending
/// calls by id, times calls out, and passes notifications to the subscriber with backpressure (it
/// holds back `read()` while the subscriber's buffer is full).
final class ControlAPIClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    typealias NotificationSource = NIOThrowingAsyncSequenceProducer<
        ControlAPINotification, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark,
        ControlAPINotificationDemand
    >.Source

    private struct Pending {
        var promise: EventLoopPromise<JSONValue>
        var timeout: Scheduled<Void>?
    }

    private let socketPath: String
    private let logger: Logger
    private let parser: JSONParser
    private var framer: LineFramer
    private var context: ChannelHandlerContext?
    private var pending: [UInt64: Pending] = [:]
    private var notifications: NotificationSource?
    private var subscriberWantsMore = true
    private var readHeldBack = false
    /// Set once the connection is unusable; every later call fails with it.
    private var failure: ControlAPIError?

    init(socketPath: String, configuration: ControlAPIClientConfiguration, logger: Logger) {
        self.socketPath = socketPath
        self.logger = logger
        self.parser = JSONParser(maxDepth: configuration.maxNestingDepth)
        self.framer = LineFramer(maxLineLength: configuration.maxLineLength)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Calls (on the event loop)

    /// Registers a pending call with `id` (when it expects a response) and writes `line`.
    func send(line: ByteBuffer, id: UInt64?, promise: EventLoopPromise<JSONValue>, timeout: TimeAmount, method: String)
    {
        guard let context, failure == nil else {
            promise.fail(failure ?? ControlAPIError(.connectionClosed, "the connection to \(socketPath) is closed"))
            return
        }
        guard let id else {
            let socketPath = socketPath
            context.writeAndFlush(wrapOutboundOut(line)).whenComplete { result in
                switch result {
                case .success: promise.succeed(.null)
                case .failure(let error):
                    promise.fail(ControlAPIError(.connectionClosed, "cannot send to \(socketPath): \(error)"))
                }
            }
            return
        }
        let socketPath = socketPath
        let scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            guard let entry = self.pending.removeValue(forKey: id) else { return }
            entry.promise.fail(
                ControlAPIError(
                    .timeout, "\(method) got no response from the daemon at \(socketPath) within \(timeout)"))
        }
        pending[id] = Pending(promise: promise, timeout: scheduled)
        context.writeAndFlush(wrapOutboundOut(line), promise: nil)
    }

    /// The awaiting task was cancelled.
    func cancel(id: UInt64) {
        guard let entry = pending.removeValue(forKey: id) else { return }
        entry.timeout?.cancel()
        entry.promise.fail(ControlAPIError(.failed, "the call was cancelled", detail: "cancelled"))
    }

    // MARK: Notifications (on the event loop)

    /// From now on notifications go to `source`. False when there is already a subscriber.
    func startNotifications(_ source: NotificationSource) -> Bool {
        guard notifications == nil else { return false }
        if let failure {
            source.finish(failure)
            return true
        }
        notifications = source
        return true
    }

    /// The subscriber wants more notifications.
    func produceMore() {
        subscriberWantsMore = true
        if readHeldBack, let context {
            readHeldBack = false
            context.read()
        }
    }

    /// The subscriber dropped its sequence: the subscription, and with it the connection, ends.
    func subscriberGone() {
        notifications = nil
        context?.close(promise: nil)
    }

    // MARK: Channel events

    func read(context: ChannelHandlerContext) {
        if subscriberWantsMore {
            context.read()
        } else {
            readHeldBack = true
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard failure == nil else { return }
        framer.append(unwrapInboundIn(data))
        do throws(ControlAPIError) {
            while let line = try framer.nextLine() {
                if line.readableBytesView.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) {
                    continue
                }
                let value: JSONValue
                switch line.withUnsafeReadableBytes({ parser.parse($0) }) {
                case .success(let parsed): value = parsed
                case .failure(let error):
                    throw ControlAPIError(
                        .protocolError, "the daemon sent a line that is not valid JSON: \(error.message)")
                }
                try deliver(JSONRPCIncoming.classify(value))
            }
        } catch {
            // A refusal of the whole connection (id null) arrives as a remote error; everything else
            // here is the daemon breaking the protocol, a line over the limit included.
            let failure =
                error.kind == .protocolError || error.kind == .remoteError
                ? error
                : ControlAPIError(.protocolError, "the daemon at \(socketPath) sent a bad line: \(error.message)")
            fail(with: failure)
            context.close(promise: nil)
        }
    }

    private func deliver(_ incoming: JSONRPCIncoming) throws(ControlAPIError) {
        switch incoming {
        case .response(let id, let result):
            guard let number = id.uint64Value, let entry = pending.removeValue(forKey: number) else {
                if id == .null, case .failure(let error) = result {
                    // The daemon refused the connection or a line as a whole (e.g. too many connections).
                    throw ControlAPIError(.remoteError, error.message, code: error.code, detail: error.detail)
                }
                // A late response to a call that timed out or was cancelled.
                logger.debug("ignoring a response to no pending call", metadata: ["id": "\(id.jsonText)"])
                return
            }
            entry.timeout?.cancel()
            switch result {
            case .success(let value): entry.promise.succeed(value)
            case .failure(let error): entry.promise.fail(error)
            }
        case .notification(let notification):
            guard let notifications else {
                logger.debug(
                    "dropping a notification with no subscriber", metadata: ["method": "\(notification.method)"])
                return
            }
            switch notifications.yield(notification) {
            case .produceMore: break
            case .stopProducing: subscriberWantsMore = false
            case .dropped: self.notifications = nil
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(with: ControlAPIError(.connectionClosed, "the daemon closed the connection at \(socketPath)"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(with: ControlAPIError(.connectionClosed, "the connection to \(socketPath) failed: \(error)"))
        context.close(promise: nil)
    }

    /// Fails every pending call; ends the subscriber's sequence (cleanly when the connection just
    /// closed, with the error otherwise).
    private func fail(with error: ControlAPIError) {
        if failure == nil { failure = error }
        let calls = pending
        pending.removeAll()
        for entry in calls.values {
            entry.timeout?.cancel()
            entry.promise.fail(error)
        }
        if let notifications {
            if error.kind == .connectionClosed { notifications.finish() } else { notifications.finish(error) }
            self.notifications = nil
        }
    }
}

/// Passes the subscriber's demand to the handler on its event loop.
struct ControlAPINotificationDemand: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<ControlAPIClientHandler>

    func produceMore() {
        let handler = handler
        handler.eventLoop.execute { handler.value.produceMore() }
    }

    func didTerminate() {
        let handler = handler
        handler.eventLoop.execute { handler.value.subscriberGone() }
    }
}
