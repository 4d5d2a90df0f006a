import NIOCore
import Testing

@testable import Session

@Suite("yamux sessions back to back")
struct YamuxSessionTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let hello = ByteBuffer(string: "hello")

    @Test("a client opens a stream, the server accepts with WINDOW_UPDATE|ACK, data flows both ways")
    func openAcceptAndData() throws {
        var pair = YamuxPair()
        let id = try pair.client.openStream()
        #expect(id == 1)
        try pair.client.write(ByteBuffer(string: "ping?"), to: id)
        try pair.run()
        #expect(pair.sent(.client) == [.windowUpdate(1, delta: 0, flags: .syn), .data(1, ByteBuffer(string: "ping?"))])
        #expect(pair.events(.server) == [.streamOpened(1), .deliver(1, ByteBuffer(string: "ping?"))])
        // The server's application read the 5 bytes before the ACK left: the ACK gives them back.
        #expect(pair.sent(.server) == [.windowUpdate(1, delta: 5, flags: .ack)])
        #expect(pair.client.unacknowledgedOutbound == 0)

        try pair.server.write(ByteBuffer(string: "pong!"), to: 1)
        try pair.run()
        #expect(pair.received(.client, on: 1) == Array("pong!".utf8))

        // The server opens even ids.
        let back = try pair.server.openStream()
        #expect(back == 2)
        try pair.server.write(Self.hello, to: back)
        try pair.run()
        #expect(pair.events(.client).suffix(2) == [.streamOpened(2), .deliver(2, Self.hello)])
        #expect(try pair.client.openStream() == 3)
        #expect(pair.client.liveStreamCount == 3)
    }

    @Test("half-close: FIN rides on the last data frame; both FINs free the stream on both sides")
    func halfClose() throws {
        var pair = YamuxPair()
        let id = try pair.client.openStream()
        try pair.client.write(ByteBuffer(string: "request"), to: id)
        try pair.client.closeWrite(id)
        try pair.client.closeWrite(id)  // a second close does nothing
        try pair.run()
        #expect(
            pair.sent(.client) == [
                .windowUpdate(1, delta: 0, flags: .syn), .data(1, ByteBuffer(string: "request"), flags: .fin),
            ])
        #expect(
            pair.events(.server) == [
                .streamOpened(1), .deliver(1, ByteBuffer(string: "request")), .remoteClosedWrite(1),
            ])
        let error = #expect(throws: SessionError.self) { try pair.client.write(Self.hello, to: id) }
        #expect(error?.kind == .streamClosed)
        #expect(pair.client.writableBytes(on: id) == 0)

        // The server still writes, then closes too.
        try pair.server.write(ByteBuffer(string: "response"), to: id)
        try pair.server.closeWrite(id)
        try pair.run()
        #expect(pair.sent(.server).last == .data(1, ByteBuffer(string: "response"), flags: .fin))
        #expect(
            pair.events(.client) == [
                .deliver(1, ByteBuffer(string: "response")), .remoteClosedWrite(1), .streamClosed(1),
            ])
        #expect(pair.events(.server).last == .streamClosed(1))
        #expect(pair.client.liveStreamCount == 0 && pair.server.liveStreamCount == 0)
        #expect(pair.client.totalReceiveWindow == 0 && pair.server.totalReceiveWindow == 0)
    }

    @Test("a FIN with nothing queued is an empty data frame")
    func bareFIN() throws {
        var pair = YamuxPair()
        let id = try pair.client.openStream()
        try pair.run()
        try pair.server.closeWrite(id)
        try pair.run()
        #expect(pair.sent(.server).last == .data(1, ByteBuffer(), flags: .fin))
        #expect(pair.events(.client) == [.remoteClosedWrite(1)])
    }

    @Test("reset: queued bytes are dropped, RST goes out, the peer's late frames are ignored")
    func reset() throws {
        var pair = YamuxPair()
        let id = try pair.client.openStream()
        try pair.run()
        try pair.client.write(yamuxPattern(1000), to: id)
        pair.client.reset(id)
        #expect(pair.client.liveStreamCount == 0)
        // The server wrote before it heard of the reset: its data arrives for a gone stream.
        try pair.server.write(Self.hello, to: id)
        try pair.flush(.server)
        #expect(pair.events(.client).isEmpty)
        try pair.flush(.client)
        #expect(pair.sent(.client).last == .windowUpdate(1, delta: 0, flags: .rst))
        #expect(pair.events(.server) == [.streamOpened(1), .streamReset(1)])
        #expect(!pair.sent(.client).contains { $0.type == .data })
        // Writing to it now is an error on both sides; resetting again does nothing.
        #expect(
            (#expect(throws: SessionError.self) { try pair.server.write(Self.hello, to: id) })?.kind == .streamClosed)
        #expect((#expect(throws: SessionError.self) { try pair.client.closeWrite(id) })?.kind == .streamClosed)
        pair.client.reset(id)
        #expect(!pair.client.hasOutboundFrames)
    }

    @Test("the server resets an inbound stream; the client's frames in flight are ignored")
    func serverResets() throws {
        var pair = YamuxPair()
        let id = try pair.client.openStream()
        try pair.run()
        pair.server.reset(id)
        try pair.client.write(Self.hello, to: id)
        try pair.client.closeWrite(id)
        try pair.flush(.client)  // data and FIN reach the server after its reset
        try pair.flush(.server)
        #expect(pair.events(.client) == [.streamReset(1)])
        #expect(pair.events(.server) == [.streamOpened(1)])
        #expect(pair.server.failure == nil && pair.client.failure == nil)
    }

    @Test("a stream reset before its SYN went out sends nothing at all")
    func resetBeforeSYN() throws {
        var session = YamuxSession(role: .client)
        let id = try session.openStream()
        try session.write(Self.hello, to: id)
        session.reset(id)
        #expect(yamuxDrain(&session).isEmpty)
        #expect(session.unacknowledgedOutbound == 0)
    }

    @Test("RST with data: the bytes are delivered, then the reset")
    func resetWithData() throws {
        var server = YamuxSession(role: .server)
        let events = try yamuxFeed(
            &server, [.windowUpdate(1, delta: 0, flags: .syn), .data(1, Self.hello, flags: .rst)])
        #expect(events == [.streamOpened(1), .deliver(1, Self.hello), .streamReset(1)])
        #expect(server.liveStreamCount == 0)
    }

    @Test("GoAway: no new streams either way, open ones go on, a SYN already in flight is refused")
    func goAway() throws {
        var pair = YamuxPair()
        let first = try pair.client.openStream()
        try pair.run()
        pair.server.goAway()
        pair.server.goAway()  // once only
        let late = try pair.client.openStream()  // before the GoAway arrives
        try pair.flush(.server)
        #expect(pair.events(.client) == [.goAwayReceived(.normal)])
        #expect(pair.sent(.server).filter { $0.type == .goAway } == [.goAway(.normal)])
        #expect((#expect(throws: SessionError.self) { try pair.client.openStream() })?.kind == .goingAway)
        #expect((#expect(throws: SessionError.self) { try pair.server.openStream() })?.kind == .goingAway)
        #expect(pair.client.isGoingAway && pair.server.isGoingAway)

        try pair.run()
        #expect(pair.sent(.server).last == .windowUpdate(late, delta: 0, flags: .rst))
        #expect(pair.events(.client).last == .streamReset(late))
        #expect(!pair.events(.server).contains(.streamOpened(late)))

        try pair.client.write(Self.hello, to: first)
        try pair.server.write(Self.hello, to: first)
        try pair.run()
        #expect(pair.received(.server, on: first) == Array("hello".utf8))
        #expect(pair.received(.client, on: first) == Array("hello".utf8))
    }

    @Test("GoAway codes other than the spec's three are passed through")
    func goAwayCodes() throws {
        var client = YamuxSession(role: .client)
        let events = try yamuxFeed(&client, [YamuxFrame(type: .goAway, flags: [], streamID: .session, length: 0x64)])
        #expect(events == [.goAwayReceived(YamuxFrame.GoAwayCode(rawValue: 0x64))])
    }

    @Test("ping: the answer echoes the value and gives the RTT; the RTT is smoothed")
    func pingRTT() throws {
        var pair = YamuxPair()
        try pair.measureRTT(from: .client, rtt: .milliseconds(25))
        #expect(pair.sent(.client) == [.ping(opaque: 1, ack: false)])
        #expect(pair.sent(.server) == [.ping(opaque: 1, ack: true)])
        #expect(pair.events(.client) == [.pingResult(rtt: .milliseconds(25))])
        #expect(pair.client.smoothedRTT == .milliseconds(25))
        try pair.measureRTT(from: .client, rtt: .milliseconds(5))
        #expect(pair.client.smoothedRTT == .microseconds(22_500))
        #expect(pair.server.smoothedRTT == nil)
    }

    @Test("a ping with any value is echoed with ACK")
    func pingEcho() throws {
        var server = YamuxSession(role: .server)
        for value: UInt32 in [0, 1, 0xdead_beef, .max] {
            #expect(try server.receive(.ping(opaque: value, ack: false), now: Self.t0) == [.outboundReady])
            #expect(yamuxDrain(&server) == [.ping(opaque: value, ack: true)])
        }
    }

    @Test("several pings may be outstanding; each answer matches its own")
    func severalPings() throws {
        var client = YamuxSession(role: .client)
        try client.ping(now: Self.t0)
        try client.ping(now: Self.t0 + .milliseconds(1))
        #expect(yamuxDrain(&client) == [.ping(opaque: 1, ack: false), .ping(opaque: 2, ack: false)])
        let now = Self.t0 + .milliseconds(10)
        #expect(try yamuxFeed(&client, [.ping(opaque: 2, ack: true)], now: now) == [.pingResult(rtt: .milliseconds(9))])
        #expect(
            try yamuxFeed(&client, [.ping(opaque: 1, ack: true)], now: now) == [.pingResult(rtt: .milliseconds(10))])
        for _ in 0..<16 { try client.ping(now: now) }
        #expect((#expect(throws: SessionError.self) { try client.ping(now: now) })?.kind == .resourceLimit)
    }

    @Test("keepalive pings go out at the first tick and every interval; an unanswered one times out")
    func keepalive() throws {
        var session = YamuxSession(role: .client)
        let t0 = Self.t0
        #expect(session.nextTimerDeadline == .uptimeNanoseconds(0))
        #expect(try session.tick(now: t0) == [.outboundReady])
        #expect(yamuxDrain(&session) == [.ping(opaque: 1, ack: false)])
        #expect(session.nextTimerDeadline == t0 + .seconds(10))
        #expect(try session.tick(now: t0 + .seconds(5)) == [])
        _ = try session.receive(.ping(opaque: 1, ack: true), now: t0 + .milliseconds(3))
        #expect(session.nextTimerDeadline == t0 + .seconds(30))
        #expect(try session.tick(now: t0 + .seconds(29)) == [])
        #expect(try session.tick(now: t0 + .seconds(30)) == [.outboundReady])
        #expect(yamuxDrain(&session) == [.ping(opaque: 2, ack: false)])
        #expect(try session.tick(now: t0 + .seconds(39)) == [])

        let error = #expect(throws: SessionError.self) { try session.tick(now: t0 + .seconds(40)) }
        #expect(error?.kind == .timeout)
        #expect(session.failure == error)
        #expect(session.nextTimerDeadline == nil)
        #expect(yamuxDrain(&session) == [.goAway(.internalError)])
        #expect((#expect(throws: SessionError.self) { try session.openStream() }) == error)
    }

    @Test("keepalive can be turned off")
    func noKeepalive() throws {
        var configuration = YamuxConfiguration()
        configuration.keepaliveInterval = nil
        var session = YamuxSession(role: .server, configuration: configuration)
        #expect(session.nextTimerDeadline == nil)
        #expect(try session.tick(now: Self.t0) == [])
        #expect(!session.hasOutboundFrames)
    }

    @Test("py-libp2p opens a stream and writes 5 bytes: the exact frames our server sends")
    func pyLibp2pOpensAndWrites() throws {
        var server = YamuxSession(role: .server)
        // py-libp2p 0.8.1 open_stream(): WINDOW_UPDATE|SYN, delta 0, stream 1 (py dials: client, odd
        // ids). write(b"hello"): one DATA frame without flags.
        var inbound = ByteBuffer(
            bytes: yamuxBytes("00 01 00 01 00 00 00 01 00 00 00 00  00 00 00 00 00 00 00 01 00 00 00 05 68 65 6c 6c 6f")
        )
        #expect(
            try server.receive(bytes: &inbound, now: Self.t0) == [
                .streamOpened(1), .deliver(1, Self.hello), .outboundReady,
            ])
        // At once: WINDOW_UPDATE|ACK on stream 1 with no extra credit (we keep the spec's 256 KiB).
        #expect(yamuxEncode(yamuxDrain(&server)) == yamuxBytes("00 01 00 02 00 00 00 01 00 00 00 00"))
        // Reading 5 bytes costs no window update (we give credit back by half windows). Had the
        // application read them before the ACK left, the ACK would have carried the 5 bytes.
        #expect(server.consumed(5, on: 1, now: Self.t0) == [])
        #expect(yamuxDrain(&server).isEmpty)
        // Echo and half-close: one DATA frame with FIN and the 5 bytes (py reads FIN on DATA frames).
        try server.write(Self.hello, to: 1)
        try server.closeWrite(1)
        #expect(yamuxEncode(yamuxDrain(&server)) == yamuxBytes("00 00 00 04 00 00 00 01 00 00 00 05 68 65 6c 6c 6f"))
        // py reads (WINDOW_UPDATE of 5, as after every read) and closes (WINDOW_UPDATE|FIN).
        var closing = ByteBuffer(
            bytes: yamuxBytes("00 01 00 00 00 00 00 01 00 00 00 05  00 01 00 04 00 00 00 01 00 00 00 00"))
        #expect(try server.receive(bytes: &closing, now: Self.t0) == [.remoteClosedWrite(1), .streamClosed(1)])
        #expect(server.liveStreamCount == 0)
        // py's keepalive ping (id 1, 0.5 s after connecting) is echoed.
        var ping = ByteBuffer(bytes: yamuxBytes("00 02 00 01 00 00 00 00 00 00 00 01"))
        _ = try server.receive(bytes: &ping, now: Self.t0)
        #expect(yamuxEncode(yamuxDrain(&server)) == yamuxBytes("00 02 00 02 00 00 00 00 00 00 00 01"))
    }

    @Test("a larger initial window is announced on the SYN and the ACK")
    func largerInitialWindow() throws {
        var configuration = YamuxConfiguration()
        configuration.initialReceiveWindow = 1024 * 1024
        var pair = YamuxPair(client: configuration, server: configuration)
        let id = try pair.client.openStream()
        try pair.run()
        #expect(pair.sent(.client) == [.windowUpdate(1, delta: 768 * 1024, flags: .syn)])
        #expect(pair.sent(.server) == [.windowUpdate(1, delta: 768 * 1024, flags: .ack)])
        #expect(pair.client.sendWindow(of: id) == UInt32(1024 * 1024))
        #expect(pair.server.sendWindow(of: id) == UInt32(1024 * 1024))
    }

    @Test("receive(bytes:) keeps a partial frame for the next call")
    func partialBytes() throws {
        var server = YamuxSession(role: .server)
        let bytes = yamuxEncode([.windowUpdate(1, delta: 0, flags: .syn), .data(1, Self.hello)])
        var buffer = ByteBuffer(bytes: bytes.prefix(20))
        #expect(try server.receive(bytes: &buffer, now: Self.t0) == [.streamOpened(1), .outboundReady])
        #expect(buffer.readableBytes == 8)
        buffer.writeBytes(bytes.dropFirst(20))
        #expect(try server.receive(bytes: &buffer, now: Self.t0) == [.deliver(1, Self.hello)])
    }

    @Test("a parse error fails the session like any peer error")
    func parseErrorFails() throws {
        var server = YamuxSession(role: .server)
        var buffer = ByteBuffer(bytes: [1, 0, 0, 0])
        let error = #expect(throws: SessionError.self) { try server.receive(bytes: &buffer, now: Self.t0) }
        #expect(error?.kind == .protocolViolation)
        #expect(server.failure == error)
        #expect(yamuxDrain(&server) == [.goAway(.protocolError)])
    }

    @Test("backpressure: a write over the queue cap is refused; .writable follows when half drained")
    func backpressure() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumQueuedBytesPerStream = 64 * 1024
        var pair = YamuxPair(client: configuration)
        let id = try pair.client.openStream()
        try pair.client.write(yamuxPattern(40 * 1024), to: id)
        #expect(pair.client.writableBytes(on: id) == 24 * 1024)
        let error = #expect(throws: SessionError.self) { try pair.client.write(yamuxPattern(30 * 1024), to: id) }
        #expect(error?.kind == .resourceLimit)
        #expect(pair.client.queuedBytes(on: id) == 40 * 1024)
        try pair.client.write(yamuxPattern(24 * 1024), to: id)
        try pair.run()
        #expect(pair.events(.client) == [.writable(id)])
        #expect(pair.receivedCount(.server, on: id) == 64 * 1024)
        // A write of up to half the cap goes through now.
        try pair.client.write(yamuxPattern(32 * 1024), to: id)
        try pair.run()
        // That write left the queue at half the cap, not above: no new .writable owed.
        #expect(pair.events(.client) == [.writable(id)])
    }

    @Test("the ACK backlog is bounded at the spec's 256 streams")
    func ackBacklog() throws {
        // The backlog under test, not the receive-window budget (see YamuxMemoryBudgetTests).
        var configuration = YamuxConfiguration()
        configuration.sessionReceiveWindowBudget = 512 * 256 * 1024
        var client = YamuxSession(role: .client, configuration: configuration)
        var ids: [YamuxStreamID] = []
        for _ in 0..<256 { ids.append(try client.openStream()) }
        let error = #expect(throws: SessionError.self) { try client.openStream() }
        #expect(error?.kind == .resourceLimit)
        _ = yamuxDrain(&client)
        _ = try yamuxFeed(&client, [.windowUpdate(ids[0], delta: 0, flags: .ack)])
        #expect(try client.openStream() == 513)
    }

    @Test("opening beyond maximumStreams throws; freeing one makes room")
    func outboundStreamLimit() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumStreams = 3
        var client = YamuxSession(role: .client, configuration: configuration)
        for _ in 0..<3 { _ = try client.openStream() }
        #expect((#expect(throws: SessionError.self) { try client.openStream() })?.kind == .resourceLimit)
        client.reset(1)
        #expect(try client.openStream() == 7)
    }

    @Test("stream ids run out at 2^32-1 and are never reused")
    func idsExhausted() throws {
        var client = YamuxSession(role: .client)
        client.nextOutboundID = UInt64(UInt32.max)
        #expect(try client.openStream() == YamuxStreamID(.max))
        #expect((#expect(throws: SessionError.self) { try client.openStream() })?.kind == .resourceLimit)
    }

    @Test("operations on streams that are not live")
    func notLive() throws {
        var session = YamuxSession(role: .client)
        #expect((#expect(throws: SessionError.self) { try session.write(Self.hello, to: 9) })?.kind == .streamClosed)
        #expect((#expect(throws: SessionError.self) { try session.setPriority(.low, for: 9) })?.kind == .streamClosed)
        #expect(session.consumed(10, on: 9, now: Self.t0) == [])
        #expect(
            session.sendWindow(of: 9) == nil && session.receiveWindow(of: 9) == nil && session.queuedBytes(on: 9) == nil
        )
        #expect(session.writableBytes(on: 9) == 0)
        let id = try session.openStream()
        try session.write(ByteBuffer(), to: id)  // an empty write queues nothing
        #expect(session.queuedBytes(on: id) == 0)
    }
}
