import NIOConcurrencyHelpers
import NIOCore

extension RawStream {
    /// Runs `body` (a protocol negotiation, an identify exchange) under a deadline: past `timeout`
    /// the stream is reset, which fails whatever `body` waits for on it, and the call throws
    /// `NetworkError.timeout`. The timer is a task scheduled on the connection's event loop.
    ///
    /// Attack prevented: a peer that opens streams (or answers ours) and then says nothing would
    /// otherwise hold each stream, its task and its connection for ever (issue #10, finding 1).
    ///
    /// - Parameter what: names the step in the error ("protocol negotiation").
    func withDeadline<Value: Sendable>(
        _ timeout: TimeAmount, _ what: @autoclosure () -> String, _ body: () async throws -> Value
    ) async throws -> Value {
        // Whoever moves the state from `.running` first wins: the timer (which resets the stream)
        // or the body's end (after which the timer does nothing). A body that succeeds as the timer
        // fires therefore never hands out a stream the timer has reset.
        let state = NIOLockedValueBox(DeadlineState.running)
        let connection = self.connection
        let id = self.id
        let timer = connection.eventLoop.scheduleTask(in: timeout) {
            let fire = state.withLockedValue { state -> Bool in
                guard state == .running else { return false }
                state = .fired
                return true
            }
            if fire { connection.reset(id) }
        }
        let outcome: Result<Value, Error>
        do {
            outcome = .success(try await body())
        } catch {
            outcome = .failure(error)
        }
        timer.cancel()
        let fired = state.withLockedValue { state -> Bool in
            defer { state = .finished }
            return state == .fired
        }
        if fired {
            throw NetworkError(.timeout, "\(what()) did not finish within \(timeout.nanoseconds / 1_000_000) ms")
        }
        return try outcome.get()
    }
}

private enum DeadlineState {
    case running
    case fired
    case finished
}

extension MuxedStream {
    /// Runs `body` under a deadline: past `timeout` the stream is reset, which fails whatever `body`
    /// waits for on it, and the call throws `NetworkError.timeout`. For application protocols whose
    /// request or answer must arrive in bounded time (a peer that says nothing must not hold a
    /// stream and its task for ever).
    public func withDeadline<Value: Sendable>(
        _ timeout: TimeAmount, _ what: @autoclosure () -> String, _ body: () async throws -> Value
    ) async throws -> Value {
        try await raw.withDeadline(timeout, what(), body)
    }
}
