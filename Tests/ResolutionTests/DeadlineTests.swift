import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Resolution

/// `withDeadline`, the bound on every kad request: past the deadline what is in flight is
/// cancelled, and has ended, before the call throws (the hard timeout it replaces threw at once and
/// left the request running, holding its stream).
@Suite("kad request deadline: cancels what is in flight")
struct DeadlineTests {
    /// A body that waits until it is cancelled, and says when it ended.
    final class Probe: Sendable {
        let ended = NIOLockedValueBox(false)

        func waitForCancellation() async throws -> Int {
            let (stream, continuation) = AsyncStream.makeStream(of: Never.self)
            // Ends only when the task is cancelled.
            for await _ in stream {}
            continuation.finish()
            ended.withLockedValue { $0 = true }
            throw CancellationError()
        }
    }

    @Test("past the deadline the body is cancelled and has ended when DeadlineExceeded is thrown")
    func cancelsInFlight() async {
        let probe = Probe()
        await #expect(throws: DeadlineExceeded.self) {
            try await withDeadline(.milliseconds(20)) { try await probe.waitForCancellation() }
        }
        #expect(probe.ended.withLockedValue { $0 }, "the body was still running after the deadline threw")
    }

    @Test("a body that finishes in time returns its value")
    func returnsValue() async throws {
        let value = try await withDeadline(.seconds(60)) { 42 }
        #expect(value == 42)
    }

    @Test("cancelling the caller cancels the body")
    func callerCancellation() async {
        let probe = Probe()
        let task = Task { try await withDeadline(.seconds(600)) { try await probe.waitForCancellation() } }
        task.cancel()
        let result = await task.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(probe.ended.withLockedValue { $0 })
    }
}
