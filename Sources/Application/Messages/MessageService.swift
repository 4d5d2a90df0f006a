#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network
import Resolution
import Session

/// Where the service learns the record of a name: the sender's key when a message arrives, the
/// recipient's peer and addresses when one is sent. The node plugs in the DHT (`DHT.resolve`);
/// tests a dictionary.
public protocol AgentDirectory: Sendable {
    /// The current verified record of `name`.
    /// - Throws: anything, when there is none or it cannot be found; the service reports it as
    ///   `unknown_sender` (receiving) or `unreachable` (sending).
    func record(for name: AgentName) async throws -> SignedAgentRecord
}

/// `/agent/msg/1.0.0` (spec/messages.md §8) over a `Host`: sends signed messages to the node of the
/// recipient's record, receives, checks and hands them to the local handler, correlates requests
/// with their responses, and reassembles STREAM parts.
///
/// The node owns one: it registers its local names (each with the key that signs for it), sets the
/// handler (its inbox), and calls `start()`. A received message is answered with a receipt only
/// after the handler took it.
public final class MessageService: Sendable {
    public static let protocolID = "/agent/msg/1.0.0"

    public struct Configuration: Sendable {
        /// The acceptance window (spec §5.1).
        public var policy = MessageAcceptance.Policy()
        /// Entries of the replay memory (spec §5.2).
        public var replayCapacity = 65_536
        /// STREAM reassembly limits (spec §5.3).
        public var reassembly = StreamReassemblyConfiguration()
        /// The sender waits this long for a receipt.
        public var receiptTimeout: TimeAmount = .seconds(10)
        /// A receiving stream is reset when no frame arrives for this long.
        public var idleStreamTimeout: TimeAmount = .seconds(30)
        /// A request waits this long for its response unless the caller says otherwise.
        public var requestTimeout: TimeAmount = .seconds(30)
        /// STREAM parts in flight (sent, receipt not yet read) on one stream.
        public var streamPipelineDepth = 8

        public init() {}
    }

    /// A message the handler is given: checked (signature, recipient, time, replay).
    public struct Delivery: Sendable {
        public let message: SignedAgentMessage
        /// The node it came from.
        public let peer: PeerID
    }

    /// Takes a checked message (the node: into the inbox) and returns nil, or refuses it with
    /// `.refused` or `.busy`, or says `.replayed` when it had taken the message before (the inbox
    /// remembers ids across restarts); other kinds are sent as `.refused`. Called one message at a time, in
    /// arrival order (STREAM parts in sequence order); it must not block for long and must not call
    /// back into the service synchronously.
    public typealias Handler = @Sendable (Delivery) -> MessageError?

    /// Where a message went.
    public struct Outcome: Sendable, Hashable {
        public let message: SignedAgentMessage
        /// The recipient's node.
        public let peer: PeerID
        /// Direct or relayed.
        public let path: ConnectionPath
        /// The receiver had accepted this message before (a retry whose receipt was lost): it is
        /// delivered, once (spec §5.2).
        public let wasDuplicate: Bool
    }

    public let configuration: Configuration
    private let host: Host
    private let directory: any AgentDirectory
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    /// Replay memory, reassembly and the handler, under one lock so that deliveries keep order.
    private let receiving: NIOLockedValueBox<Receiving>

    private struct State {
        var keys: [AgentName: Ed25519.PrivateKey] = [:]
        var pending: [MessageID: Pending] = [:]
    }

    private struct Pending {
        let recipient: AgentName
        var continuation: CheckedContinuation<SignedAgentMessage, any Error>?
        /// A response that arrived before `request()` began to wait (its receipt was in flight).
        var early: SignedAgentMessage?
        var timer: Scheduled<Void>?
    }

    private struct Receiving {
        var replay: ReplayGuard
        var reassembly: StreamReassembly<SignedAgentMessage>
        var handler: Handler?
    }

    /// - Parameter now: the wall clock in milliseconds since the epoch (tests pass their own).
    public init(
        host: Host, directory: any AgentDirectory, configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "agentd.msg"),
        now: @escaping @Sendable () -> UInt64 = { MessageService.systemMilliseconds() }
    ) {
        self.host = host
        self.directory = directory
        self.configuration = configuration
        self.logger = logger
        self.now = now
        self.state = NIOLockedValueBox(State())
        // Not persisted: across a restart the node's inbox, which keeps accepted ids until the
        // messages expire, refuses what this memory forgot (spec §5.2).
        self.receiving = NIOLockedValueBox(
            Receiving(
                replay: ReplayGuard(
                    capacity: configuration.replayCapacity, maximumAge: configuration.policy.maximumAge),
                reassembly: StreamReassembly<SignedAgentMessage>(configuration: configuration.reassembly)))
    }

    /// Milliseconds since the epoch, from the system clock.
    public static func systemMilliseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec) / 1_000_000
    }

    // MARK: Set-up

    /// Serves `/agent/msg/1.0.0`.
    public func start() {
        host.handle(Self.protocolID) { [self] stream in await serve(stream) }
    }

    /// Stops serving; requests still waiting fail with `.shutdown`.
    public func stop() {
        host.unhandle(Self.protocolID)
        for id in state.withLockedValue({ Array($0.pending.keys) }) {
            fail(id, MessageError(.shutdown, "the message service stopped"))
        }
    }

    /// Lets this node send as `name` (signing with `key`) and receive for it.
    public func addLocalName(_ name: AgentName, key: Ed25519.PrivateKey) {
        state.withLockedValue { $0.keys[name] = key }
    }

    public func removeLocalName(_ name: AgentName) {
        state.withLockedValue { _ = $0.keys.removeValue(forKey: name) }
    }

    /// The names this node sends and receives for.
    public var localNames: [AgentName] { state.withLockedValue { $0.keys.keys.sorted() } }

    /// Where checked messages go. Without a handler every message is refused `busy`.
    public func setHandler(_ handler: @escaping Handler) {
        receiving.withLockedValue { $0.handler = handler }
    }

    // MARK: Sending

    /// Signs `message` with the key of its sender (a local name) and delivers it.
    /// - Throws: `MessageError`: `.unknownLocalName`, a limit broken (`.oversized`, `.malformed`),
    ///   `.unreachable`, `.protocolNotSupported`, `.timeout`, `.protocolViolation`, or the
    ///   receiver's refusal.
    @discardableResult
    public func send(_ message: AgentMessage) async throws(MessageError) -> Outcome {
        try await deliver(try sign(message))
    }

    /// Signs `message` as its sender, a local name.
    public func sign(_ message: AgentMessage) throws(MessageError) -> SignedAgentMessage {
        guard let key = state.withLockedValue({ $0.keys[message.sender] }) else {
            throw MessageError(.unknownLocalName, "this node does not hold the key of \(message.sender)")
        }
        return try SignedAgentMessage(signing: message, with: key)
    }

    /// Delivers a signed message (a retry from the outbox keeps its bytes) on a stream of its own.
    @discardableResult
    public func deliver(_ signed: SignedAgentMessage) async throws(MessageError) -> Outcome {
        try await deliver(signed, connection: try await connect(to: signed.message.recipient))
    }

    /// Delivers a signed message to the node of `record`, the recipient's record the caller resolved
    /// already (the node's messenger, which falls back to the mailbox when this throws
    /// `.unreachable`, `.timeout` or `.protocolNotSupported`).
    @discardableResult
    public func deliver(_ signed: SignedAgentMessage, to record: SignedAgentRecord) async throws(MessageError)
        -> Outcome
    {
        guard record.record.name == signed.message.recipient else {
            throw MessageError(
                .unreachable, "the record given for \(signed.message.recipient) is for \(record.record.name)")
        }
        return try await deliver(signed, connection: try await connect(to: record))
    }

    private func deliver(_ signed: SignedAgentMessage, connection: Connection) async throws(MessageError) -> Outcome {
        let priority: YamuxPriority
        switch signed.message.type {
        case .response, .error: priority = .high
        case .request, .notification: priority = .normal
        case .stream: priority = .low
        }
        let stream = try await openStream(on: connection, first: signed, priority: priority)
        defer { stream.close() }
        let duplicate = try await readReceipt(on: stream, for: signed)
        return Outcome(
            message: signed, peer: stream.remotePeer, path: connection.path, wasDuplicate: duplicate)
    }

    /// Sends `message` (a REQUEST) and waits for its RESPONSE or ERROR from the recipient.
    /// - Returns: the response (or ERROR) message, checked like any received message.
    /// - Throws: as `send`, and `.timeout` when no answer comes within `timeout`.
    public func request(_ message: AgentMessage, timeout: TimeAmount? = nil) async throws(MessageError)
        -> SignedAgentMessage
    {
        precondition(message.type == .request, "request() sends REQUEST messages")
        let signed = try sign(message)
        let id = message.id
        state.withLockedValue { $0.pending[id] = Pending(recipient: message.recipient) }
        let connection: Connection
        do throws(MessageError) {
            connection = try await connect(to: message.recipient)
            let stream = try await openStream(on: connection, first: signed, priority: .normal)
            defer { stream.close() }
            _ = try await readReceipt(on: stream, for: signed)
        } catch {
            state.withLockedValue { _ = $0.pending.removeValue(forKey: id) }
            throw error
        }
        let limit = timeout ?? configuration.requestTimeout
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let early = state.withLockedValue { state -> SignedAgentMessage?? in
                        guard var pending = state.pending[id] else { return .some(nil) }
                        if let early = pending.early {
                            state.pending[id] = nil
                            return .some(early)
                        }
                        pending.continuation = continuation
                        pending.timer = connection.eventLoop.scheduleTask(in: limit) { [self] in
                            fail(
                                id,
                                MessageError(
                                    .timeout,
                                    "no response from \(message.recipient) to request \(id) within \(limit.nanoseconds / 1_000_000) ms"
                                ))
                        }
                        state.pending[id] = pending
                        return .none
                    }
                    switch early {
                    case .none: break
                    case .some(.some(let response)): continuation.resume(returning: response)
                    case .some(.none):
                        // Stopped, or cancelled, before the wait began.
                        continuation.resume(throwing: MessageError(.shutdown, "the request \(id) was abandoned"))
                    }
                }
            } onCancel: {
                fail(id, MessageError(.shutdown, "the request \(id) was cancelled"))
            }
        } catch let error as MessageError {
            throw error
        } catch {
            throw MessageError(.shutdown, "\(error)")
        }
    }

    /// Ends the wait of request `id` with `error`, if it still waits.
    private func fail(_ id: MessageID, _ error: MessageError) {
        let pending = state.withLockedValue { $0.pending.removeValue(forKey: id) }
        pending?.timer?.cancel()
        pending?.continuation?.resume(throwing: error)
    }

    /// Sends `parts` as one STREAM (spec §5.3) on one libp2p stream, pipelined, the last part
    /// marked as the end.
    /// - Returns: the stream id.
    @discardableResult
    public func sendStream(
        from sender: AgentName, to recipient: AgentName, parts: [AgentMessage.Content], inReplyTo: MessageID? = nil,
        streamID: MessageID = .random()
    ) async throws(MessageError) -> MessageID {
        precondition(!parts.isEmpty, "a stream has at least one part")
        var signed: [SignedAgentMessage] = []
        for (index, content) in parts.enumerated() {
            let part = AgentMessage.StreamPart(
                streamID: streamID, sequence: UInt64(index), isEnd: index == parts.count - 1, inReplyTo: inReplyTo)
            signed.append(
                try sign(
                    AgentMessage(
                        kind: .stream(part), sender: sender, recipient: recipient, timestamp: now(), content: content)
                ))
        }
        let connection = try await connect(to: recipient)
        let stream = try await openStream(on: connection, first: signed[0], priority: .low)
        defer { stream.close() }
        var decoder = MessageFrameDecoder(maximumLength: MessageReceipt.maximumLength)
        var sent = 1
        for (index, part) in signed.enumerated() {
            // Keep up to `streamPipelineDepth` parts ahead of the receipts.
            while sent < signed.count, sent - index < configuration.streamPipelineDepth {
                try await write(signed[sent], on: stream)
                sent += 1
            }
            _ = try await readReceipt(on: stream, for: part, decoder: &decoder)
        }
        return streamID
    }

    private func connect(to recipient: AgentName) async throws(MessageError) -> Connection {
        let record: SignedAgentRecord
        do {
            record = try await directory.record(for: recipient)
        } catch {
            throw MessageError(.unreachable, "cannot resolve \(recipient): \(error)")
        }
        guard record.record.name == recipient else {
            throw MessageError(.unreachable, "the record found for \(recipient) is for \(record.record.name)")
        }
        return try await connect(to: record)
    }

    private func connect(to record: SignedAgentRecord) async throws(MessageError) -> Connection {
        let recipient = record.record.name
        let peer = record.record.peerID
        do {
            return try await host.connect(to: peer, addresses: record.record.addresses, origin: .thirdParty)
        } catch {
            throw MessageError(.unreachable, "cannot connect to \(recipient) (\(peer)): \(error)")
        }
    }

    private func openStream(on connection: Connection, first: SignedAgentMessage, priority: YamuxPriority)
        async throws(MessageError) -> MuxedStream
    {
        do {
            return try await host.newStream(
                on: connection, lazyProtocol: Self.protocolID, initial: Self.frame(first.bytes), priority: priority)
        } catch {
            let failure = Self.sendingError(error, connection.remotePeer)
            guard failure.kind != .protocolNotSupported else { throw failure }
            // A peer that does not speak the protocol may reset the stream (the proposal came with
            // data behind it) before its "na" is read: ask it plainly, so the sender learns why.
            do {
                let probe = try await host.newStream(on: connection, protocols: [Self.protocolID], priority: priority)
                probe.reset()
            } catch {
                let plain = Self.sendingError(error, connection.remotePeer)
                if plain.kind == .protocolNotSupported { throw plain }
            }
            throw failure
        }
    }

    private func write(_ signed: SignedAgentMessage, on stream: MuxedStream) async throws(MessageError) {
        do {
            try await stream.write(Self.frame(signed.bytes))
        } catch {
            throw Self.sendingError(error, stream.remotePeer)
        }
    }

    private func readReceipt(on stream: MuxedStream, for signed: SignedAgentMessage) async throws(MessageError) -> Bool
    {
        var decoder = MessageFrameDecoder(maximumLength: MessageReceipt.maximumLength)
        return try await readReceipt(on: stream, for: signed, decoder: &decoder)
    }

    /// Reads the next receipt and checks it answers `signed`.
    /// - Returns: whether the receiver had accepted the message before (`replayed`).
    private func readReceipt(
        on stream: MuxedStream, for signed: SignedAgentMessage, decoder: inout MessageFrameDecoder
    ) async throws(MessageError) -> Bool {
        let peer = stream.remotePeer
        let frame: [UInt8]
        do {
            var local = decoder
            frame = try await stream.withDeadline(configuration.receiptTimeout, "receipt for \(signed.message.id)") {
                while true {
                    if let frame = try local.next() { return frame }
                    guard var chunk = try await stream.read() else {
                        throw MessageError(.protocolViolation, "\(peer) closed the stream without a receipt")
                    }
                    local.append(&chunk)
                }
            }
            decoder = local
        } catch let error as MessageError {
            throw error.kind == .protocolViolation
                ? error : MessageError(.protocolViolation, "receipt: \(error.message)")
        } catch {
            throw Self.sendingError(error, peer)
        }
        let receipt = try MessageReceipt(bytes: frame)
        if let id = receipt.id, id != signed.message.id {
            throw MessageError(
                .protocolViolation, "\(peer) answered message \(signed.message.id) with a receipt for \(id)")
        }
        guard let refusal = receipt.refusal else {
            guard receipt.id != nil else {
                throw MessageError(
                    .protocolViolation, "\(peer) accepted message \(signed.message.id) without naming it")
            }
            return false
        }
        if refusal.kind == .replayed { return true }
        throw MessageError(
            refusal.kind, "\(signed.message.recipient) refused message \(signed.message.id): \(refusal.message)")
    }

    private static func sendingError(_ error: any Error, _ peer: PeerID?) -> MessageError {
        let who = peer.map { "\($0)" } ?? "the peer"
        if let error = error as? MessageError { return error }
        if let error = error as? NetworkError {
            switch error.kind {
            case .protocolNotSupported:
                return MessageError(.protocolNotSupported, "\(who) does not speak \(protocolID): \(error.message)")
            case .timeout: return MessageError(.timeout, "\(who): \(error.message)")
            default: return MessageError(.unreachable, "\(who): \(error.message)")
            }
        }
        return MessageError(.unreachable, "\(who): \(error)")
    }

    static func frame(_ bytes: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(bytes.count + 4)
        buffer.writeUVarint(UInt64(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }

    // MARK: Receiving

    private func serve(_ stream: MuxedStream) async {
        let peer = stream.remotePeer
        var decoder = MessageFrameDecoder(maximumLength: MessageLimits.maximumMessage)
        do {
            while true {
                let frame: [UInt8]?
                do {
                    var local = decoder
                    frame = try await stream.withDeadline(configuration.idleStreamTimeout, "next message") {
                        while true {
                            if let frame = try local.next() { return frame }
                            guard var chunk = try await stream.read() else {
                                guard local.bufferedBytes == 0 else {
                                    throw MessageError(.malformed, "the stream ended inside a frame")
                                }
                                return nil
                            }
                            local.append(&chunk)
                        }
                    }
                    decoder = local
                } catch let error as MessageError {
                    // An oversized or broken frame: say why, then reset (what follows cannot be framed).
                    logger.debug("refused a frame", metadata: ["peer": "\(peer)", "error": "\(error)"])
                    if error.kind == .oversized {
                        try await stream.write(Self.frame(MessageReceipt(id: nil, refusal: error).encoded()))
                    }
                    stream.reset()
                    return
                }
                guard let frame else { break }
                let receipt = await receive(frame, from: peer)
                try await stream.write(Self.frame(receipt.encoded()))
            }
            try await stream.closeWrite()
        } catch {
            logger.debug("message stream ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
            stream.reset()
        }
    }

    /// Applies spec §5.1 to one frame and returns the receipt.
    func receive(_ frame: [UInt8], from peer: PeerID) async -> MessageReceipt {
        let signed: SignedAgentMessage
        do {
            signed = try SignedAgentMessage(bytes: frame)
        } catch {
            return MessageReceipt(id: nil, refusal: error)
        }
        let message = signed.message
        do throws(MessageError) {
            let served = Set(localNames)
            try MessageAcceptance.checkAddressAndTime(
                message, serves: { served.contains($0) }, now: now(), policy: configuration.policy)
            let key: Ed25519.PublicKey
            if let own = SignedAgentMessage.selfCertifyingKey(of: message.sender) {
                key = own
            } else {
                let record: SignedAgentRecord
                do {
                    record = try await directory.record(for: message.sender)
                } catch {
                    throw MessageError(.unknownSender, "no record of \(message.sender) could be found: \(error)")
                }
                key = try MessageAcceptance.senderKey(message.sender, record: record, now: now())
            }
            try MessageAcceptance.checkSignature(signed, key: key)
            try admit(signed, from: peer)
            return MessageReceipt(id: message.id, refusal: nil)
        } catch {
            logger.debug(
                "refused a message",
                metadata: [
                    "peer": "\(peer)", "id": "\(message.id)", "sender": "\(message.sender)", "error": "\(error)",
                ])
            return MessageReceipt(id: message.id, refusal: error)
        }
    }

    /// Rules 7–9: replay, then a waiting request, or reassembly and the handler.
    private func admit(_ signed: SignedAgentMessage, from peer: PeerID) throws(MessageError) {
        let message = signed.message
        let time = now()
        if let refusal = receiving.withLockedValue({ receiving -> MessageError? in
            do throws(MessageError) {
                try receiving.replay.admit(
                    sender: message.sender, id: message.id, timestamp: message.timestamp, now: time)
                return nil
            } catch {
                return error
            }
        }) {
            throw refusal
        }
        if let answered = message.kind.inReplyTo, message.type != .stream, takeResponse(signed, for: answered) {
            return
        }
        let refusal = receiving.withLockedValue { receiving -> MessageError? in
            do throws(MessageError) {
                guard let handler = receiving.handler else {
                    throw MessageError(.busy, "no agent is receiving messages on this node")
                }
                let ready: [SignedAgentMessage]
                if message.type == .stream {
                    receiving.reassembly.expire(now: time)
                    ready = try receiving.reassembly.receive(signed, message: message, now: time)
                } else {
                    ready = [signed]
                }
                // Parts released from the reassembly buffer were checked and acknowledged when
                // they arrived; a refusal of one of them can only be logged.
                for part in ready {
                    guard let refusal = handler(Delivery(message: part, peer: peer)) else { continue }
                    if part.message.id == message.id {
                        throw [.busy, .replayed].contains(refusal.kind)
                            ? refusal : MessageError(.refused, refusal.message)
                    }
                    logger.warning(
                        "the handler refused a held stream part",
                        metadata: [
                            "id": "\(part.message.id)", "sender": "\(part.message.sender)", "error": "\(refusal)",
                        ])
                }
                return nil
            } catch {
                // Not taken: the sender may send it again.
                receiving.replay.forget(sender: message.sender, id: message.id)
                return error
            }
        }
        if let refusal { throw refusal }
    }

    /// Hands `signed` to the request waiting for it, if any (the same recipient asked).
    private func takeResponse(_ signed: SignedAgentMessage, for request: MessageID) -> Bool {
        let waiting = state.withLockedValue { state -> (Bool, CheckedContinuation<SignedAgentMessage, any Error>?) in
            guard var pending = state.pending[request], pending.recipient == signed.message.sender else {
                return (false, nil)
            }
            if let continuation = pending.continuation {
                state.pending[request] = nil
                pending.timer?.cancel()
                return (true, continuation)
            }
            // The response beat `request()` to its wait (the receipt is still on its way back).
            guard pending.early == nil else { return (false, nil) }
            pending.early = signed
            state.pending[request] = pending
            return (true, nil)
        }
        waiting.1?.resume(returning: signed)
        return waiting.0
    }
}
