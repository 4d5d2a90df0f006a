import NIOCore
import Testing

@testable import Session

@Suite("yamux frames the peer must not send, and frames that lost a race")
struct YamuxProtocolErrorTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let x = ByteBuffer(string: "x")

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let role: YamuxSession.Role
        /// Streams we open first.
        let opens: Int
        /// Frames from the peer; only the last one is wrong.
        let frames: [YamuxFrame]
        var testDescription: String { name }
    }

    static let violations: [Case] = [
        Case(name: "SYN with our parity", role: .server, opens: 0, frames: [.windowUpdate(2, delta: 0, flags: .syn)]),
        Case(
            name: "SYN with our parity (client)", role: .client, opens: 0,
            frames: [.windowUpdate(1, delta: 0, flags: .syn)]),
        Case(name: "SYN on stream 0", role: .server, opens: 0, frames: [.windowUpdate(0, delta: 0, flags: .syn)]),
        Case(
            name: "SYN for a live stream", role: .server, opens: 0,
            frames: [.windowUpdate(1, delta: 0, flags: .syn), .data(1, x, flags: .syn)]),
        Case(
            name: "SYN reusing a closed id", role: .server, opens: 0,
            frames: [
                .windowUpdate(1, delta: 0, flags: .syn), .windowUpdate(1, delta: 0, flags: .rst),
                .windowUpdate(1, delta: 0, flags: .syn),
            ]),
        Case(
            name: "SYN and ACK together", role: .server, opens: 0,
            frames: [.windowUpdate(1, delta: 0, flags: [.syn, .ack])]),
        Case(name: "data for a stream never opened", role: .server, opens: 0, frames: [.data(5, x)]),
        Case(
            name: "window update for a stream never opened", role: .server, opens: 0,
            frames: [.windowUpdate(3, delta: 9)]),
        Case(
            name: "RST for a stream never opened", role: .server, opens: 0,
            frames: [.windowUpdate(3, delta: 0, flags: .rst)]),
        Case(
            name: "window update for our stream never opened", role: .server, opens: 1,
            frames: [.windowUpdate(4, delta: 1)]),
        Case(
            name: "data for a gap id below one the peer opened", role: .server, opens: 0,
            frames: [.windowUpdate(5, delta: 0, flags: .syn), .data(3, x)]),
        Case(name: "data on stream 0", role: .server, opens: 0, frames: [.data(0, x)]),
        Case(name: "window update on stream 0", role: .client, opens: 0, frames: [.windowUpdate(0, delta: 1)]),
        Case(
            name: "ACK for a stream the peer opened", role: .server, opens: 0,
            frames: [.windowUpdate(1, delta: 0, flags: .syn), .windowUpdate(1, delta: 0, flags: .ack)]),
        Case(
            name: "a second ACK", role: .server, opens: 1,
            frames: [.windowUpdate(2, delta: 0, flags: .ack), .data(2, x, flags: .ack)]),
        Case(
            name: "a second FIN", role: .server, opens: 0,
            frames: [
                .windowUpdate(1, delta: 0, flags: .syn), .data(1, x, flags: .fin),
                .windowUpdate(1, delta: 0, flags: .fin),
            ]),
        Case(
            name: "data after FIN", role: .client, opens: 1,
            frames: [.windowUpdate(1, delta: 0, flags: [.ack, .fin]), .data(1, x)]),
        Case(
            name: "ping on a stream", role: .server, opens: 0,
            frames: [YamuxFrame(type: .ping, flags: .syn, streamID: 1, length: 0)]),
        Case(
            name: "ping without SYN or ACK", role: .server, opens: 0,
            frames: [YamuxFrame(type: .ping, flags: [], streamID: 0, length: 0)]),
        Case(
            name: "ping with SYN and ACK", role: .server, opens: 0,
            frames: [YamuxFrame(type: .ping, flags: [.syn, .ack], streamID: 0, length: 0)]),
        Case(name: "ping answer matching no ping", role: .client, opens: 0, frames: [.ping(opaque: 77, ack: true)]),
        Case(
            name: "GoAway on a stream", role: .client, opens: 0,
            frames: [YamuxFrame(type: .goAway, flags: [], streamID: 3, length: 0)]),
    ]

    @Test("each is a protocol violation that ends the session with GoAway(protocol error)", arguments: violations)
    func violation(_ test: Case) throws {
        var session = YamuxSession(role: test.role)
        for _ in 0..<test.opens { _ = try session.openStream() }
        _ = yamuxDrain(&session)
        _ = try yamuxFeed(&session, Array(test.frames.dropLast()))
        let error = #expect(throws: SessionError.self) { try session.receive(test.frames.last!, now: Self.t0) }
        #expect(error?.kind == .protocolViolation)
        #expect(session.failure == error)
        #expect(session.liveStreamCount == 0)
        #expect(yamuxDrain(&session) == [.goAway(.protocolError)])
        #expect(yamuxDrain(&session).isEmpty)
        // Dead for good: every input reports the same error.
        #expect((#expect(throws: SessionError.self) { try session.receive(.goAway(.normal), now: Self.t0) }) == error)
        #expect((#expect(throws: SessionError.self) { try session.tick(now: Self.t0) }) == error)
        #expect((#expect(throws: SessionError.self) { try session.write(Self.x, to: 1) }) == error)
    }

    @Test("frames for the peer's stream that we reset are ignored")
    func lateFramesAfterOurReset() throws {
        var server = YamuxSession(role: .server)
        _ = try yamuxFeed(&server, [.windowUpdate(1, delta: 0, flags: .syn)])
        server.reset(1)
        let late = try yamuxFeed(
            &server,
            [
                .data(1, Self.x), .windowUpdate(1, delta: 5), .data(1, ByteBuffer(), flags: .fin),
                .windowUpdate(1, delta: 0, flags: .rst),
            ])
        #expect(late.isEmpty)
        #expect(server.failure == nil)
    }

    @Test("frames for a stream that closed with both FINs are ignored")
    func lateFramesAfterClose() throws {
        var client = YamuxSession(role: .client)
        let id = try client.openStream()
        try client.closeWrite(id)
        _ = yamuxDrain(&client)
        #expect(
            try yamuxFeed(&client, [.windowUpdate(id, delta: 0, flags: [.ack, .fin])]) == [
                .remoteClosedWrite(id), .streamClosed(id),
            ])
        #expect(try yamuxFeed(&client, [.windowUpdate(id, delta: 100), .data(id, ByteBuffer(), flags: .rst)]).isEmpty)
    }

    @Test("once the closed-id memory overflowed, frames for any id the peer reached are ignored")
    func forgottenIDs() throws {
        var configuration = YamuxConfiguration()
        configuration.closedStreamMemory = 2
        var server = YamuxSession(role: .server, configuration: configuration)
        for id: YamuxStreamID in [1, 3, 5, 7] {
            _ = try yamuxFeed(
                &server, [.windowUpdate(id, delta: 0, flags: .syn), .windowUpdate(id, delta: 0, flags: .rst)])
        }
        #expect(server.closedInbound.count == 2 && !server.closedInbound.contains(1))
        #expect(try yamuxFeed(&server, [.data(1, Self.x)]).isEmpty)
        // Above the highest id the peer opened, a frame is still an error.
        #expect(
            (#expect(throws: SessionError.self) { try yamuxFeed(&server, [.data(9, Self.x)]) })?.kind
                == .protocolViolation)
    }

    @Test("10,000 inbound SYNs: at most maximumStreams live, the rest refused with RST, memory bounded")
    func synFlood() throws {
        // The stream limit under test, not the receive-window budget (see YamuxMemoryBudgetTests).
        var configuration = YamuxConfiguration()
        configuration.sessionReceiveWindowBudget = 1024 * 256 * 1024
        var server = YamuxSession(role: .server, configuration: configuration)
        var opened = 0
        var acks = 0
        var resets = 0
        for n in 0..<10_000 {
            let id = YamuxStreamID(UInt32(2 * n + 1))
            // Half of them carry a request, as a real opener would.
            let syn: YamuxFrame = n % 2 == 0 ? .windowUpdate(id, delta: 0, flags: .syn) : .data(id, Self.x, flags: .syn)
            for action in try yamuxFeed(&server, [syn]) where action == .streamOpened(id) { opened += 1 }
            if n % 100 == 99 {
                for frame in yamuxDrain(&server) {
                    if frame.flags == .ack { acks += 1 }
                    if frame.flags == .rst { resets += 1 }
                }
                #expect(server.control.isEmpty && server.owedControlFrames == 0)
            }
        }
        #expect(opened == 1024 && acks == 1024 && resets == 10_000 - 1024)
        #expect(server.liveStreamCount == 1024)
        #expect(server.closedInbound.count == server.configuration.closedStreamMemory)
        #expect(server.totalReceiveWindow == 1024 * 256 * 1024)
        // The refused streams' late data is ignored; the live ones still work.
        #expect(try yamuxFeed(&server, [.data(YamuxStreamID(19_999), Self.x)]).isEmpty)
        #expect(try yamuxFeed(&server, [.data(1, Self.x)]) == [.deliver(1, Self.x)])
        #expect(server.failure == nil)
    }

    @Test("a peer that floods pings without reading the answers fails with resourceLimit")
    func pingFlood() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumPendingControlFrames = 100
        var server = YamuxSession(role: .server, configuration: configuration)
        for value in 0..<100 { _ = try server.receive(.ping(opaque: UInt32(value), ack: false), now: Self.t0) }
        let error = #expect(throws: SessionError.self) {
            try server.receive(.ping(opaque: 100, ack: false), now: Self.t0)
        }
        #expect(error?.kind == .resourceLimit)
        #expect(yamuxDrain(&server) == [.goAway(.protocolError)])

        // Reading the answers in time keeps the session alive.
        var reader = YamuxSession(role: .server, configuration: configuration)
        for value in 0..<1000 {
            _ = try reader.receive(.ping(opaque: UInt32(value), ack: false), now: Self.t0)
            if value % 50 == 49 { #expect(yamuxDrain(&reader).count == 50) }
        }
    }

    @Test("a peer that floods refused SYNs without reading the resets fails with resourceLimit")
    func resetFlood() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumPendingControlFrames = 10
        configuration.maximumStreams = 1
        var server = YamuxSession(role: .server, configuration: configuration)
        for n in 0..<11 {
            _ = try yamuxFeed(&server, [.windowUpdate(YamuxStreamID(UInt32(2 * n + 1)), delta: 0, flags: .syn)])
        }
        let error = #expect(throws: SessionError.self) {
            try yamuxFeed(&server, [.windowUpdate(23, delta: 0, flags: .syn)])
        }
        #expect(error?.kind == .resourceLimit)
    }
}

@Suite("yamux memory under stream churn")
struct YamuxChurnTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test("a peer that opens and resets streams while not reading leaves bounded queues behind")
    func openResetChurn() throws {
        var server = YamuxSession(role: .server)
        for n in 0..<10_000 {
            let id = YamuxStreamID(UInt32(2 * n + 1))
            _ = try server.receive(.windowUpdate(id, delta: 0, flags: .syn), now: Self.t0)
            try server.write(ByteBuffer(string: "reply"), to: id)  // scheduled, never sent
            _ = try server.receive(.windowUpdate(id, delta: 0, flags: .rst), now: Self.t0)
            #expect(server.control.count + server.scheduler.count <= 2 * 65 + 2)
        }
        #expect(server.liveStreamCount == 0)
        #expect(yamuxDrain(&server).isEmpty)
    }

    @Test("streams the peer opens and we reset cost owed RSTs: past the limit the session fails")
    func resetOnArrivalFlood() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumPendingControlFrames = 10
        var server = YamuxSession(role: .server, configuration: configuration)
        for n in 0..<11 {
            let id = YamuxStreamID(UInt32(2 * n + 1))
            _ = try server.receive(.windowUpdate(id, delta: 0, flags: .syn), now: Self.t0)
            server.reset(id)
        }
        #expect(server.failure?.kind == .resourceLimit)
        let error = #expect(throws: SessionError.self) {
            try server.receive(.windowUpdate(23, delta: 0, flags: .syn), now: Self.t0)
        }
        #expect(error?.kind == .resourceLimit)
        #expect(yamuxDrain(&server) == [.goAway(.protocolError)])
    }
}
