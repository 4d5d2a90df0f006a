import NIOCore

/// multistream-select 1.0 negotiation as a pure state machine, for one connection or stream.
///
/// The dialer sends the header and its first proposal at once (pipelining, as every libp2p
/// implementation does), then one proposal per `na`. The listener sends the header first, then
/// answers each proposal with the proposal (accept) or `na`. `ls` is answered with `na`.
///
/// Bytes are fed in with `receive(_:)`; the state machine consumes only whole messages up to and
/// including the one that settles the negotiation, so bytes that the peer pipelined behind it (e.g.
/// the first Noise message) stay in the caller's buffer for the next layer.
public struct MultistreamNegotiation: Sendable {
    /// What the state machine asks its caller to do.
    public enum Action: Hashable, Sendable {
        /// Send these bytes to the peer.
        case send(ByteBuffer)
        /// Negotiation is over: this protocol was agreed. Remaining input belongs to it.
        case negotiated(String)
    }

    /// At most this many proposals are answered on one stream before the listener gives up: a peer
    /// that cycles through thousands of protocol ids is probing or wasting our time.
    public static let maximumProposals = 32

    private enum State: Sendable {
        case dialerAwaitingHeader(remaining: [String])
        case dialerAwaitingAnswer(proposed: String, remaining: [String])
        case listenerAwaitingHeader
        case listenerAwaitingProposal(answered: Int)
        case done(String)
    }

    private var state: State
    private let supported: [String]
    private var started = false

    /// A dialer proposing `proposals` in order of preference.
    public init(dialerProposing proposals: [String]) {
        precondition(!proposals.isEmpty, "a multistream dialer needs at least one proposal")
        precondition(proposals.allSatisfy(MultistreamMessage.isValidProtocolID), "invalid protocol id in \(proposals)")
        self.state = .dialerAwaitingHeader(remaining: proposals)
        self.supported = []
    }

    /// A listener that accepts any of `supported`.
    public init(listenerSupporting supported: [String]) {
        self.state = .listenerAwaitingHeader
        self.supported = supported
    }

    /// The agreed protocol, once negotiation is over.
    public var negotiatedProtocol: String? {
        if case .done(let id) = state { return id }
        return nil
    }

    /// The bytes to send as soon as the connection or stream exists.
    public mutating func start(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> [Action] {
        precondition(!started, "start() called twice")
        started = true
        var buffer = allocator.buffer(capacity: 64)
        buffer.writeMultistreamMessage(MultistreamMessage.protocolID)
        switch state {
        case .dialerAwaitingHeader(let remaining):
            buffer.writeMultistreamMessage(remaining[0])
            state = .dialerAwaitingHeader(remaining: remaining)
        case .listenerAwaitingHeader:
            break
        default:
            preconditionFailure("start() after negotiation began")
        }
        return [.send(buffer)]
    }

    /// Consumes whole messages from `buffer` and returns what to do.
    /// - Throws: `SessionError` when the peer breaks the protocol or no protocol can be agreed; the
    ///   caller then closes the connection or resets the stream.
    public mutating func receive(_ buffer: inout ByteBuffer) throws(SessionError) -> [Action] {
        precondition(started, "receive() before start()")
        var actions: [Action] = []
        while negotiatedProtocol == nil, let message = try buffer.readMultistreamMessage() {
            actions += try handle(message, allocator: ByteBufferAllocator())
        }
        return actions
    }

    private mutating func handle(_ message: String, allocator: ByteBufferAllocator) throws(SessionError) -> [Action] {
        switch state {
        case .dialerAwaitingHeader(let remaining):
            try Self.expectHeader(message)
            state = .dialerAwaitingAnswer(proposed: remaining[0], remaining: Array(remaining.dropFirst()))
            return []

        case .dialerAwaitingAnswer(let proposed, let remaining):
            if message == proposed {
                state = .done(proposed)
                return [.negotiated(proposed)]
            }
            guard message == MultistreamMessage.notAvailable else {
                throw SessionError(
                    .protocolViolation, "peer answered the proposal \(proposed) with \(message.debugDescription)")
            }
            guard let next = remaining.first else {
                throw SessionError(.negotiationFailed, "peer does not support \(proposed)")
            }
            state = .dialerAwaitingAnswer(proposed: next, remaining: Array(remaining.dropFirst()))
            var buffer = allocator.buffer(capacity: next.utf8.count + 4)
            buffer.writeMultistreamMessage(next)
            return [.send(buffer)]

        case .listenerAwaitingHeader:
            try Self.expectHeader(message)
            state = .listenerAwaitingProposal(answered: 0)
            return []

        case .listenerAwaitingProposal(let answered):
            var buffer = allocator.buffer(capacity: message.utf8.count + 4)
            if supported.contains(message) {
                buffer.writeMultistreamMessage(message)
                state = .done(message)
                return [.send(buffer), .negotiated(message)]
            }
            guard answered + 1 < Self.maximumProposals else {
                throw SessionError(
                    .negotiationFailed, "peer made \(Self.maximumProposals) proposals without one we support")
            }
            buffer.writeMultistreamMessage(MultistreamMessage.notAvailable)
            state = .listenerAwaitingProposal(answered: answered + 1)
            return [.send(buffer)]

        case .done:
            preconditionFailure("multistream message handled after negotiation")
        }
    }

    private static func expectHeader(_ message: String) throws(SessionError) {
        guard message == MultistreamMessage.protocolID else {
            throw SessionError(
                .protocolViolation,
                "expected multistream header \(MultistreamMessage.protocolID), got \(message.prefix(64).debugDescription)")
        }
    }
}
