import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import Network
@testable import Session

/// `Connection`'s life cycle (detached → handshaking → established → closing → closed) driven on an
/// `EmbeddedChannel`: no sockets, no threads, no wall-clock waits. The upgrade below it is replaced
/// by firing its `.established` event by hand.
@Suite("Connection life cycle: transitions on an EmbeddedChannel")
struct ConnectionStateTests {
    /// A future's result once it completed (embedded futures complete on the test's thread, while
    /// it runs the loop; waiting on one would never return).
    final class Outcome<Value: Sendable>: Sendable {
        private let box = NIOLockedValueBox<Result<Value, Error>?>(nil)

        init(_ future: EventLoopFuture<Value>) {
            future.whenComplete { [box] result in box.withLockedValue { $0 = result } }
        }

        var result: Result<Value, Error>? { box.withLockedValue { $0 } }
        var value: Value? { try? result?.get() }
        var error: Error? {
            guard case .failure(let error)? = result else { return nil }
            return error
        }
    }

    /// A connection in an active embedded channel (handshaking), with its loop.
    final class Harness {
        let loop = EmbeddedEventLoop()
        let connection: Connection
        let channel: EmbeddedChannel
        let peer = Ed25519.PrivateKey().publicKey

        init(addHandler: Bool = true) throws {
            connection = Connection(
                id: 1, direction: .outbound,
                transport: TransportChannelInfo(path: .direct, remoteAddress: nil, remoteIP: nil), eventLoop: loop,
                host: nil, configuration: YamuxConfiguration(),
                liveness: ConnectionLiveness(streamQuietPeriod: .seconds(30), idleTimeout: nil),
                identifyTimeout: .seconds(2), logger: Logger(label: "test"))
            channel = EmbeddedChannel(loop: loop)
            if addHandler { try add() }
        }

        deinit {
            // A test that left the channel open (or never connected it) must not trip
            // EmbeddedChannel's leak check; the tests assert on closing themselves.
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }

        func add() throws {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4001)).wait()
            try channel.pipeline.syncOperations.addHandler(connection)
        }

        var peerID: PeerID { PeerID(publicKey: peer) }

        /// What the security handler fires when the upgrade completes.
        func establish() {
            channel.pipeline.fireUserInboundEventTriggered(
                SecureConnectionEvent.established(
                    .init(remotePeer: peerID, remoteIdentity: peer, muxer: "/yamux/1.0.0")))
        }

        /// The yamux frames written so far.
        func writtenFrames() throws -> [YamuxFrame] {
            // A frame's header and payload are written as two buffers: joined before parsing.
            var bytes = ByteBuffer()
            while var next = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&next) }
            var frames: [YamuxFrame] = []
            while let frame = try bytes.readYamuxFrame(maximumPayload: 1 << 20) { frames.append(frame) }
            #expect(bytes.readableBytes == 0, "a partial frame was written")
            return frames
        }

        /// Whether the channel closed (checked without waiting: an embedded future never completes
        /// while the test waits on it).
        var isChannelClosed: Bool {
            loop.run()
            return Outcome(channel.closeFuture).result != nil
        }
    }

    @Test(
        "close during the handshake fails the established future and closes the channel; a late upgrade event is ignored"
    )
    func closeDuringHandshake() throws {
        let harness = try Harness()
        let established = Outcome(harness.connection.establishedFuture)
        harness.connection.close()
        #expect(harness.connection.isClosing, "marked closing at once, before the loop runs")
        harness.loop.run()
        #expect((established.error as? NetworkError)?.kind == .connectionClosed)
        #expect(harness.isChannelClosed)
        #expect(try harness.writtenFrames().isEmpty, "nothing was sent: no session, no GoAway")

        // The upgrade finishing after the close must not bring the connection back.
        harness.establish()
        #expect(harness.connection.remotePeer == nil)
        #expect(harness.connection.activity().establishedAt == nil)
        #expect(harness.connection.memoryUsage().receiveWindows == 0)
        #expect(Outcome(harness.connection.openStream()).error != nil, "a stream opened on a closed connection")
    }

    @Test("close before the handler is in a pipeline closes the channel as soon as it is added")
    func closeWhileDetached() throws {
        let harness = try Harness(addHandler: false)
        let established = Outcome(harness.connection.establishedFuture)
        harness.connection.close()
        harness.loop.run()
        #expect(established.result == nil, "nothing to fail before the pipeline exists")
        try harness.add()
        #expect(established.error != nil)
        #expect(harness.isChannelClosed)
    }

    @Test("an error during the handshake fails the established future with that error")
    func errorDuringHandshake() throws {
        let harness = try Harness()
        let established = Outcome(harness.connection.establishedFuture)
        harness.channel.pipeline.fireErrorCaught(SessionError(.decryptionFailed, "forged message"))
        #expect((established.error as? SessionError)?.kind == .decryptionFailed)
        #expect(harness.isChannelClosed)
    }

    @Test("close while established sends GoAway (normal) after the queued frames, then closes; the timers stop")
    func closeWhileEstablished() throws {
        let harness = try Harness()
        let established = Outcome(harness.connection.establishedFuture)
        harness.establish()
        #expect(established.value === harness.connection)
        #expect(harness.connection.remotePeer == harness.peerID)
        #expect(harness.connection.activity().establishedAt != nil)
        let opened = Outcome(harness.connection.openStream()).value
        #expect(opened?.peer == harness.peerID)

        harness.connection.close()
        harness.loop.run()
        let frames = try harness.writtenFrames()
        // The first keepalive ping went at establishment, then the stream's SYN, then GoAway last.
        #expect(frames.first?.type == .ping)
        #expect(frames.contains { $0.streamID == opened?.id && $0.flags.contains(.syn) })
        #expect(frames.last?.type == .goAway)
        #expect(frames.last.map { YamuxFrame.GoAwayCode(rawValue: $0.length) } == .normal)
        #expect(harness.isChannelClosed)
        #expect(harness.connection.activity().establishedAt == nil, "closed: no longer established")

        // Nothing runs after the close: the identify deadline (2 s) and the tick (1 s) are cancelled.
        harness.loop.advanceTime(by: .seconds(10))
        #expect(try harness.writtenFrames().isEmpty)
        #expect(Outcome(harness.connection.openStream()).error != nil, "a stream opened on a closed connection")
    }

    @Test("a protocol error while established sends GoAway (protocol error) and closes")
    func errorWhileEstablished() throws {
        let harness = try Harness()
        harness.establish()
        harness.channel.pipeline.fireErrorCaught(SessionError(.decryptionFailed, "forged message"))
        let goAway = try harness.writtenFrames().last
        #expect(goAway?.type == .goAway)
        #expect(goAway.map { YamuxFrame.GoAwayCode(rawValue: $0.length) } == .protocolError)
        #expect(harness.isChannelClosed)
    }

    @Test("forceClose closes without GoAway")
    func forceCloseWhileEstablished() throws {
        let harness = try Harness()
        harness.establish()
        _ = try harness.writtenFrames()
        harness.connection.forceClose()
        harness.loop.run()
        #expect(try harness.writtenFrames().isEmpty)
        #expect(harness.isChannelClosed)
    }

    @Test("the channel going inactive twice closes the connection once")
    func channelInactiveTwice() throws {
        let harness = try Harness()
        harness.establish()
        let closes = NIOLockedValueBox(0)
        harness.connection.closeFuture.whenComplete { _ in closes.withLockedValue { $0 += 1 } }
        harness.channel.pipeline.fireChannelInactive()
        harness.channel.pipeline.fireChannelInactive()
        #expect(closes.withLockedValue { $0 } == 1)
        #expect(harness.connection.isClosing)
        #expect(harness.connection.activity().establishedAt == nil)
        // The tick and the identify deadline were cancelled with the first.
        harness.loop.advanceTime(by: .seconds(10))
        #expect(try harness.writtenFrames().allSatisfy { $0.type == .ping }, "only the first ping, from before")
    }

    @Test("the channel going inactive during the handshake fails the established future")
    func channelInactiveDuringHandshake() throws {
        let harness = try Harness()
        let established = Outcome(harness.connection.establishedFuture)
        harness.channel.pipeline.fireChannelInactive()
        #expect((established.error as? NetworkError)?.kind == .connectionClosed)
        harness.establish()
        #expect(harness.connection.remotePeer == nil, "a late upgrade event is ignored")
    }
}
