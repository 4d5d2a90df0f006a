import Application
import NIOConcurrencyHelpers
import Network
import Testing

@testable import AgentNode

/// The node's event lines and their subscribers (README, "Event lines"; spec/control-api.md §8.7).
@Suite("node events: lines and subscribers")
struct NodeEventsTests {
    @Test("the autonat event's line, exactly")
    func autonatLine() {
        #expect(
            NodeEvent.autonat(.private, confidence: 1).jsonLine
                == #"{"confidence":1,"event":"autonat","verdict":"private"}"#)
        #expect(NodeEvent.autonat(.public, confidence: 3).json["verdict"] == "public")
        #expect(NodeEvent.autonat(.unknown, confidence: 0).json["event"] == "autonat")
    }

    @Test("the output and every subscriber get each event once, in order; finish ends them all")
    func fanOut() async {
        let printed = NIOLockedValueBox<[String]>([])
        let events = NodeEvents { event in printed.withLockedValue { $0.append(event.jsonLine) } }
        events.publish(.autonat(.unknown, confidence: 0))  // before anyone subscribed: output only
        let first = events.subscribe()
        let second = events.subscribe()
        let sent = (1...3).map { NodeEvent.autonat(.public, confidence: $0) }
        for event in sent { events.publish(event) }
        events.finish()
        events.publish(.autonat(.private, confidence: 1))  // after finish: dropped everywhere
        var seenFirst: [NodeEvent] = []
        for await event in first { seenFirst.append(event) }
        var seenSecond: [NodeEvent] = []
        for await event in second { seenSecond.append(event) }
        #expect(seenFirst == sent && seenSecond == sent)
        #expect(printed.withLockedValue { $0 } == ([NodeEvent.autonat(.unknown, confidence: 0)] + sent).map(\.jsonLine))
        var late = 0
        for await _ in events.subscribe() { late += 1 }
        #expect(late == 0, "a subscription after finish ends at once")
    }

    @Test("a subscriber that does not read keeps only its newest events")
    func bounded() async {
        let events = NodeEvents()
        let slow = events.subscribe(bufferSize: 2)
        for confidence in 0..<5 { events.publish(.autonat(.public, confidence: confidence)) }
        events.finish()
        var seen: [Int] = []
        for await event in slow { seen.append(event.json["confidence"]?.intValue ?? -1) }
        #expect(seen == [3, 4])
    }
}
