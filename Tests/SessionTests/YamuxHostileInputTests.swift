import AgentTesting
import NIOCore
import Testing

@testable import Session

@Suite("yamux sessions under hostile input")
struct YamuxHostileInputTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    /// What a session may throw at a peer's bytes (or at its silence: `.timeout`).
    static let peerErrors: Set<SessionError.Kind> = [
        .protocolViolation, .flowControlViolation, .messageTooLarge, .resourceLimit, .timeout,
    ]

    /// Small limits so that random input reaches them.
    static var tightConfiguration: YamuxConfiguration {
        var configuration = YamuxConfiguration()
        configuration.maximumStreams = 4
        configuration.maximumPendingControlFrames = 8
        configuration.closedStreamMemory = 4
        configuration.maximumQueuedBytesPerStream = 64
        configuration.maximumFramePayload = 16
        configuration.maximumReceiveWindow = 512 * 1024
        return configuration
    }

    /// Feeds `input` in random pieces to `session`, acting like a glue and an application: reads what
    /// is delivered, answers on streams, pulls frames. Returns the error, if the peer caused one, after
    /// checking the session's invariants at every step.
    static func drive(
        _ session: inout YamuxSession, _ input: [UInt8], random: inout SeededGenerator, round: Int
    ) -> SessionError? {
        var buffer = ByteBuffer()
        var offset = 0
        var now = t0
        while offset < input.count {
            let piece = min(input.count - offset, Int.random(in: 1...40, using: &random))
            buffer.writeBytes(input[offset..<(offset + piece)])
            offset += piece
            now = now + .milliseconds(Int64.random(in: 0...100, using: &random))
            do {
                var actions = try session.receive(bytes: &buffer, now: now)
                actions += try session.tick(now: now)
                for action in actions {
                    switch action {
                    case .deliver(let stream, let bytes):
                        _ = session.consumed(bytes.readableBytes, on: stream, now: now)
                        try? session.write(bytes, to: stream)
                    case .streamOpened(let stream) where Bool.random(using: &random):
                        try? session.closeWrite(stream)
                    case .remoteClosedWrite(let stream) where Bool.random(using: &random):
                        session.reset(stream)
                    default:
                        break
                    }
                }
                if Bool.random(using: &random) { _ = try? session.openStream() }
                _ = session.nextOutboundFrames(maximumBytes: Int.random(in: 0...200, using: &random))
            } catch {
                #expect(peerErrors.contains(error.kind), "round \(round): \(error)")
                #expect(session.failure == error)
                #expect(yamuxDrain(&session).last?.type == .goAway)
                return error
            }
            checkInvariants(session, round: round)
        }
        return nil
    }

    static func checkInvariants(_ session: YamuxSession, round: Int) {
        let configuration = session.configuration
        #expect(session.streams.count <= configuration.maximumStreams, "round \(round)")
        #expect(session.owedControlFrames <= configuration.maximumPendingControlFrames, "round \(round)")
        #expect(session.closedInbound.count <= configuration.closedStreamMemory, "round \(round)")
        // Stale entries of freed streams are swept once they are half the queues.
        let entries = session.control.count + session.scheduler.count
        #expect(
            entries <= 2 * (2 * configuration.maximumStreams + configuration.maximumPendingControlFrames + 2) + 65,
            "round \(round)")
        var total = 0
        for stream in session.streams.values {
            let window = stream.receiveWindow
            #expect(window.credit.size + window.unconsumed + window.pendingCredit == window.size, "round \(round)")
            #expect(window.size <= configuration.maximumReceiveWindow, "round \(round)")
            #expect(stream.sendQueue.count <= configuration.maximumQueuedBytesPerStream, "round \(round)")
            total += Int(window.size)
        }
        #expect(total == session.totalReceiveWindow, "round \(round)")
    }

    /// A random frame, mostly well-formed, on low stream ids so that frames meet the same streams.
    static func randomFrame(_ random: inout SeededGenerator) -> [UInt8] {
        let type = UInt8.random(in: 0...3, using: &random)
        let flags = UInt16.random(in: 0...15, using: &random)
        let stream = UInt32.random(in: 0...9, using: &random)
        var length: UInt32
        switch Int.random(in: 0..<4, using: &random) {
        case 0: length = UInt32.random(in: 0...40, using: &random)
        case 1: length = UInt32.random(in: 0...UInt32.max, using: &random)
        case 2: length = 256 * 1024 - UInt32.random(in: 0...2, using: &random)
        default: length = UInt32.random(in: 0...3, using: &random)
        }
        if type == 0 && length > 40 { length = UInt32.random(in: 0...40, using: &random) }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(type)
        buffer.writeInteger(flags)
        buffer.writeInteger(stream)
        buffer.writeInteger(length)
        if type == 0 { buffer.writeBytes(random.bytes(Int(length))) }
        return Array(buffer.readableBytesView)
    }

    @Test("10,000 seeded streams of random frames: actions or a typed error, never a crash")
    func randomFrames() {
        var random = SeededGenerator(seed: 0x79_616d_7578_0001)
        var failures = 0
        for round in 0..<10_000 {
            var session = YamuxSession(
                role: Bool.random(using: &random) ? .client : .server, configuration: Self.tightConfiguration)
            var input: [UInt8] = []
            for _ in 0..<Int.random(in: 1...12, using: &random) { input += Self.randomFrame(&random) }
            if Self.drive(&session, input, random: &random, round: round) != nil { failures += 1 }
        }
        // Both outcomes are exercised.
        #expect(failures > 0 && failures < 10_000)
    }

    @Test("10,000 seeded random byte strings: a typed error or a partial frame, never a crash")
    func randomBytes() {
        var random = SeededGenerator(seed: 0x79_616d_7578_0002)
        for round in 0..<10_000 {
            var session = YamuxSession(role: .server, configuration: Self.tightConfiguration)
            let input = random.bytes(Int.random(in: 1...100, using: &random))
            _ = Self.drive(&session, input, random: &random, round: round)
        }
    }

    @Test("10,000 seeded mutations of a real conversation: actions or a typed error, never a crash")
    func mutatedConversation() throws {
        // A real client's bytes: streams opened, written, half-closed, reset; window updates; pings.
        var pair = YamuxPair()
        let a = try pair.client.openStream()
        let b = try pair.client.openStream(priority: .high)
        try pair.client.write(yamuxPattern(100), to: a)
        try pair.client.write(ByteBuffer(string: "hello"), to: b)
        try pair.client.ping(now: pair.now)
        try pair.run()
        try pair.server.write(yamuxPattern(300 * 1024), to: a)
        try pair.run()
        try pair.client.closeWrite(a)
        pair.client.reset(b)
        let c = try pair.client.openStream()
        try pair.client.write(yamuxPattern(50), to: c)
        pair.client.goAway()
        try pair.run()
        let transcript = yamuxEncode(pair.sent(.client))
        #expect(transcript.count > 100)

        var random = SeededGenerator(seed: 0x79_616d_7578_0003)
        var clean = YamuxSession(role: .server)
        #expect(Self.drive(&clean, transcript, random: &random, round: -1) == nil)
        var failures = 0
        for round in 0..<10_000 {
            var input = transcript
            for _ in 0..<Int.random(in: 1...3, using: &random) { input = random.mutate(input) }
            var session = YamuxSession(role: .server)
            if Self.drive(&session, input, random: &random, round: round) != nil { failures += 1 }
        }
        #expect(failures > 0)
    }
}
