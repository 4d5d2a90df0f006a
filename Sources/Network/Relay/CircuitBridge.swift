#if canImport(Glibc)
    import Glibc
#endif
import NIOCore
import NIOPosix

/// Runs a relayed connection's upgrade over the relay stream that carries it. The host's upgrade
/// pipeline (multistream-select, Noise, yamux: `SecureConnectionHandler` + `Connection`) runs on a
/// NIO channel; a circuit is a stream of another connection. A connected UNIX socket pair joins the
/// two: one end is the channel the host upgrades exactly as a TCP channel, the other end's bytes
/// are copied to and from the relay stream, with backpressure both ways (a write to the stream
/// waits for yamux credit; a write to the socket waits for the socket to drain).
///
/// Ends: the stream's end (FIN) half-closes the socket, so the upgraded connection sees its peer
/// go; the upgraded connection's close closes the socket, so the stream gets our FIN, and its
/// reset after `lingerAfterClose` if the far side never closes. An error on either side resets the
/// stream and closes the socket.
enum CircuitBridge {
    /// How long the stream may stay open after our side closed, for the far side's last bytes.
    static let lingerAfterClose: TimeAmount = .seconds(5)

    /// Creates the socket pair, runs `upgrade` on the inner end's channel, calls `connected`, and
    /// copies bytes until both sides ended. Returns when the circuit is over.
    static func run(
        stream: MuxedStream, on eventLoop: EventLoop, info: TransportChannelInfo, upgrade: @escaping TransportUpgrade,
        connected: @Sendable () -> Void
    ) async throws {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            let reason = String(cString: strerror(errno))
            stream.reset()
            throw NetworkError(.resourceLimit, "cannot make the socket pair of a relayed connection: \(reason)")
        }
        // From here NIO owns each descriptor once its channel exists (and closes it with the channel).
        let outer: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            outer = try await ClientBootstrap(group: eventLoop)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .withConnectedSocket(fds[1]) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            close(fds[0])
            stream.reset()
            throw NetworkError(.connectionFailed, "cannot start a relayed connection: \(error)")
        }
        do {
            _ = try await ClientBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try upgrade(channel, info) }
                }
                .withConnectedSocket(fds[0]).get()
        } catch {
            stream.reset()
            try? await outer.channel.close()
            throw NetworkError(.connectionFailed, "cannot start a relayed connection: \(error)")
        }
        connected()
        do {
            try await outer.executeThenClose { inbound, outbound in
                try await splice(stream: stream, inbound: inbound, outbound: outbound)
            }
            stream.close()
        } catch {
            stream.reset()
        }
    }

    private enum End {
        case socket
        case stream
        case lingered
    }

    private static func splice(
        stream: MuxedStream, inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws {
        try await withThrowingTaskGroup(of: End.self) { group in
            group.addTask {
                for try await chunk in inbound { try await stream.write(chunk) }
                try await stream.closeWrite()
                return .socket
            }
            group.addTask {
                while let chunk = try await stream.read() { try await outbound.write(chunk) }
                outbound.finish()
                return .stream
            }
            var ended: Set<End> = []
            while let end = try await group.next() {
                ended.insert(end)
                if ended.contains(.socket) && ended.contains(.stream) { break }
                if end == .socket {
                    // Our connection is gone: wait a little for the far side's FIN, then reset
                    // (a read on the stream does not end by itself if the far side never closes).
                    group.addTask {
                        try await Task.sleep(nanoseconds: UInt64(lingerAfterClose.nanoseconds))
                        return .lingered
                    }
                }
                if end == .lingered {
                    stream.reset()
                }
            }
            group.cancelAll()
        }
    }
}
