import NIOCore
import Testing

@testable import Session

@Suite("yamux outbound scheduling")
struct YamuxSchedulingTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let chunk = yamuxPattern(64 * 1024)

    /// A client session whose peer acknowledged `priorities.count` streams and granted each nearly
    /// 4 GiB of credit, so that only the scheduler decides who sends.
    static func saturatedSession(_ priorities: [YamuxPriority]) throws -> (YamuxSession, [YamuxStreamID]) {
        var session = YamuxSession(role: .client)
        var ids: [YamuxStreamID] = []
        for priority in priorities {
            let id = try session.openStream(priority: priority)
            _ = try yamuxFeed(&session, [.windowUpdate(id, delta: UInt32.max - 256 * 1024, flags: .ack)])
            ids.append(id)
        }
        _ = yamuxDrain(&session)  // the SYNs
        return (session, ids)
    }

    /// Keeps every queue full and pulls `rounds` batches of `maximumBytes`; returns payload bytes sent
    /// per stream.
    static func share(
        _ session: inout YamuxSession, _ ids: [YamuxStreamID], rounds: Int, maximumBytes: Int = 64 * 1024
    ) throws -> [YamuxStreamID: Int] {
        var sent: [YamuxStreamID: Int] = [:]
        for _ in 0..<rounds {
            for id in ids {
                while session.writableBytes(on: id) >= chunk.readableBytes { try session.write(chunk, to: id) }
            }
            let (frames, _) = session.nextOutboundFrames(maximumBytes: maximumBytes)
            #expect(frames.reduce(0) { $0 + $1.encodedSize } <= maximumBytes)
            for frame in frames {
                #expect(frame.type == .data && frame.payload.readableBytes <= 16 * 1024)
                sent[frame.streamID, default: 0] += frame.payload.readableBytes
            }
        }
        return sent
    }

    @Test(
        "two saturated streams at different levels share the link in the ratio of their weights (±5%)",
        arguments: [
            (YamuxPriority.highest, YamuxPriority.low), (.highest, .high), (.highest, .normal), (.high, .normal),
            (.high, .low), (.normal, .low),
        ])
    func weightedShare(first: YamuxPriority, second: YamuxPriority) throws {
        var (session, ids) = try Self.saturatedSession([first, second])
        let sent = try Self.share(&session, ids, rounds: 2000)
        let ratio = Double(sent[ids[0]] ?? 0) / Double(sent[ids[1]] ?? 1)
        let expected = Double(first.weight) / Double(second.weight)
        #expect(abs(ratio - expected) / expected <= 0.05, "\(first) : \(second) = \(ratio), expected \(expected)")
    }

    @Test("streams at one level share equally; the lowest level is never starved")
    func equalShareAndNoStarvation() throws {
        var (session, ids) = try Self.saturatedSession([.normal, .normal, .normal, .highest, .low])
        let sent = try Self.share(&session, ids, rounds: 2000)
        let normal = ids[0..<3].map { Double(sent[$0] ?? 0) }
        for bytes in normal { #expect(abs(bytes - normal[0]) / normal[0] <= 0.05) }
        // Levels: highest 8, normal 2 (three streams share it), low 1.
        let total = Double(sent.values.reduce(0, +))
        #expect(abs(Double(sent[ids[3]]!) / total - 8.0 / 11) <= 0.05 * 8 / 11)
        #expect(abs(Double(sent[ids[4]]!) / total - 1.0 / 11) <= 0.05 * 1 / 11)
    }

    @Test("setPriority takes effect from the stream's next frame")
    func changePriority() throws {
        var (session, ids) = try Self.saturatedSession([.normal, .normal])
        let before = try Self.share(&session, ids, rounds: 200)
        #expect(abs(Double(before[ids[0]]!) / Double(before[ids[1]]!) - 1) <= 0.05)
        try session.setPriority(.highest, for: ids[0])
        let after = try Self.share(&session, ids, rounds: 2000)
        #expect(abs(Double(after[ids[0]]!) / Double(after[ids[1]]!) - 4) <= 0.2)
        #expect(session.scheduler.count <= ids.count)
    }

    @Test("control frames go before any data")
    func controlFirst() throws {
        var (session, ids) = try Self.saturatedSession([.highest])
        try session.write(Self.chunk, to: ids[0])
        _ = try session.receive(.ping(opaque: 5, ack: false), now: Self.t0)
        let second = try session.openStream()
        let (frames, _) = session.nextOutboundFrames(maximumBytes: 64 * 1024)
        #expect(frames.prefix(2) == [.ping(opaque: 5, ack: true), .windowUpdate(second, delta: 0, flags: .syn)])
        #expect(frames.dropFirst(2).allSatisfy { $0.type == .data })
    }

    @Test("the byte budget cuts data frames and holds back control frames that do not fit")
    func budget() throws {
        var (session, ids) = try Self.saturatedSession([.normal])
        try session.write(Self.chunk, to: ids[0])
        #expect(session.nextOutboundFrames(maximumBytes: 12).frames.isEmpty)
        let (one, _) = session.nextOutboundFrames(maximumBytes: 13)
        #expect(one == [.data(ids[0], Self.chunk.getSlice(at: 0, length: 1)!)])
        _ = try session.receive(.ping(opaque: 1, ack: false), now: Self.t0)
        _ = try session.receive(.ping(opaque: 2, ack: false), now: Self.t0)
        // Control waits in order; data waits until no control frame does.
        #expect(session.nextOutboundFrames(maximumBytes: 20).frames == [.ping(opaque: 1, ack: true)])
        #expect(session.nextOutboundFrames(maximumBytes: 30).frames.first == .ping(opaque: 2, ack: true))
    }

    @Test("a stream never sends beyond its send window")
    func withinWindow() throws {
        var session = YamuxSession(role: .client)
        let id = try session.openStream()
        try session.write(yamuxPattern(300 * 1024), to: id)
        let frames = yamuxDrain(&session)
        #expect(frames.reduce(0) { $0 + $1.payload.readableBytes } == 256 * 1024)
        _ = try yamuxFeed(&session, [.windowUpdate(id, delta: 100)])
        #expect(yamuxDrain(&session) == [.data(id, yamuxPattern(300 * 1024).getSlice(at: 256 * 1024, length: 100)!)])
    }
}
