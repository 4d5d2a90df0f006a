import AgentTesting
import Foundation
import NIOPosix
import Testing

@testable import Application

/// `agentctl api call` as a process against an in-process server.
@Suite("Control API from agentctl", .serialized, .timeLimit(.minutes(2)))
struct ControlAPICLITests {
    let agentctl = ProcessRunner.executable("agentctl")

    /// Runs agentctl (the wait suspends: the cooperative threads stay free for the server's
    /// handlers while the process waits for them).
    func run(_ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(agentctl, arguments)
    }

    @Test("api call prints the result: indented by default, one line with --json")
    func call() async throws {
        try await withServer { _, path in
            let compact = try await run("api", "call", "echo", #"{"b":[1,2],"a":"x"}"#, "--api-socket", path, "--json")
            #expect(compact.status == 0, "\(compact.stderr)")
            #expect(compact.stdoutText == #"{"a":"x","b":[1,2]}"# + "\n")
            let pretty = try await run("api", "call", "add", #"{"a":20,"b":22}"#, "--api-socket", path)
            #expect(pretty.status == 0, "\(pretty.stderr)")
            #expect(pretty.stdoutText == "42\n")
        }
    }

    @Test("the socket defaults to DATA_DIR/agentd.sock")
    func dataDirSocket() async throws {
        try await withServer { _, path in
            let directory = (path as NSString).deletingLastPathComponent
            let result = try await run("api", "call", "echo", "[true]", "--data-dir", directory, "--json")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdoutText == "[true]\n")
        }
    }

    @Test("no daemon: exit 3, the socket path, and a hint to start agentd with the data dir")
    func unreachable() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let result = try await run("api", "call", "echo", "--data-dir", directory.path)
        #expect(result.status == 3)
        #expect(result.stderr.contains(directory.socketPath))
        #expect(result.stderr.contains("hint: is agentd running? start it with: agentd --data-dir \(directory.path)"))
        let json = try await run("api", "call", "echo", "--data-dir", directory.path, "--json")
        #expect(json.status == 3)
        let error = try #require(try json.errorJSON()["error"] as? [String: Any])
        #expect(error["kind"] as? String == "daemon_unreachable")
        #expect(error["exit_code"] as? Int == 3)
    }

    @Test(
        "remote errors exit 2 when the input was refused, 1 otherwise, with the daemon's kind",
        arguments: [
            (["fail", #"{"kind":"invalid_params"}"#], 2, "invalid_params"),
            (["fail", #"{"kind":"invalid_input"}"#], 2, "invalid_name"),
            (["nope"], 2, "method_not_found"),
            (["fail", #"{"kind":"not_found"}"#], 1, "unknown_name"),
            (["fail", #"{"kind":"failed"}"#], 1, "failed"),
            (["fail", #"{"kind":"timeout"}"#], 1, "timeout"),
        ] as [([String], Int32, String)])
    func remoteErrors(arguments: [String], status: Int32, kind: String) async throws {
        try await withServer { _, path in
            let result = try await ProcessRunner.run(agentctl, ["api", "call"] + arguments + ["--api-socket", path, "--json"])
            #expect(result.status == status, "\(result.stderr)")
            let error = try #require(try result.errorJSON()["error"] as? [String: Any])
            #expect(error["kind"] as? String == kind)
        }
    }

    @Test("with --json an error is one line of compact JSON on stderr (spec §7)")
    func oneLineErrors() async throws {
        try await withServer { _, path in
            let remote = try await run("api", "call", "fail", #"{"kind":"not_found"}"#, "--api-socket", path, "--json")
            #expect(remote.status == 1)
            #expect(
                remote.stderr
                    == #"{"error":{"exit_code":1,"kind":"unknown_name","message":"no such agent: bob.agent"}}"# + "\n")
        }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let unreachable = try await run("api", "call", "echo", "--data-dir", directory.path, "--json")
        #expect(unreachable.status == 3)
        #expect(unreachable.stderr.hasSuffix("}\n") && unreachable.stderr.filter { $0 == "\n" }.count == 1)
        #expect(try unreachable.errorJSON()["error"] as? [String: Any] != nil)
    }

    @Test("PARAMS_JSON that is not JSON, or not an object or array, is bad usage (exit 2)")
    func badParams() async throws {
        try await withServer { _, path in
            let invalid = try await run("api", "call", "echo", "{nope", "--api-socket", path)
            #expect(invalid.status == 2)
            #expect(invalid.stderr.contains("PARAMS_JSON is not valid JSON"))
            let scalar = try await run("api", "call", "echo", "5", "--api-socket", path)
            #expect(scalar.status == 2)
        }
    }

    @Test("--timeout bounds the wait for a slow method (exit 1, kind timeout)")
    func clientTimeout() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let result = try await run("api", "call", "gated", "--api-socket", path, "--timeout", "0.2", "--json")
            #expect(result.status == 1)
            let error = try #require(try result.errorJSON()["error"] as? [String: Any])
            #expect(error["kind"] as? String == "timeout")
            test.gate.open()
        }
    }
}
