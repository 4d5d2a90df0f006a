import Foundation
import NIOConcurrencyHelpers

/// One JSON event line of peer.py.
///
/// `@unchecked Sendable`: a parsed JSON object (strings, numbers, arrays, dictionaries), never
/// mutated after parsing.
public struct PyEvent: @unchecked Sendable {
    public let fields: [String: Any]

    public subscript(_ key: String) -> Any? { fields[key] }
}

/// A child process that prints one JSON object per line on stdout — a py-libp2p peer
/// (Tests/Interop/py/peer.py) or `agentd` — whose lines the test awaits; stopped by PID when done.
///
/// `@unchecked Sendable`: `process` is only started in `init` and signalled by PID; all mutable state
/// sits in `state`, under its lock.
public final class JSONLineProcess: @unchecked Sendable {
    public static var script: String {
        TestVectors.repositoryRoot.appendingPathComponent("Tests/Interop/py/peer.py").path
    }

    private let process: Process
    private let state = NIOLockedValueBox(State())
    private let stdinPipe = Pipe()
    /// Read by a thread of its own with blocking `read(2)` (`startReader`), never through
    /// `FileHandle.readabilityHandler`: that handler's dispatch source crashed libdispatch's manager
    /// thread in CI twice (a bad pointer in `_dispatch_event_loop_drain`), even with the handler
    /// removed at EOF and the pipe kept alive — a pipe's read end inherited by a child spawned at
    /// the same moment outlives our close, and epoll then reports events for a freed source.
    private let stdoutPipe = Pipe()

    /// `@unchecked Sendable`: only ever touched inside `state.withLockedValue`.
    private struct State: @unchecked Sendable {
        var buffer: [UInt8] = []
        var events: [PyEvent] = []
        var waiters: [(token: UInt64, predicate: (PyEvent) -> Bool, continuation: CheckedContinuation<PyEvent, Error>)] = []
        var ended = false
        var exitStatus: Int32?
        var exitWaiters: [CheckedContinuation<Int32, Never>] = []
    }

    /// The process id, for the record.
    public var pid: Int32 { process.processIdentifier }

    /// Starts `peer.py` with `arguments` (e.g. `["listen"]` or `["dial", addr, "--ping", "3"]`).
    public convenience init(_ arguments: [String]) throws {
        try self.init(executable: try Python.executable(), arguments: [Self.script] + arguments)
    }

    /// Starts the Python script `Tests/Interop/py/<script>` with `arguments`.
    public convenience init(script: String, _ arguments: [String]) throws {
        let path = TestVectors.repositoryRoot.appendingPathComponent("Tests/Interop/py/\(script)").path
        try self.init(executable: try Python.executable(), arguments: [path] + arguments)
    }

    /// Starts `executable` with `arguments`; stderr goes to the test's stderr.
    public init(executable: String, arguments: [String], environment extra: [String: String] = [:]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = stdoutPipe
        process.standardOutput = out
        process.standardInput = stdinPipe
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        for (key, value) in extra { environment[key] = value }
        process.environment = environment
        let state = self.state
        process.terminationHandler = { process in
            let waiters = state.withLockedValue { state -> [CheckedContinuation<Int32, Never>] in
                state.exitStatus = process.terminationStatus
                defer { state.exitWaiters = [] }
                return state.exitWaiters
            }
            for waiter in waiters { waiter.resume(returning: process.terminationStatus) }
        }
        try process.run()
        Self.startReader(PipeBox(pipe: out), state: state)
    }

    /// `@unchecked Sendable`: the pipe is only read through its file descriptor by the reader
    /// thread, which holds it (so the descriptor stays open) until EOF.
    private struct PipeBox: @unchecked Sendable {
        let pipe: Pipe
    }

    /// Reads the child's stdout until EOF on a thread of its own, handing each chunk to `consume`.
    private static func startReader(_ box: PipeBox, state: NIOLockedValueBox<State>) {
        let thread = Thread {
            let descriptor = box.pipe.fileHandleForReading.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                consume(Array(buffer[..<count]), state: state)
            }
            consume([], state: state)
            withExtendedLifetime(box) {}
        }
        thread.name = "JSONLineProcess stdout"
        thread.start()
    }

    private static func consume(_ bytes: [UInt8], state: NIOLockedValueBox<State>) {
        let ready = state.withLockedValue { state -> [(CheckedContinuation<PyEvent, Error>, Result<PyEvent, Error>)] in
            if bytes.isEmpty { state.ended = true }
            state.buffer += bytes
            while let newline = state.buffer.firstIndex(of: 0x0a) {
                let line = Array(state.buffer[..<newline])
                state.buffer.removeFirst(newline + 1)
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] {
                    state.events.append(PyEvent(fields: object))
                }
            }
            var resumed: [(CheckedContinuation<PyEvent, Error>, Result<PyEvent, Error>)] = []
            state.waiters.removeAll { waiter in
                if let match = state.events.first(where: waiter.predicate) {
                    resumed.append((waiter.continuation, .success(match)))
                    return true
                }
                if state.ended {
                    resumed.append((waiter.continuation, .failure(VectorError("peer.py ended; events: \(state.events)"))))
                    return true
                }
                return false
            }
            return resumed
        }
        for (continuation, result) in ready { continuation.resume(with: result) }
    }

    /// All events so far.
    public var events: [PyEvent] { state.withLockedValue { $0.events } }

    /// Waits (at most `timeout`) for an event whose `"event"` is `name` and that satisfies `where`.
    public func waitFor(
        _ name: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (PyEvent) -> Bool = { _ in true }
    ) async throws -> PyEvent {
        let match: @Sendable (PyEvent) -> Bool = { ($0["event"] as? String) == name && predicate($0) }
        let token = UInt64.random(in: 0...UInt64.max)
        let state = self.state
        // The deadline resumes the waiter with an error; whichever comes first wins, once.
        let deadline = Task {
            try await Task.sleep(for: timeout)
            let waiter = state.withLockedValue { state in
                let index = state.waiters.firstIndex { $0.token == token }
                return index.map { state.waiters.remove(at: $0) }
            }
            waiter?.continuation.resume(
                throwing: VectorError("timed out after \(timeout) waiting for \(name); events: \(self.events.map(\.fields))"))
        }
        defer { deadline.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let immediate = state.withLockedValue { state -> PyEvent? in
                if let found = state.events.first(where: match) { return found }
                state.waiters.append((token, match, continuation))
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// Sends one command as a JSON line on stdin (`{"id":N,"cmd":…,…}`) and waits for the line that
    /// answers it (same `"id"`). Throws if the answer has `"ok": false`, with its `"error"`.
    public func command(
        _ cmd: String, _ parameters: [String: Any] = [:], timeout: Duration = .seconds(60)
    ) async throws -> PyEvent {
        let id = Int.random(in: 1...Int(Int32.max))
        var object = parameters
        object["id"] = id
        object["cmd"] = cmd
        let line = try JSONSerialization.data(withJSONObject: object) + Data([0x0a])
        try stdinPipe.fileHandleForWriting.write(contentsOf: line)
        let state = self.state
        let token = UInt64.random(in: 0...UInt64.max)
        let match: @Sendable (PyEvent) -> Bool = { ($0["id"] as? Int) == id && $0["event"] == nil }
        let deadline = Task {
            try await Task.sleep(for: timeout)
            let waiter = state.withLockedValue { state in
                let index = state.waiters.firstIndex { $0.token == token }
                return index.map { state.waiters.remove(at: $0) }
            }
            waiter?.continuation.resume(throwing: VectorError("timed out after \(timeout) waiting for the answer to \(cmd)"))
        }
        defer { deadline.cancel() }
        let answer = try await withCheckedThrowingContinuation { continuation in
            let immediate = state.withLockedValue { state -> PyEvent? in
                if let found = state.events.first(where: match) { return found }
                state.waiters.append((token, match, continuation))
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
        guard (answer["ok"] as? Bool) == true else {
            throw VectorError("\(cmd) failed: \(answer["error"] ?? answer.fields)")
        }
        return answer
    }

    /// Waits for the process to exit and returns its status.
    public func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status = state.withLockedValue { state -> Int32? in
                if let status = state.exitStatus { return status }
                state.exitWaiters.append(continuation)
                return nil
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    /// Sends `signal` to the process by PID.
    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Stops the process and waits for it: closes its stdin (peer.py exits cleanly on EOF), and if
    /// it is still running after 5 s, kills it by PID. (SIGTERM is not used: a child spawned from a
    /// test-runner thread inherits that thread's blocked signal mask and may never see it.)
    public func stop() async {
        try? stdinPipe.fileHandleForWriting.close()
        let pid = process.processIdentifier
        let killer = Task {
            try await Task.sleep(for: .seconds(5))
            kill(pid, SIGKILL)
        }
        _ = await waitForExit()
        killer.cancel()
    }
}

/// The py-libp2p test peer.
public typealias PyPeer = JSONLineProcess
