import Resolution
import Testing

@testable import Application

/// spec/messages.md §5.2, on a virtual clock.
@Suite("replay guard")
struct ReplayGuardTests {
    let alice = try! AgentName("alice")
    let mallory = try! AgentName("mallory")
    let start: UInt64 = 1_796_630_400_000

    @Test("an accepted (sender, id) is replayed; the same id from another sender is not")
    func replay() throws {
        var guardian = ReplayGuard()
        let id = MessageID.random()
        try guardian.admit(sender: alice, id: id, timestamp: start, now: start)
        #expect(throws: MessageError.self) {
            try guardian.admit(sender: alice, id: id, timestamp: start + 5, now: start + 10)
        }
        try guardian.admit(sender: mallory, id: id, timestamp: start, now: start)
        #expect(guardian.count == 2)
    }

    @Test("entries expire once the age rule refuses their message anyway")
    func expiry() throws {
        var guardian = ReplayGuard(maximumAge: 600_000)
        try guardian.admit(sender: alice, id: MessageID(high: 0, low: 1), timestamp: start, now: start)
        guardian.expire(now: start + 600_000)
        #expect(guardian.count == 1, "exactly maximumAge old is still accepted by rule 4, so still remembered")
        guardian.expire(now: start + 600_001)
        #expect(guardian.count == 0)
    }

    @Test("when full, the oldest entry goes and the floor rises: its replay is refused too_old, never accepted")
    func boundedFloor() throws {
        var guardian = ReplayGuard(capacity: 4)
        let ids = (0..<5).map { MessageID(high: 0, low: UInt64($0)) }
        for (index, id) in ids.prefix(4).enumerated() {
            try guardian.admit(sender: alice, id: id, timestamp: start + UInt64(index), now: start)
        }
        try guardian.admit(sender: alice, id: ids[4], timestamp: start + 10, now: start)
        #expect(guardian.count == 4)
        #expect(guardian.floor == start)
        do {
            try guardian.admit(sender: alice, id: ids[0], timestamp: start, now: start)
            Issue.record("the evicted message was accepted again")
        } catch {
            #expect(error.kind == .tooOld)
        }
        // Memory stays bounded under a flood of distinct ids.
        for index in 0..<1000 {
            try guardian.admit(sender: mallory, id: .random(), timestamp: start + 100 + UInt64(index), now: start)
        }
        #expect(guardian.count == 4)
        #expect(guardian.floor == start + 100 + 995)
    }

    @Test("a forgotten message (refused later in the pipeline) may be sent again")
    func forget() throws {
        var guardian = ReplayGuard()
        let id = MessageID.random()
        try guardian.admit(sender: alice, id: id, timestamp: start, now: start)
        guardian.forget(sender: alice, id: id)
        try guardian.admit(sender: alice, id: id, timestamp: start, now: start)
        #expect(guardian.count == 1)
    }
}
