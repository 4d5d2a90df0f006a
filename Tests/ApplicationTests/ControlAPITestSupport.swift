import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Application

/// A private temporary directory for one test (short, so socket paths fit `sun_path`).
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = "/tmp/ctlapi-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
    }

    var socketPath: String { path + "/agentd.sock" }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Log messages kept for a test to look at.
final class RecordedLog: Sendable {
    private let messages = NIOLockedValueBox<[(Logger.Level, String)]>([])

    var logger: Logger {
        Logger(label: "test.control-api") { _ in RecordingLogHandler(log: self) }
    }

    func append(_ level: Logger.Level, _ message: String) {
        messages.withLockedValue { $0.append((level, message)) }
    }

    func contains(level: Logger.Level, _ fragment: String) -> Bool {
        messages.withLockedValue { $0.contains { $0.0 == level && $0.1.contains(fragment) } }
    }
}

struct RecordingLogHandler: LogHandler {
    let log: RecordedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        log.append(event.level, "\(event.message)")
    }
}

/// Events that handlers report to the test ("gated started", "ticks stopped: …").
final class Probe: Sendable {
    private struct State {
        var events: [String] = []
        var waiters: [(prefix: String, continuation: CheckedContinuation<String, Never>)] = []
    }

    private let state = NIOLockedValueBox(State())

    func report(_ event: String) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<String, Never>? in
            if let index = state.waiters.firstIndex(where: { event.hasPrefix($0.prefix) }) {
                return state.waiters.remove(at: index).continuation
            }
            state.events.append(event)
            return nil
        }
        waiter?.resume(returning: event)
    }

    /// Takes the first event that starts with `prefix`, waiting for it if there is none yet.
    func waitFor(_ prefix: String) async -> String {
        await withCheckedContinuation { continuation in
            let event = state.withLockedValue { state -> String? in
                if let index = state.events.firstIndex(where: { $0.hasPrefix(prefix) }) {
                    return state.events.remove(at: index)
                }
                state.waiters.append((prefix, continuation))
                return nil
            }
            if let event { continuation.resume(returning: event) }
        }
    }

    /// The events not taken yet.
    var pending: [String] { state.withLockedValue { $0.events } }
}

/// A gate a handler waits at until the test opens it.
final class Gate: Sendable {
    private let state = NIOLockedValueBox<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLockedValue { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The methods the tests call.
struct TestMethods {
    let probe = Probe()
    let gate = Gate()

    var methods: ControlAPIMethods {
        let probe = probe
        let gate = gate
        var methods = ControlAPIMethods()
        methods.register("echo") { params in params }
        methods.register("add") { params in
            struct Operands: Decodable {
                var a: Int64
                var b: Int64
            }
            let operands = try params.decode(Operands.self)
            return .number(operands.a + operands.b)
        }
        methods.register("gated") { params in
            probe.report("gated started")
            await gate.wait()
            return params
        }
        methods.register("sleep") { params in
            try await Task.sleep(for: .milliseconds(params["ms"]?.intValue ?? 10))
            return "slept"
        }
        methods.register("record") { params in
            probe.report("record \(params.jsonText)")
            return .null
        }
        methods.register("fail") { params in
            switch params["kind"]?.stringValue {
            case "invalid_params": throw ControlAPIError.invalidParams("x must be a number")
            case "not_found": throw ControlAPIError.notFound("no such agent: bob.agent", kind: "unknown_name")
            case "invalid_input": throw ControlAPIError.invalidInput("bad name", kind: "invalid_name")
            case "timeout": throw ControlAPIError.timeout("the lookup took too long")
            case "failed": throw ControlAPIError.failed("it broke")
            default: throw UntypedError()
            }
        }
        methods.registerSubscription("ticks") { params, subscriber in
            let limit = params["count"]?.intValue
            let padding = String(repeating: "x", count: params["size"]?.intValue ?? 0)
            if let limit, limit < 0 { throw ControlAPIError.invalidParams("count must not be negative") }
            try subscriber.accept(["subscription": "ticks"])
            probe.report("ticks accepted")
            var sent = 0
            do {
                while limit.map({ sent < $0 }) ?? true {
                    try subscriber.notify("tick", ["n": .number(sent), "padding": .string(padding)])
                    sent += 1
                    if params["fast"] != .bool(true) {
                        try await Task.sleep(for: .milliseconds(2))
                    } else if sent % 64 == 0 {
                        await Task.yield()
                    }
                }
                probe.report("ticks finished after \(sent)")
            } catch let error as ControlAPIError {
                probe.report("ticks stopped: \(error.kind.rawValue) after \(sent)")
                throw error
            } catch {
                probe.report("ticks stopped: cancelled after \(sent)")
                throw error
            }
        }
        methods.registerSubscription("no.accept") { _, _ in }
        return methods
    }
}

struct UntypedError: Error, CustomStringConvertible {
    var description: String { "an untyped failure" }
}

/// Waits until `condition` holds, checking every 10 ms for at most `limit`: for server state that
/// follows a client's action with no event to wait on (a connection counted out after EOF).
func eventually(within limit: Duration = .seconds(5), _ condition: () -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while clock.now < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// A quiet logger for tests that do not look at the log.
let quietLogger = Logger(label: "test.control-api") { _ in SwiftLogNoOpLogHandler() }

/// Binds a server in a fresh directory, runs it while `body` runs, then shuts it down, waits for
/// `run()` to return and removes the directory.
func withServer<T>(
    _ methods: ControlAPIMethods = TestMethods().methods,
    configuration: ControlAPIConfiguration = ControlAPIConfiguration(),
    logger: Logger = quietLogger,
    _ body: (ControlAPIServer, String) async throws -> T
) async throws -> T {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let server = try await ControlAPIServer.bind(
        socketPath: directory.socketPath, methods: methods, configuration: configuration, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self, returning: T.self) { group in
        group.addTask { await server.run() }
        do {
            let result = try await body(server, directory.socketPath)
            await server.shutdown()
            try await group.waitForAll()
            return result
        } catch {
            await server.shutdown()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// A raw line client: sends bytes as they are and reads lines as text, to see exactly what the
/// server answers.
final class RawClient {
    let channel: any Channel
    private var lines: AsyncStream<String>.Iterator

    private init(channel: any Channel, lines: AsyncStream<String>) {
        self.channel = channel
        self.lines = lines.makeAsyncIterator()
    }

    /// Connects; with `autoRead: false` it never reads, like a client that stops consuming.
    static func connect(_ path: String, autoRead: Bool = true) async throws -> RawClient {
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: autoRead)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(LineCollector(continuation: continuation))
                }
            }
            .connect(unixDomainSocketPath: path)
            .get()
        return RawClient(channel: channel, lines: lines)
    }

    func send(_ text: String) async throws {
        try await send(bytes: Array(text.utf8))
    }

    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// The next line from the server; `nil` when it closed the connection.
    func readLine() async -> String? {
        await lines.next()
    }

    /// The next line parsed as JSON.
    func readJSON(sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
        let line = try #require(await readLine(), "the server closed the connection", sourceLocation: sourceLocation)
        return try JSONValue(parsing: line)
    }

    /// Sends a request line and reads one line back.
    func roundTrip(_ line: String) async throws -> JSONValue {
        try await send(line + "\n")
        return try await readJSON()
    }

    func close() async {
        try? await channel.close()
    }
}

private final class LineCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let continuation: AsyncStream<String>.Continuation
    var framer = LineFramer(maxLineLength: 64 << 20)

    init(continuation: AsyncStream<String>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        framer.append(unwrapInboundIn(data))
        while let line = try? framer.nextLine() {
            continuation.yield(String(buffer: line))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension JSONValue {
    /// `error.code` of a response.
    var errorCode: Int? { self["error"]?["code"]?.intValue }
    /// `error.data.kind` of a response.
    var errorKind: String? { self["error"]?["data"]?["kind"]?.stringValue }
}
