import NIOCore
import Testing

@testable import Resolution

@Suite("Re-replication pacer")
struct ReplicationPacerTests {
    let origin = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test("starts asked for at once are spaced 1 s / rate apart")
    func spacing() {
        var pacer = ReplicationPacer(perSecond: 10)
        let starts = (0..<25).map { _ in pacer.reserve(now: origin) }
        for (index, start) in starts.enumerated() {
            #expect(start == origin + .milliseconds(100 * Int64(index)))
        }
        // Never more than 10 starts in any one-second window.
        for start in starts {
            #expect(starts.filter { $0 >= start && $0 < start + .seconds(1) }.count <= 10)
        }
    }

    @Test("idle time builds no credit: no burst after a pause")
    func noBurst() {
        var pacer = ReplicationPacer(perSecond: 4)
        #expect(pacer.reserve(now: origin) == origin)
        let later = origin + .seconds(60)
        #expect(pacer.reserve(now: later) == later)
        #expect(pacer.reserve(now: later) == later + .milliseconds(250))
        #expect(pacer.reserve(now: later + .milliseconds(100)) == later + .milliseconds(500))
    }
}
