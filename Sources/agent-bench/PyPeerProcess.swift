import Foundation

/// The py-libp2p test peer (`Tests/Interop/py/peer.py`) as a child process: its stdout carries one
/// JSON event per line. Started in `init`, stopped by PID in `stop()`.
///
/// Used from one task at a time (it is not `Sendable`); the pipe callbacks only hand bytes and the
/// exit status over through `AsyncStream`s.
final class PyPeerProcess {
    /// One JSON line of peer.py.
    struct Event: Sendable {
        let name: String
        let line: String

        private var object: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        }

        func number(_ key: String) -> Double? { (object[key] as? NSNumber)?.doubleValue }
        func strings(_ key: String) -> [String] { object[key] as? [String] ?? [] }
        func string(_ key: String) -> String? { object[key] as? String }
    }

    private let process = Process()
    private let standardInput = Pipe()
    private let errorLog: URL
    private var output: AsyncStream<Data>.Iterator
    private var exit: AsyncStream<Int32>.Iterator
    private var exitStatus: Int32?
    private var pendingBytes: [UInt8] = []
    private var pendingEvents: [Event] = []

    var pid: Int32 { process.processIdentifier }

    /// Starts `python script arguments…`; stderr goes to a temporary file, quoted when it fails.
    init(python: String, script: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        process.environment = environment

        errorLog = FileManager.default.temporaryDirectory.appendingPathComponent(
            "agent-bench-py-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorLog)
        process.standardInput = standardInput

        let stdout = Pipe()
        process.standardOutput = stdout
        let (outputStream, outputContinuation) = AsyncStream.makeStream(of: Data.self)
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                outputContinuation.finish()
            } else {
                outputContinuation.yield(data)
            }
        }
        let (exitStream, exitContinuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { process in
            exitContinuation.yield(process.terminationStatus)
            exitContinuation.finish()
        }
        output = outputStream.makeAsyncIterator()
        exit = exitStream.makeAsyncIterator()
        try process.run()
    }

    /// Reads events until one named `name`, returning it and every event before it. Fails on an
    /// `error` event, at end of output, or after `timeout` (the process is then killed).
    func events(until name: String, timeout: Duration) async throws -> [Event] {
        let pid = self.pid
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            kill(pid, SIGKILL)
        }
        defer { watchdog.cancel() }
        var seen: [Event] = []
        while true {
            guard let event = try await nextEvent() else {
                throw BenchmarkError(
                    "peer.py (pid \(pid)) ended before its \"\(name)\" event (timeout \(timeout))\(errorTail())")
            }
            if event.name == "error" {
                throw BenchmarkError("peer.py (pid \(pid)): \(event.string("message") ?? event.line)")
            }
            seen.append(event)
            if event.name == name { return seen }
        }
    }

    /// The first event named `name` (see `events(until:timeout:)`).
    func event(_ name: String, timeout: Duration) async throws -> Event {
        try await events(until: name, timeout: timeout).last!
    }

    private func nextEvent() async throws -> Event? {
        while true {
            if !pendingEvents.isEmpty { return pendingEvents.removeFirst() }
            guard let data = await output.next(isolation: nil) else { return nil }
            pendingBytes += data
            while let newline = pendingBytes.firstIndex(of: 0x0a) {
                let line = String(decoding: pendingBytes[..<newline], as: UTF8.self)
                pendingBytes.removeSubrange(...newline)
                let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                if let name = object?["event"] as? String { pendingEvents.append(Event(name: name, line: line)) }
            }
        }
    }

    /// Stops the process and waits for it: closes its stdin (peer.py exits on EOF), then kills it by
    /// PID if it still runs after 5 s. (Not SIGTERM: a child inherits the signal mask of the thread
    /// that spawned it, and may never see one.) Returns the exit status.
    @discardableResult
    func stop() async -> Int32 {
        try? standardInput.fileHandleForWriting.close()
        if let exitStatus { return exitStatus }
        let pid = self.pid
        let killer = Task {
            try await Task.sleep(for: .seconds(5))
            kill(pid, SIGKILL)
        }
        defer { killer.cancel() }
        let status = await exit.next(isolation: nil) ?? -1
        exitStatus = status
        try? FileManager.default.removeItem(at: errorLog)
        return status
    }

    /// The last lines peer.py wrote to stderr, for an error message.
    private func errorTail() -> String {
        guard let text = try? String(contentsOf: errorLog, encoding: .utf8), !text.isEmpty else { return "" }
        return "; stderr: " + text.split(separator: "\n").suffix(5).joined(separator: " | ")
    }
}
