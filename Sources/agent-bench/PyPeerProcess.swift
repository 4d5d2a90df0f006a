import Foundation

/// A py-libp2p test peer (`Tests/Interop/py/peer.py`, `kad_peer.py`) as a child process — or any
/// program that speaks the same way, such as agentd: its stdout carries one JSON object per line,
/// an event (`"event": name`) or the answer to a command sent on its stdin (`"id"` of the command,
/// no `"event"`). Each event carries when its line arrived. Started in `init`, stopped by PID in
/// `stop()`.
///
/// Used from one task at a time (it is not `Sendable`); the pipe callbacks only hand bytes and the
/// exit status over through `AsyncStream`s.
final class PyPeerProcess {
    /// One JSON line of the peer: an event, or a command's answer (named `answer`).
    struct Event: Sendable {
        /// The name of a command's answer.
        static let answer = "answer"

        let name: String
        let line: String
        /// When the line was read from the pipe (the reader thread's clock, at the read that
        /// completed it).
        let received: ContinuousClock.Instant

        private var object: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        }

        func number(_ key: String) -> Double? { (object[key] as? NSNumber)?.doubleValue }
        func numbers(_ key: String) -> [Double] { (object[key] as? [NSNumber] ?? []).map(\.doubleValue) }
        func strings(_ key: String) -> [String] { object[key] as? [String] ?? [] }
        func string(_ key: String) -> String? { object[key] as? String }
        func bool(_ key: String) -> Bool? { (object[key] as? NSNumber)?.boolValue }
    }

    private let process = Process()
    private let standardInput = Pipe()
    private let errorLog: URL
    private var output: AsyncStream<(Data, ContinuousClock.Instant)>.Iterator
    private var exit: AsyncStream<Int32>.Iterator
    private var exitStatus: Int32?
    private var pendingBytes: [UInt8] = []
    private var pendingEvents: [Event] = []

    var pid: Int32 { process.processIdentifier }
    let label: String

    /// Starts `python script arguments…`; stderr goes to a temporary file, quoted when it fails.
    convenience init(python: String, script: String, arguments: [String]) throws {
        try self.init(executable: python, arguments: [script] + arguments, label: "py peer")
    }

    /// Starts `executable arguments…`; stderr goes to a temporary file, quoted when it fails.
    /// `label` names the process in errors.
    init(executable: String, arguments: [String], label: String) throws {
        self.label = label
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
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
        let (outputStream, outputContinuation) = AsyncStream.makeStream(of: (Data, ContinuousClock.Instant).self)
        // A thread of its own with blocking read(2), not FileHandle.readabilityHandler, whose
        // dispatch source has crashed libdispatch on Linux (see AgentTesting's JSONLineProcess).
        let box = PipeBox(pipe: stdout)
        let reader = Thread {
            let descriptor = box.pipe.fileHandleForReading.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                outputContinuation.yield((Data(buffer[..<count]), ContinuousClock.now))
            }
            outputContinuation.finish()
            withExtendedLifetime(box) {}
        }
        reader.name = "\(label) stdout"
        let (exitStream, exitContinuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { process in
            exitContinuation.yield(process.terminationStatus)
            exitContinuation.finish()
        }
        output = outputStream.makeAsyncIterator()
        exit = exitStream.makeAsyncIterator()
        try process.run()
        reader.start()
    }

    /// `@unchecked Sendable`: the pipe is only read through its descriptor by the reader thread,
    /// which holds it (so the descriptor stays open) until EOF.
    private struct PipeBox: @unchecked Sendable {
        let pipe: Pipe
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
                    "\(label) (pid \(pid)) ended before its \"\(name)\" event (timeout \(timeout))\(errorTail())")
            }
            if event.name == "error" {
                throw BenchmarkError("\(label) (pid \(pid)): \(event.string("message") ?? event.line)")
            }
            seen.append(event)
            if event.name == name { return seen }
        }
    }

    /// The first event named `name` (see `events(until:timeout:)`).
    func event(_ name: String, timeout: Duration) async throws -> Event {
        try await events(until: name, timeout: timeout).last!
    }

    /// Sends `command` (a JSON object with an `"id"`) as one line on the peer's stdin, and returns
    /// its answer, skipping events meanwhile. Fails if the answer says `"ok": false`, and as
    /// `events(until:timeout:)` does.
    func command(_ command: [String: Any], timeout: Duration) async throws -> Event {
        let id = (command["id"] as? Int) ?? 0
        var line = try JSONSerialization.data(withJSONObject: command)
        line.append(0x0a)
        try standardInput.fileHandleForWriting.write(contentsOf: line)
        let deadline = ContinuousClock.now + timeout
        while true {
            let answer = try await event(Event.answer, timeout: max(deadline - .now, .zero))
            guard answer.number("id").map(Int.init) == id else { continue }
            guard answer.bool("ok") == true else {
                throw BenchmarkError(
                    "\(label) (pid \(pid)) failed \(command["cmd"] ?? "?"): \(answer.string("error") ?? answer.line)")
            }
            return answer
        }
    }

    private func nextEvent() async throws -> Event? {
        while true {
            if !pendingEvents.isEmpty { return pendingEvents.removeFirst() }
            guard let (data, received) = await output.next(isolation: nil) else { return nil }
            pendingBytes += data
            while let newline = pendingBytes.firstIndex(of: 0x0a) {
                let line = String(decoding: pendingBytes[..<newline], as: UTF8.self)
                pendingBytes.removeSubrange(...newline)
                let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                if let name = object?["event"] as? String {
                    pendingEvents.append(Event(name: name, line: line, received: received))
                } else if object?["id"] != nil {
                    pendingEvents.append(Event(name: Event.answer, line: line, received: received))
                }
            }
        }
    }

    /// Stops the process and waits for it: closes its stdin (the peers exit on EOF), then kills it by
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

    /// CPU seconds the running process has used (user + system, Linux `/proc/<pid>/stat`), if known.
    func cpuSeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "(comm)": state is field 3, utime 14 and stime 15 (proc(5)).
        let fields = stat[stat.index(after: afterName)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The last lines the peer wrote to stderr, for an error message.
    private func errorTail() -> String {
        guard let text = try? String(contentsOf: errorLog, encoding: .utf8), !text.isEmpty else { return "" }
        return "; stderr: " + text.split(separator: "\n").suffix(5).joined(separator: " | ")
    }
}

extension PyPeerProcess {
    /// `root` if given, else the first of the working directory and the executable's ancestors that
    /// holds the py test peers (`Tests/Interop/py/`).
    static func repositoryRoot(_ root: String?) -> URL {
        if let root { return URL(fileURLWithPath: root) }
        let executable = (Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0]))
            .standardizedFileURL
        var candidates = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        var directory = executable.deletingLastPathComponent()
        while directory.path != "/" {
            candidates.append(directory)
            directory = directory.deletingLastPathComponent()
        }
        return candidates.first {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent("Tests/Interop/py/peer.py").path)
        } ?? candidates[0]
    }
}
