import Foundation
import Testing

@testable import Application

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The socket file: its mode, a stale one, a live one, removal.
@Suite("Control API socket file", .timeLimit(.minutes(1)))
struct ControlAPISocketTests {
    /// Leaves a socket file at `path` with nothing listening: what a killed daemon leaves behind.
    func makeStaleSocket(at path: String) throws {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0)
    }

    func mode(of path: String) throws -> Int {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    @Test("the socket file has mode 0600 and no temporary file is left beside it")
    func mode() async throws {
        try await withServer { _, path in
            let socketMode = try mode(of: path)
            #expect(socketMode == 0o600)
            let entries = try FileManager.default.contentsOfDirectory(
                atPath: (path as NSString).deletingLastPathComponent)
            #expect(entries == ["agentd.sock"])
        }
    }

    @Test("a stale socket file left by a dead process is replaced")
    func staleSocket() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try makeStaleSocket(at: directory.socketPath)
        await #expect(throws: ControlAPIError.self) {
            _ = try await ControlAPIClient.connect(socketPath: directory.socketPath)
        }
        let log = RecordedLog()
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: TestMethods().methods, logger: log.logger)
        #expect(log.contains(level: .info, "stale"))
        let running = Task { await server.run() }
        let client = try await ControlAPIClient.connect(socketPath: directory.socketPath)
        #expect(try await client.call("echo", [1]) == [1])
        await client.close()
        await server.shutdown()
        await running.value
        #expect(!FileManager.default.fileExists(atPath: directory.socketPath))
    }

    @Test("a second server on the path of a live one is refused, and the first keeps serving")
    func secondServerRefused() async throws {
        try await withServer { _, path in
            do throws(ControlAPIError) {
                _ = try await ControlAPIServer.bind(
                    socketPath: path, methods: TestMethods().methods, logger: quietLogger)
                Issue.record("a second server bound a live socket path")
            } catch {
                #expect(error.kind == .alreadyRunning)
                #expect(error.message.contains(path))
            }
            let client = try await ControlAPIClient.connect(socketPath: path)
            #expect(try await client.call("echo", ["still"]) == ["still"])
            await client.close()
        }
    }

    @Test("a file that is not a socket is never replaced")
    func notASocket() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Data("precious".utf8).write(to: URL(fileURLWithPath: directory.socketPath))
        do throws(ControlAPIError) {
            _ = try await ControlAPIServer.bind(
                socketPath: directory.socketPath, methods: TestMethods().methods, logger: quietLogger)
            Issue.record("bound over a regular file")
        } catch {
            #expect(error.kind == .socketFailure)
            #expect(error.message.contains("not a socket"))
        }
        #expect(try String(contentsOfFile: directory.socketPath, encoding: .utf8) == "precious")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["agentd.sock"])
    }

    @Test("a path too long for a Unix socket, or in a missing directory, is a clear socketFailure")
    func badPaths() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let long = directory.path + "/" + String(repeating: "s", count: 120)
        do throws(ControlAPIError) {
            _ = try await ControlAPIServer.bind(socketPath: long, methods: TestMethods().methods, logger: quietLogger)
            Issue.record("bound a 140-byte path")
        } catch {
            #expect(error.kind == .socketFailure)
            #expect(error.message.contains("too long"))
        }
        do throws(ControlAPIError) {
            _ = try await ControlAPIServer.bind(
                socketPath: directory.path + "/missing/agentd.sock", methods: TestMethods().methods, logger: quietLogger
            )
            Issue.record("bound in a missing directory")
        } catch {
            #expect(error.kind == .socketFailure)
        }
    }

    #if os(Linux)
        @Test("every path of up to 103 bytes works, also in a long directory (no temporary path); 104 is refused")
        func longestPath() async throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            // A long directory and a short name: a temporary path in the directory would not fit.
            let longDirectory =
                directory.path + "/" + String(repeating: "d", count: 103 - 2 - directory.path.utf8.count - 1)
            try FileManager.default.createDirectory(atPath: longDirectory, withIntermediateDirectories: false)
            let path = longDirectory + "/s"
            #expect(path.utf8.count == 103)
            let server = try await ControlAPIServer.bind(
                socketPath: path, methods: TestMethods().methods, logger: quietLogger)
            let running = Task { await server.run() }
            #expect(try mode(of: path) == 0o600)
            let client = try await RawClient.connect(path)
            #expect(try await client.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#)["id"] == 1)
            await client.close()
            await server.shutdown()
            await running.value
            #expect(!FileManager.default.fileExists(atPath: path))
            #expect(try FileManager.default.contentsOfDirectory(atPath: longDirectory).isEmpty)
            do throws(ControlAPIError) {
                _ = try await ControlAPIServer.bind(
                    socketPath: path + "x", methods: TestMethods().methods, logger: quietLogger)
                Issue.record("bound a 104-byte path")
            } catch {
                #expect(error.kind == .socketFailure)
                #expect(error.message.contains("too long") && error.message.contains("103"))
            }
        }
    #endif

    @Test("shutdown removes the socket file and is idempotent; then clients find the daemon unreachable")
    func shutdownRemovesSocket() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: TestMethods().methods, logger: quietLogger)
        let running = Task { await server.run() }
        let client = try await ControlAPIClient.connect(socketPath: directory.socketPath)
        #expect(try await client.call("echo") == .null)
        await server.shutdown()
        await server.shutdown()
        await running.value
        #expect(!FileManager.default.fileExists(atPath: directory.socketPath))
        await #expect(throws: ControlAPIError.self) { try await client.call("echo") }
        do throws(ControlAPIError) {
            _ = try await ControlAPIClient.connect(socketPath: directory.socketPath)
            Issue.record("connected after shutdown")
        } catch {
            #expect(error.kind == .daemonUnreachable)
        }
    }

    @Test("cancelling run() shuts the server down and removes the socket")
    func cancelRun() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let test = TestMethods()
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: test.methods, logger: quietLogger)
        let running = Task { await server.run() }
        let client = try await RawClient.connect(directory.socketPath)
        try await client.send(#"{"jsonrpc":"2.0","id":1,"method":"ticks"}"# + "\n")
        _ = await test.probe.waitFor("ticks accepted")
        running.cancel()
        await running.value
        // run() returned: the subscription task has finished, and the socket is gone.
        #expect(await test.probe.waitFor("ticks stopped").hasPrefix("ticks stopped"))
        #expect(!FileManager.default.fileExists(atPath: directory.socketPath))
        await client.close()
    }

    @Test("shutdown leaves alone a socket that replaced ours")
    func shutdownSparesSuccessor() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: TestMethods().methods, logger: quietLogger)
        unlink(directory.socketPath)
        try makeStaleSocket(at: directory.socketPath)
        await server.shutdown()
        #expect(FileManager.default.fileExists(atPath: directory.socketPath))
    }

    @Test("the client finds the daemon unreachable, naming the path, when nothing listens")
    func unreachable() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        do throws(ControlAPIError) {
            _ = try await ControlAPIClient.connect(socketPath: directory.socketPath)
            Issue.record("connected to nothing")
        } catch {
            #expect(error.kind == .daemonUnreachable)
            #expect(error.message.contains(directory.socketPath))
        }
        try makeStaleSocket(at: directory.socketPath)
        do throws(ControlAPIError) {
            _ = try await ControlAPIClient.connect(socketPath: directory.socketPath)
            Issue.record("connected to a stale socket")
        } catch {
            #expect(error.kind == .daemonUnreachable)
            #expect(error.message.contains("nothing is listening"))
            #expect(error.message.contains(directory.socketPath))
        }
    }
}
