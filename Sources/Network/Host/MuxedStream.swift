import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Session

/// A yamux stream before its protocol is agreed: the async face of the connection's stream state.
/// Every call hops to the connection's event loop.
struct RawStream: Sendable {
    let connection: Connection
    let id: YamuxStreamID
    /// The connection's authenticated peer (a stream exists only on an established connection).
    let peer: PeerID
    /// The QUIC stream id when the connection runs over QUIC (then `id` only names it in logs).
    var quicID: Int64? = nil

    /// What arrived since the last call, as received (`nil` at end of stream): one hop for many
    /// frames.
    func readBatch() async throws -> [ByteBuffer]? {
        try await withCheckedThrowingContinuation { continuation in
            connection.eventLoop.execute {
                if let quic = connection.quic, let quicID {
                    quic.read(quicID, continuation: continuation)
                } else {
                    connection.read(id, continuation: continuation)
                }
            }
        }
    }

    /// What arrived since the last call, in one buffer (`nil` at end of stream). For protocol
    /// negotiation, where little arrives; bulk readers use `readBatch`.
    func read() async throws -> ByteBuffer? {
        guard let batch = try await readBatch() else { return nil }
        guard batch.count > 1 else { return batch[0] }
        var joined = ByteBuffer()
        for var chunk in batch { joined.writeBuffer(&chunk) }
        return joined
    }

    func write(_ bytes: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            connection.eventLoop.execute {
                if let quic = connection.quic, let quicID {
                    quic.write(bytes, on: quicID, continuation: continuation)
                } else {
                    connection.write(bytes, on: id, continuation: continuation)
                }
            }
        }
    }

    func closeWrite() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            connection.eventLoop.execute {
                if let quic = connection.quic, let quicID {
                    quic.closeWrite(quicID, continuation: continuation)
                } else {
                    connection.closeWrite(id, continuation: continuation)
                }
            }
        }
    }

    func reset() {
        connection.eventLoop.execute {
            if let quic = connection.quic, let quicID {
                quic.reset(quicID)
            } else {
                connection.reset(id)
            }
        }
    }

    func abandon() {
        connection.eventLoop.execute {
            if let quic = connection.quic, let quicID {
                quic.abandon(quicID)
            } else {
                connection.abandon(id)
            }
        }
    }
}

/// A multiplexed stream whose protocol is agreed: what protocol handlers and clients use.
///
/// Reads return the bytes as they arrive (`nil` once the peer closed its side). Writes return when
/// the bytes are queued in the session; a writer that outpaces the peer waits there, which is how
/// backpressure reaches it (the queue per stream is bounded, and the peer's window bounds sending).
public struct MuxedStream: Sendable {
    let raw: RawStream
    /// The protocol agreed with multistream-select.
    public let protocolID: String
    /// Chunks fetched from the connection in one hop and not yet returned by `read()`.
    private let readAhead = ReadAhead()

    /// - Parameter readAhead: bytes read past the protocol negotiation, the start of the
    ///   protocol's data: `read()` returns them first. They stay with the stream value, so they
    ///   cannot be lost to a reset that comes right behind them.
    init(raw: RawStream, protocolID: String, readAhead bytes: ByteBuffer = ByteBuffer()) {
        self.raw = raw
        self.protocolID = protocolID
        readAhead.prepend(bytes)
    }

    public var remotePeer: PeerID { raw.peer }
    public var connection: Connection { raw.connection }

    /// The next bytes from the peer, or `nil` at end of stream. Each call returns the payload of
    /// one or more frames, as they arrived; a call that finds nothing fetched waits for the peer.
    public func read() async throws -> ByteBuffer? {
        if let next = readAhead.popFirst() { return next }
        guard let batch = try await raw.readBatch() else { return nil }
        readAhead.append(contentsOf: batch.dropFirst())
        return batch[0]
    }

    /// Queues `bytes`; suspends while the stream's outbound queue is full.
    public func write(_ bytes: ByteBuffer) async throws { try await raw.write(bytes) }

    /// Half-closes: sends FIN after all queued bytes.
    public func closeWrite() async throws { try await raw.closeWrite() }

    /// Aborts the stream both ways (RST).
    public func reset() { raw.reset() }

    /// Done with the stream: what the peer still sends is dropped (and credited back), our side
    /// closes after what is queued, and the state is freed once the peer closes too. A client that
    /// has its answer calls this; a handler's stream gets it when the handler returns.
    public func close() {
        raw.abandon()
    }

    /// Reads exactly `count` bytes, or throws if the stream ends first. For fixed-size fields.
    public func readExactly(_ count: Int) async throws -> ByteBuffer {
        var result = ByteBuffer()
        while result.readableBytes < count {
            guard var chunk = try await read() else {
                throw NetworkError(.protocolViolation, "stream ended after \(result.readableBytes) of \(count) bytes")
            }
            let needed = count - result.readableBytes
            if chunk.readableBytes > needed {
                var head = chunk.readSlice(length: needed)!
                result.writeBuffer(&head)
                readAhead.prepend(chunk)
            } else {
                result.writeBuffer(&chunk)
            }
        }
        return result
    }

    /// Reads one unsigned-varint-length-prefixed message of at most `maximumLength` bytes.
    public func readLengthPrefixed(maximumLength: Int) async throws -> ByteBuffer? {
        var buffer = ByteBuffer()
        while true {
            var peek = buffer
            if let length = try peek.readUVarint() {
                guard length <= UInt64(maximumLength) else {
                    throw NetworkError(
                        .protocolViolation, "message of \(length) bytes is over the \(maximumLength)-byte limit")
                }
                if peek.readableBytes >= Int(length) {
                    let message = peek.readSlice(length: Int(length))!
                    if peek.readableBytes > 0 { readAhead.prepend(peek) }
                    return message
                }
            }
            guard var chunk = try await read() else {
                if buffer.readableBytes == 0 { return nil }
                throw NetworkError(.protocolViolation, "stream ended inside a length-prefixed message")
            }
            buffer.writeBuffer(&chunk)
        }
    }

    /// Writes `message` with an unsigned-varint length prefix.
    public func writeLengthPrefixed(_ message: ByteBuffer) async throws {
        var buffer = ByteBuffer()
        buffer.writeUVarint(UInt64(message.readableBytes))
        var body = message
        buffer.writeBuffer(&body)
        try await write(buffer)
    }
}

extension RawStream {
    /// multistream-select as the listener on an inbound stream. Past `timeout` the stream is reset
    /// and the call throws `NetworkError.timeout` (as do the dialer's negotiations below).
    func negotiateInbound(supported: [String], timeout: TimeAmount) async throws -> MuxedStream {
        try await withDeadline(timeout, "protocol negotiation") {
            var negotiation = MultistreamNegotiation(listenerSupporting: supported)
            try await send(negotiation.start())
            var buffer = ByteBuffer()
            while true {
                guard var chunk = try await read() else {
                    throw NetworkError(.protocolViolation, "stream closed during protocol negotiation")
                }
                buffer.writeBuffer(&chunk)
                let actions = try negotiation.receive(&buffer)
                try await send(actions)
                if let agreed = negotiation.negotiatedProtocol {
                    return MuxedStream(raw: self, protocolID: agreed, readAhead: buffer)
                }
                guard buffer.readableBytes <= MultistreamMessage.maximumLength * 2 else {
                    throw NetworkError(.protocolViolation, "protocol negotiation overflowed its buffer")
                }
            }
        }
    }

    /// multistream-select as the dialer on an outbound stream.
    func negotiateOutbound(proposals: [String], timeout: TimeAmount) async throws -> MuxedStream {
        try await withDeadline(timeout, "negotiation of \(proposals.joined(separator: ", "))") {
            var negotiation = MultistreamNegotiation(dialerProposing: proposals)
            try await send(negotiation.start())
            var buffer = ByteBuffer()
            while true {
                guard var chunk = try await read() else {
                    throw NetworkError(.protocolNotSupported, "peer closed the stream while negotiating \(proposals)")
                }
                buffer.writeBuffer(&chunk)
                let actions: [MultistreamNegotiation.Action]
                do throws(SessionError) {
                    actions = try negotiation.receive(&buffer)
                } catch {
                    throw Self.outboundFailure(error, proposals: proposals)
                }
                try await send(actions)
                if let agreed = negotiation.negotiatedProtocol {
                    return MuxedStream(raw: self, protocolID: agreed, readAhead: buffer)
                }
            }
        }
    }

    /// multistream-select as a "lazy" dialer of one protocol (what go- and rust-libp2p do when
    /// they propose a single protocol): the header, the proposal and `initial` go out in one write,
    /// without waiting for the agreement, which is read and checked before anything the protocol
    /// answers. Saves a round trip per stream; a peer that refuses answers `na` and the stream fails.
    func negotiateOutboundLazy(
        protocolID: String, initial: ByteBuffer, timeout: TimeAmount
    ) async throws -> MuxedStream {
        try await withDeadline(timeout, "negotiation of \(protocolID)") {
            var negotiation = MultistreamNegotiation(dialerProposing: [protocolID])
            var out = ByteBuffer()
            for case .send(var bytes) in negotiation.start() { out.writeBuffer(&bytes) }
            var initial = initial
            out.writeBuffer(&initial)
            try await write(out)
            var buffer = ByteBuffer()
            while negotiation.negotiatedProtocol == nil {
                guard var chunk = try await read() else {
                    throw NetworkError(.connectionClosed, "peer closed the stream while negotiating \(protocolID)")
                }
                buffer.writeBuffer(&chunk)
                do throws(SessionError) {
                    // With a single proposal the dialer never has anything more to send.
                    _ = try negotiation.receive(&buffer)
                } catch {
                    throw Self.outboundFailure(error, proposals: [protocolID])
                }
            }
            return MuxedStream(raw: self, protocolID: protocolID, readAhead: buffer)
        }
    }

    private static func outboundFailure(_ error: SessionError, proposals: [String]) -> Error {
        guard error.kind == .negotiationFailed else { return error }
        return NetworkError(.protocolNotSupported, "peer supports none of \(proposals.joined(separator: ", "))")
    }

    private func send(_ actions: [MultistreamNegotiation.Action]) async throws {
        var out = ByteBuffer()
        for case .send(var bytes) in actions { out.writeBuffer(&bytes) }
        if out.readableBytes > 0 { try await write(out) }
    }
}

/// The chunks one hop fetched for a stream and `read()` has not returned yet. A class, so that
/// copies of a `MuxedStream` share it; locked, although one stream has one reader at a time, to
/// stay correct if a caller breaks that rule.
final class ReadAhead: Sendable {
    private let chunks = NIOLockedValueBox(CircularBuffer<ByteBuffer>())

    func popFirst() -> ByteBuffer? {
        chunks.withLockedValue { $0.popFirst() }
    }

    func append(contentsOf more: ArraySlice<ByteBuffer>) {
        guard !more.isEmpty else { return }
        chunks.withLockedValue { $0.append(contentsOf: more) }
    }

    /// Puts bytes back in front (read too far).
    func prepend(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        chunks.withLockedValue { $0.prepend(bytes) }
    }
}
