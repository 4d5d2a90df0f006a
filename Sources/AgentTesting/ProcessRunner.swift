import Foundation
import NIOConcurrencyHelpers

/// Runs the built executables (`agentctl`, `agentd`) as child processes in tests.
public enum ProcessRunner {
    /// The result of one run.
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: [UInt8]
        public let stderr: String
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

        /// stdout parsed as one JSON object.
        public func json() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: Data(stdout)) as? [String: Any] else {
                throw VectorError("stdout is not a JSON object: \(stdoutText)")
            }
            return object
        }

        /// stderr parsed as one JSON object (`--json` errors).
        public func errorJSON() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: Data(stderr.utf8)) as? [String: Any] else {
                throw VectorError("stderr is not a JSON object: \(stderr)")
            }
            return object
        }
    }

    /// The directory holding the built products: the test runner sits beside them.
    public static var productsDirectory: URL {
        URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
    }

    /// The path of a built executable product.
    public static func executable(_ name: String) -> String {
        productsDirectory.appendingPathComponent(name).path
    }

    /// Runs `executable` with `arguments`, waits for it, and captures its output (through files, so
    /// a large output can never deadlock on a full pipe). `environment` entries are added to the
    /// current environment; `AGENTD_HOME` is removed unless given, so tests never touch ~/.agentd.
    ///
    /// The wait suspends; it does not hold a thread. (A blocking wait here held one of the two
    /// threads of the test process's cooperative pool for as long as the command ran, e.g. an
    /// `agentctl resolve` over a DHT: two at once stopped every other test in the process, and
    /// their 10 s negotiation deadlines passed.) Cancelling the caller kills the process.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], stdin: [UInt8]? = nil
    ) async throws -> Result {
        let prepared = try Prepared(executable, arguments, environment: environment, stdin: stdin)
        defer { prepared.cleanUp() }
        let process = prepared.process
        // Cancellation may come before the process started, while it starts, or while it runs: the
        // one who comes second (the start or the cancellation) kills it, by PID with SIGKILL (a
        // child spawned from a test-runner thread inherits that thread's blocked signal mask, so
        // SIGTERM may never reach it).
        let state = NIOLockedValueBox((started: false, cancelled: false))
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                process.terminationHandler = { _ in continuation.resume() }
                do {
                    try process.run()
                } catch {
                    process.terminationHandler = nil
                    continuation.resume(throwing: error)
                    return
                }
                let cancelled = state.withLockedValue { state -> Bool in
                    state.started = true
                    return state.cancelled
                }
                if cancelled { kill(process.processIdentifier, SIGKILL) }
            }
        } onCancel: {
            let started = state.withLockedValue { state -> Bool in
                state.cancelled = true
                return state.started
            }
            if started { kill(process.processIdentifier, SIGKILL) }
        }
        return try prepared.result()
    }

    /// `run`, blocking the calling thread until the process exits: only for synchronous callers
    /// (a synchronous test, setup outside any task). Never call it from async code.
    public static func runBlocking(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], stdin: [UInt8]? = nil
    ) throws -> Result {
        let prepared = try Prepared(executable, arguments, environment: environment, stdin: stdin)
        defer { prepared.cleanUp() }
        try prepared.process.run()
        prepared.process.waitUntilExit()
        return try prepared.result()
    }

    /// A process ready to run, its output going to files in a directory of its own.
    private struct Prepared {
        let process = Process()
        let directory: URL
        let outURL: URL
        let errURL: URL
        let outHandle: FileHandle
        let errHandle: FileHandle

        init(_ executable: String, _ arguments: [String], environment: [String: String], stdin: [UInt8]?) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-run-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            outURL = directory.appendingPathComponent("out")
            errURL = directory.appendingPathComponent("err")
            FileManager.default.createFile(atPath: outURL.path, contents: nil)
            FileManager.default.createFile(atPath: errURL.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            var env = ProcessInfo.processInfo.environment
            env["AGENTD_HOME"] = nil
            env["HOME"] = directory.path
            for (key, value) in environment { env[key] = value }
            process.environment = env
            outHandle = try FileHandle(forWritingTo: outURL)
            errHandle = try FileHandle(forWritingTo: errURL)
            process.standardOutput = outHandle
            process.standardError = errHandle
            if let stdin {
                let inURL = directory.appendingPathComponent("in")
                FileManager.default.createFile(atPath: inURL.path, contents: Data(stdin))
                process.standardInput = try FileHandle(forReadingFrom: inURL)
            } else {
                process.standardInput = FileHandle.nullDevice
            }
        }

        func result() throws -> Result {
            try outHandle.close()
            try errHandle.close()
            return Result(
                status: process.terminationStatus,
                stdout: Array(try Data(contentsOf: outURL)),
                stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
        }

        func cleanUp() {
            try? FileManager.default.removeItem(at: directory)
        }
    }
}
