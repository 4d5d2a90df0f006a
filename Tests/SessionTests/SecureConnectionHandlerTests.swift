import AgentTesting
import Identity
import NIOCore
import NIOEmbedded
import Testing

@testable import Session

/// Records events and reads that reach the top of the pipeline.
final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: EmbeddedChannel runs everything on the test's thread.
    typealias InboundIn = ByteBuffer
    var established: SecureConnectionEvent.Established?
    var received = ByteBuffer()
    var errors: [Error] = []
    var readCompletes = 0

    func channelReadComplete(context: ChannelHandlerContext) {
        readCompletes += 1
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .established(let value)? = event as? SecureConnectionEvent { established = value }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }
}

@Suite("SecureConnectionHandler: multistream + Noise + muxer negotiation on EmbeddedChannel")
struct SecureConnectionHandlerTests {
    struct Pair {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        let clientRecorder = Recorder()
        let serverRecorder = Recorder()
        let clientIdentity = Ed25519.PrivateKey()
        let serverIdentity = Ed25519.PrivateKey()

        init(expected: PeerID? = nil, serverMuxers: [String] = ["/yamux/1.0.0"]) throws {
            let expectedPeer = expected ?? PeerID(publicKey: serverIdentity.publicKey)
            try client.pipeline.syncOperations.addHandlers([
                SecureConnectionHandler(
                    configuration: .init(
                        role: .initiator, identity: clientIdentity, staticKey: X25519.PrivateKey(),
                        expectedPeer: expectedPeer)),
                clientRecorder,
            ])
            try server.pipeline.syncOperations.addHandlers([
                SecureConnectionHandler(
                    configuration: .init(
                        role: .responder, identity: serverIdentity, staticKey: X25519.PrivateKey(), muxers: serverMuxers
                    )),
                serverRecorder,
            ])
        }

        func activate() throws {
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        }

        /// Moves bytes both ways until nothing is in flight.
        func shuttle() throws {
            var moved = true
            while moved {
                moved = false
                while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                    if server.isActive { try server.writeInbound(bytes) }
                    moved = true
                }
                while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                    if client.isActive { try client.writeInbound(bytes) }
                    moved = true
                }
            }
        }
    }

    @Test("both ends establish, learn each other's peer id, and exchange encrypted bytes")
    func establish() throws {
        let pair = try Pair()
        try pair.activate()
        try pair.shuttle()
        #expect(pair.clientRecorder.established?.remotePeer == PeerID(publicKey: pair.serverIdentity.publicKey))
        #expect(pair.serverRecorder.established?.remotePeer == PeerID(publicKey: pair.clientIdentity.publicKey))
        #expect(pair.clientRecorder.established?.muxer == "/yamux/1.0.0")

        // 200 KB crosses several Noise messages; one flush seals them together.
        let payload = ByteBuffer(bytes: (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        pair.client.write(payload, promise: nil)
        pair.client.flush()
        var wire = ByteBuffer()
        while var bytes = try pair.client.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&bytes) }
        #expect(wire.readableBytes == 200_000 + 4 * 18)
        #expect(wire.readableBytesView.firstRange(of: payload.readableBytesView.prefix(64)) == nil)  // not plaintext
        // Deliver it in awkward pieces: message boundaries must not matter.
        while wire.readableBytes > 0 {
            try pair.server.writeInbound(wire.readSlice(length: min(wire.readableBytes, 777))!)
        }
        #expect(pair.serverRecorder.received == payload)
        _ = try pair.client.finish()
        _ = try pair.server.finish()
    }

    @Test("dialling the wrong peer fails with both ids and closes the connection")
    func wrongPeer() throws {
        let pair = try Pair(expected: PeerID(publicKey: Ed25519.PrivateKey().publicKey))
        try pair.activate()
        try pair.shuttle()
        #expect(pair.clientRecorder.established == nil)
        let error = try #require(pair.clientRecorder.errors.first as? SessionError)
        #expect(error.kind == .peerIDMismatch)
        #expect(!pair.client.isActive)
    }

    @Test("no common muxer fails the upgrade")
    func noMuxer() throws {
        let pair = try Pair(serverMuxers: ["/mplex/6.7.0"])
        try pair.activate()
        try pair.shuttle()
        #expect(pair.clientRecorder.established == nil)
        #expect((pair.clientRecorder.errors.first as? SessionError)?.kind == .negotiationFailed)
    }

    @Test("garbage instead of multistream closes the connection with a reason")
    func garbage() throws {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandlers([
            SecureConnectionHandler(
                configuration: .init(role: .responder, identity: Ed25519.PrivateKey(), staticKey: X25519.PrivateKey())),
            recorder,
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        // 'G' (0x47) reads as a 71-byte length; the 72nd byte is not a newline.
        try channel.writeInbound(
            ByteBuffer(
                string:
                    "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            ))
        #expect(recorder.errors.count == 1)
        #expect(!channel.isActive)
    }

    @Test("a handshake that never ends is cut at the deadline")
    func timeout() throws {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandlers([
            SecureConnectionHandler(
                configuration: .init(
                    role: .responder, identity: Ed25519.PrivateKey(), staticKey: X25519.PrivateKey(),
                    handshakeTimeout: .seconds(5))),
            recorder,
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect((recorder.errors.first as? SessionError)?.kind == .timeout)
        #expect(!channel.isActive)
    }

    @Test("a tampered transport message closes the connection")
    func tamperedTransport() throws {
        let pair = try Pair()
        try pair.activate()
        try pair.shuttle()
        pair.client.writeAndFlush(ByteBuffer(string: "hello"), promise: nil)
        var wire = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
        wire.setInteger(UInt8(0x55) ^ wire.getInteger(at: 4)!, at: 4)
        _ = try? pair.server.writeInbound(wire)
        #expect((pair.serverRecorder.errors.first as? SessionError)?.kind == .decryptionFailed)
        #expect(!pair.server.isActive)
    }

    @Test("writes before the connection is established fail instead of leaking plaintext")
    func earlyWrite() throws {
        let pair = try Pair()
        try pair.activate()
        let promise = pair.client.eventLoop.makePromise(of: Void.self)
        pair.client.writeAndFlush(ByteBuffer(string: "secret"), promise: promise)
        #expect(throws: SessionError.self) { try promise.futureResult.wait() }
    }

    @Test("random bytes at every phase never crash the handler (seed 13, 2000 cases)")
    func hostile() throws {
        var generator = SeededGenerator(seed: 13)
        for round in 0..<2000 {
            let pair = try Pair()
            try pair.activate()
            // Let the exchange run to a random depth, then inject garbage.
            var steps = Int.random(in: 0...4, using: &generator)
            while steps > 0, let bytes = try pair.client.readOutbound(as: ByteBuffer.self) {
                _ = try? pair.server.writeInbound(bytes)
                while let back = try pair.server.readOutbound(as: ByteBuffer.self) {
                    _ = try? pair.client.writeInbound(back)
                }
                steps -= 1
            }
            let garbage = generator.bytes(Int.random(in: 1...200, using: &generator))
            _ = try? pair.server.writeInbound(ByteBuffer(bytes: garbage))
            _ = round
            #expect(pair.serverRecorder.errors.count <= 1)
            _ = try? pair.client.finish()
            _ = try? pair.server.finish()
        }
    }
}

/// Above the server's SecureConnectionHandler: on the first message it receives, delivers more
/// bytes into the pipeline from inside its own channelRead, as NIO does when a write made in
/// response fails and the socket is drained on the spot.
final class ReentrantReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var injected: ByteBuffer?
    var received: [[UInt8]] = []
    var errors: [Error] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received.append(Array(unwrapInboundIn(data).readableBytesView))
        if let bytes = injected {
            injected = nil
            context.pipeline.syncOperations.fireChannelRead(NIOAny(bytes))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }
}

@Suite("SecureConnectionHandler: re-entrant reads")
struct SecureConnectionReentrancyTests {
    @Test("bytes delivered while a message is being delivered are decrypted after the rest, in order")
    func reentrantRead() throws {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        let serverIdentity = Ed25519.PrivateKey()
        let reader = ReentrantReader()
        try client.pipeline.syncOperations.addHandlers([
            SecureConnectionHandler(
                configuration: .init(
                    role: .initiator, identity: Ed25519.PrivateKey(), staticKey: X25519.PrivateKey(),
                    expectedPeer: PeerID(publicKey: serverIdentity.publicKey)))
        ])
        try server.pipeline.syncOperations.addHandlers([
            SecureConnectionHandler(
                configuration: .init(role: .responder, identity: serverIdentity, staticKey: X25519.PrivateKey())),
            reader,
        ])
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        var moved = true
        while moved {
            moved = false
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                try server.writeInbound(bytes)
                moved = true
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                try client.writeInbound(bytes)
                moved = true
            }
        }
        // Three messages, each its own flush (own Noise message): 1 and 2 arrive in one read,
        // 3 arrives re-entrantly while 1 is being delivered.
        var wire: [ByteBuffer] = []
        for text in ["one", "two", "three"] {
            client.write(ByteBuffer(string: text), promise: nil)
            client.flush()
            var message = ByteBuffer()
            while var bytes = try client.readOutbound(as: ByteBuffer.self) { message.writeBuffer(&bytes) }
            wire.append(message)
        }
        reader.injected = wire[2]
        var firstRead = wire[0]
        var second = wire[1]
        firstRead.writeBuffer(&second)
        try server.writeInbound(firstRead)
        #expect(reader.errors.isEmpty, "\(reader.errors)")
        #expect(reader.received.map { String(decoding: $0, as: UTF8.self) } == ["one", "two", "three"])
        _ = try? client.finish()
        _ = try? server.finish()
    }
}
