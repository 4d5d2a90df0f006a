import Logging
import NIOCore

/// The server side of one control API connection, on its event loop: frames lines, parses and
/// validates requests, answers protocol errors itself, hands valid requests to the connection's
/// tasks, and applies backpressure by holding back `read()`.
///
/// It stops reading (and parsing already-read lines) while the connection has
/// `maxConcurrentRequestsPerConnection` requests unfinished or more than
/// `maxOutboundBytesPerConnection` bytes unsent, and resumes when a request finishes or the socket
/// takes the bytes. So a client that pipelines requests without reading the answers is served at
/// the pace it reads, and costs a bounded amount of memory.
final class ControlAPIConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case open
        /// The client shut its write side: answer what was read, then close.
        case inputClosed
        /// A fatal framing error was answered; close when it is written.
        case closing
        case closed
    }

    private let connection: ControlAPIServerConnection
    private let methods: ControlAPIMethods
    private let parser: JSONParser
    private var framer: LineFramer
    private var state = State.open
    private var context: ChannelHandlerContext?
    private var unfinishedRequests = 0
    private var readHeldBack = false
    private var isProcessing = false
    private var closeWhenDrained = false

    init(connection: ControlAPIServerConnection, methods: ControlAPIMethods) {
        self.connection = connection
        self.methods = methods
        self.parser = JSONParser(maxDepth: connection.configuration.maxNestingDepth)
        self.framer = LineFramer(maxLineLength: connection.configuration.maxLineLength)
    }

    private var mayProceed: Bool {
        unfinishedRequests < connection.configuration.maxConcurrentRequestsPerConnection
            && connection.pendingBytes <= connection.configuration.maxOutboundBytesPerConnection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .open = state else { return }  // after a fatal error or EOF, input is discarded
        framer.append(unwrapInboundIn(data))
        processLines()
    }

    func read(context: ChannelHandlerContext) {
        switch state {
        case .open where mayProceed:
            context.read()
        case .open:
            readHeldBack = true
        case .inputClosed, .closing, .closed:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event, case .open = state {
            // Half-close (`nc -N`, `socat`): the lines already read still get their answers. An
            // unterminated last line is discarded: only a newline completes a request.
            state = .inputClosed
            processLines()
            closeIfFinished()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        connection.didClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ECONNRESET, EPIPE and the like: the client is gone; nothing to answer.
        connection.logger.debug("control API connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Callbacks from the connection (on the event loop)

    func requestFinished() {
        unfinishedRequests -= 1
        resume()
    }

    func outboundDrained() {
        if closeWhenDrained && connection.pendingBytes == 0 {
            context?.close(promise: nil)
            return
        }
        resume()
    }

    /// The server is shutting down: read and take nothing more, close once what is written (the
    /// `shutting_down` answers) has been taken by the socket.
    func shutDown() {
        switch state {
        case .closed: return
        case .open, .inputClosed, .closing: state = .closing
        }
        closeWhenIdle()
    }

    /// Closes once the bytes written so far have been taken by the socket.
    func closeWhenIdle() {
        closeWhenDrained = true
        if connection.pendingBytes == 0 { context?.close(promise: nil) }
    }

    // MARK: Lines

    private func resume() {
        // A write that completes inline while lines are being processed lands here: the running
        // loop sees the new counts itself; re-entering it would recurse once per line.
        guard !isProcessing else { return }
        switch state {
        case .open:
            processLines()
        case .inputClosed:
            processLines()
            closeIfFinished()
        case .closing, .closed:
            break
        }
    }

    private func processLines() {
        isProcessing = true
        defer { isProcessing = false }
        while mayProceed {
            switch state {
            case .open, .inputClosed: break
            case .closing, .closed: return
            }
            let line: ByteBuffer?
            do {
                line = try framer.nextLine()
            } catch {
                failConnection(error)
                return
            }
            guard let line else {
                // spec §2: a line over the limit is answered `line_too_long` even when the input
                // ends before its newline (the framer allows one more byte for a "\r" that can now
                // never come).
                if case .inputClosed = state, framer.bufferedByteCount > framer.maxLineLength {
                    failConnection(framer.tooLong(atLeast: framer.bufferedByteCount))
                    return
                }
                break
            }
            handle(line)
        }
        if readHeldBack, mayProceed, case .open = state, let context {
            readHeldBack = false
            context.read()
        }
    }

    private func closeIfFinished() {
        guard case .inputClosed = state, unfinishedRequests == 0 else { return }
        closeWhenIdle()
    }

    private func handle(_ line: ByteBuffer) {
        if line.readableBytesView.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) {
            return  // blank lines are allowed between requests
        }
        let parsed = line.withUnsafeReadableBytes { parser.parse($0) }
        let value: JSONValue
        switch parsed {
        case .success(let parsedValue): value = parsedValue
        case .failure(let error):
            answer(id: .null, error: error)
            return
        }
        let request: JSONRPCRequest
        switch JSONRPCRequest.validate(value) {
        case .success(let valid): request = valid
        case .failure(let invalid):
            answer(id: invalid.id, error: invalid.error)
            return
        }
        guard let handler = methods.handler(for: request.method) else {
            if let id = request.id {
                answer(id: id, error: ControlAPIError(.methodNotFound, "no method \"\(request.method)\""))
            }
            return
        }
        unfinishedRequests += 1
        if !connection.submit(ControlAPIServerConnection.Work(request: request, handler: handler)) {
            unfinishedRequests -= 1
            if let id = request.id {
                answer(id: id, error: ControlAPIError(.failed, "the server is shutting down", detail: "shutting_down"))
            }
        }
    }

    private func answer(id: JSONValue, error: ControlAPIError) {
        try? connection.send(JSONRPCResponse.failure(id: id, error: error), as: .response)
    }

    /// A line over the limit: answer once, discard everything else, close when written.
    private func failConnection(_ error: ControlAPIError) {
        connection.logger.info("closing a control API connection: \(error.message)")
        answer(id: .null, error: error)
        state = .closing
        closeWhenIdle()
    }
}
