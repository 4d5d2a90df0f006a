import Resolution
import Testing

@testable import Application

/// STREAM parts back in order with bounded buffering (spec/messages.md §5.3), on a virtual clock.
@Suite("stream reassembly")
struct StreamReassemblyTests {
    static let streamID = MessageID(high: 7, low: 7)

    static func part(_ sequence: UInt64, end: Bool = false, sender: String = "alice", stream: MessageID = streamID)
        -> AgentMessage
    {
        AgentMessage(
            kind: .stream(.init(streamID: stream, sequence: sequence, isEnd: end)), sender: try! AgentName(sender),
            recipient: try! AgentName("bob"), timestamp: 1, content: .text("\(sequence)"))
    }

    static func sequences(_ parts: [AgentMessage]) -> [UInt64] {
        parts.map { if case .stream(let part) = $0.kind { part.sequence } else { .max } }
    }

    @Test("parts out of order are held and handed on in order; the end part closes the stream")
    func reorder() throws {
        var reassembly = StreamReassembly<AgentMessage>()
        #expect(Self.sequences(try reassembly.receive(Self.part(2), message: Self.part(2), now: 0)) == [])
        #expect(Self.sequences(try reassembly.receive(Self.part(1), message: Self.part(1), now: 0)) == [])
        #expect(Self.sequences(try reassembly.receive(Self.part(0), message: Self.part(0), now: 0)) == [0, 1, 2])
        #expect(
            Self.sequences(try reassembly.receive(Self.part(4, end: true), message: Self.part(4, end: true), now: 0))
                == [])
        #expect(Self.sequences(try reassembly.receive(Self.part(3), message: Self.part(3), now: 0)) == [3, 4])
        #expect(reassembly.openStreams == 0)
    }

    static func kind(_ body: () throws -> Void) -> MessageError.Kind? {
        do {
            try body()
            return nil
        } catch {
            return (error as? MessageError)?.kind
        }
    }

    @Test("duplicates, parts past the end, and parts beyond the window are bad_stream; nothing changes")
    func refusals() throws {
        var reassembly = StreamReassembly<AgentMessage>()
        _ = try reassembly.receive(Self.part(0), message: Self.part(0), now: 0)
        #expect(Self.kind { _ = try reassembly.receive(Self.part(0), message: Self.part(0), now: 0) } == .badStream)
        _ = try reassembly.receive(Self.part(3), message: Self.part(3), now: 0)
        #expect(Self.kind { _ = try reassembly.receive(Self.part(3), message: Self.part(3), now: 0) } == .badStream)
        #expect(
            Self.kind { _ = try reassembly.receive(Self.part(2, end: true), message: Self.part(2, end: true), now: 0) }
                == .badStream,
            "ends before a held part")
        #expect(
            Self.kind { _ = try reassembly.receive(Self.part(17), message: Self.part(17), now: 0) } == .badStream,
            "16 ahead of next expected 1"
        )
        _ = try reassembly.receive(Self.part(5, end: true), message: Self.part(5, end: true), now: 0)
        #expect(Self.kind { _ = try reassembly.receive(Self.part(6), message: Self.part(6), now: 0) } == .badStream)
        #expect(Self.sequences(try reassembly.receive(Self.part(1), message: Self.part(1), now: 0)) == [1])
    }

    @Test("held parts, streams per sender and streams per node are bounded: busy")
    func bounds() throws {
        var configuration = StreamReassemblyConfiguration()
        configuration.window = 100
        configuration.maximumHeldPerStream = 3
        configuration.maximumStreamsPerSender = 2
        configuration.maximumStreams = 3
        var reassembly = StreamReassembly<AgentMessage>(configuration: configuration)
        for sequence: UInt64 in [1, 2, 3] {
            _ = try reassembly.receive(Self.part(sequence), message: Self.part(sequence), now: 0)
        }
        #expect(Self.kind { _ = try reassembly.receive(Self.part(4), message: Self.part(4), now: 0) } == .busy)
        #expect(
            Self.sequences(try reassembly.receive(Self.part(0), message: Self.part(0), now: 0)) == [0, 1, 2, 3],
            "the expected part is never refused")

        _ = try reassembly.receive(Self.part(0, stream: MessageID(high: 1, low: 1)), now: 0)
        #expect(
            Self.kind { _ = try reassembly.receive(Self.part(0, stream: MessageID(high: 1, low: 2)), now: 0) } == .busy)
        _ = try reassembly.receive(Self.part(0, sender: "carol"), message: Self.part(0, sender: "carol"), now: 0)
        #expect(
            Self.kind {
                _ = try reassembly.receive(Self.part(0, sender: "dave"), message: Self.part(0, sender: "dave"), now: 0)
            } == .busy)
    }

    @Test("an idle stream is dropped after the timeout, with what it held")
    func idle() throws {
        var reassembly = StreamReassembly<AgentMessage>()
        _ = try reassembly.receive(Self.part(1), message: Self.part(1), now: 1_000)
        #expect(reassembly.expire(now: 61_000) == 0)
        #expect(reassembly.expire(now: 61_001) == 1)
        #expect(reassembly.openStreams == 0)
    }
}

extension StreamReassembly where Part == AgentMessage {
    /// Holds the bare message itself.
    mutating func receive(_ message: AgentMessage, now: UInt64) throws(MessageError) -> [AgentMessage] {
        try receive(message, message: message, now: now)
    }
}
