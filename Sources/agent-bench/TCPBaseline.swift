import NIOCore
import NIOPosix
import Network

/// Plain loopback TCP through NIO, with no security and no muxer: the link a session runs over.
/// Client and server sit on separate event loop groups (one thread each), as the hosts do, and use
/// the hosts' socket options (`TCP_NODELAY`, default write watermarks and receive allocator).
enum TCPBaseline {
    /// The size of each write: what the perf protocol hands to a stream.
    static let writeSize = 64 * 1024

    /// Sends `bytes` over one connection in 64 KiB writes, writing only while the channel is
    /// writable; returns bytes/s from before the connect until the server has read the last byte.
    static func throughput(bytes: Int, client: EventLoopGroup, server: EventLoopGroup) async throws -> Double {
        let serverLoop = server.next()
        let done = serverLoop.makePromise(of: Void.self)
        let listener = try await ServerBootstrap(group: server)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DiscardHandler(expected: bytes, done: done))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        let clock = ContinuousClock()
        let start = clock.now
        let connection = try await ClientBootstrap(group: client)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BulkWriter(bytes: bytes, chunkSize: writeSize))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await done.futureResult.get()
        let seconds = (clock.now - start).seconds
        try? await connection.close()
        try? await listener.close()
        return Double(bytes) / seconds
    }

    /// `count` plain TCP connections opened and closed one after another (the client waits for each
    /// connect, then for its close); returns connections/s. What any handshake over TCP pays first.
    static func connects(count: Int, client: EventLoopGroup, server: EventLoopGroup) async throws -> Double {
        let listener = try await ServerBootstrap(group: server)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        let bootstrap = ClientBootstrap(group: client).channelOption(.socketOption(.tcp_nodelay), value: 1)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<count {
            let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
            try await channel.close()
        }
        let rate = Double(count) / (clock.now - start).seconds
        try? await listener.close()
        return rate
    }

    /// `count` round trips of a 32-byte message (ping's size) to an echo server on one connection,
    /// after 10 unmeasured ones; returns each round trip in seconds.
    static func echoRoundTrips(count: Int, client: EventLoopGroup, server: EventLoopGroup) async throws -> [Double] {
        let listener = try await ServerBootstrap(group: server)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        let clientLoop = client.next()
        let done = clientLoop.makePromise(of: [Double].self)
        let connection = try await ClientBootstrap(group: clientLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        PingPongHandler(count: count, warmUp: 10, messageLength: 32, done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let rtts = try await done.futureResult.get()
        try? await connection.close()
        try? await listener.close()
        return rtts
    }
}

/// Counts and drops what it reads; completes `done` once `expected` bytes have arrived.
private final class DiscardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let expected: Int
    private let done: EventLoopPromise<Void>
    private var received = 0

    init(expected: Int, done: EventLoopPromise<Void>) {
        self.expected = expected
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let before = received
        received += unwrapInboundIn(data).readableBytes
        if before < expected && received >= expected { done.succeed() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}

/// Writes `bytes` in chunks of one shared buffer while the channel is writable.
private final class BulkWriter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var remaining: Int
    private let chunk: ByteBuffer

    init(bytes: Int, chunkSize: Int) {
        self.remaining = bytes
        self.chunk = ByteBuffer(repeating: 0x5A, count: chunkSize)
    }

    func channelActive(context: ChannelHandlerContext) {
        write(context: context)
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { write(context: context) }
        context.fireChannelWritabilityChanged()
    }

    private func write(context: ChannelHandlerContext) {
        guard remaining > 0 else { return }
        while remaining > 0 && context.channel.isWritable {
            let size = min(remaining, chunk.readableBytes)
            context.write(wrapOutboundOut(chunk.getSlice(at: chunk.readerIndex, length: size)!), promise: nil)
            remaining -= size
        }
        context.flush()
    }
}

/// Echoes what it reads.
private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

/// Sends a message, waits for its echo, and repeats; reports each round trip.
private final class PingPongHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let count: Int
    private var warmUp: Int
    private let message: ByteBuffer
    private let done: EventLoopPromise<[Double]>
    private var pending = 0
    private var sentAt = NIODeadline.now()
    private var rtts: [Double] = []

    init(count: Int, warmUp: Int, messageLength: Int, done: EventLoopPromise<[Double]>) {
        self.count = count
        self.warmUp = warmUp
        self.message = ByteBuffer(repeating: 0x42, count: messageLength)
        self.done = done
        rtts.reserveCapacity(count)
    }

    func channelActive(context: ChannelHandlerContext) {
        send(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending -= unwrapInboundIn(data).readableBytes
        guard pending <= 0 else { return }
        let now = NIODeadline.now()
        if warmUp > 0 {
            warmUp -= 1
        } else {
            rtts.append(Double((now - sentAt).nanoseconds) / 1e9)
        }
        if rtts.count == count {
            done.succeed(rtts)
        } else {
            send(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    private func send(context: ChannelHandlerContext) {
        pending = message.readableBytes
        sentAt = .now()
        context.writeAndFlush(wrapOutboundOut(message), promise: nil)
    }
}
