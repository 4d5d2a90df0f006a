import Foundation

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
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], stdin: [UInt8]? = nil
    ) throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("out")
        let errURL = directory.appendingPathComponent("err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["AGENTD_HOME"] = nil
        env["HOME"] = directory.path
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let outHandle = try FileHandle(forWritingTo: outURL)
        let errHandle = try FileHandle(forWritingTo: errURL)
        process.standardOutput = outHandle
        process.standardError = errHandle
        if let stdin {
            let inURL = directory.appendingPathComponent("in")
            FileManager.default.createFile(atPath: inURL.path, contents: Data(stdin))
            process.standardInput = try FileHandle(forReadingFrom: inURL)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        process.waitUntilExit()
        try outHandle.close()
        try errHandle.close()
        return Result(
            status: process.terminationStatus,
            stdout: Array(try Data(contentsOf: outURL)),
            stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }
}
