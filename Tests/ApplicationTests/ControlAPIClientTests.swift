import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Application

@Suite("Control API client", .timeLimit(.minutes(1)))
struct ControlAPIClientTests {
    @Test("call returns the result; params may be an object, an array or absent")
    func call() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            #expect(try await client.call("add", ["a": 1, "b": 2]) == 3)
            #expect(try await client.call("echo", [1, "two"]) == [1, "two"])
            #expect(try await client.call("echo") == .null)
            #expect(try await client.call("echo", ["big": .number(UInt64.max)])["big"]?.uint64Value == UInt64.max)
            await client.close()
        }
    }

    @Test("many concurrent calls on one client are matched to their responses, whatever the order")
    func concurrentCalls() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<60 {
                    group.addTask {
                        if index % 3 == 0 {
                            let result = try await client.call("sleep", ["ms": .number((60 - index) / 3)])
                            #expect(result == "slept")
                        } else {
                            let result = try await client.call("add", ["a": .number(index), "b": 1000])
                            #expect(result == .number(index + 1000))
                        }
                    }
                }
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test("a remote error carries the code, the kind and the message")
    func remoteError() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            do throws(ControlAPIError) {
                _ = try await client.call("fail", ["kind": "not_found"])
                Issue.record("no error")
            } catch {
                #expect(error.kind == .remoteError)
                #expect(error.code == -32001)
                #expect(error.detail == "unknown_name")
                #expect(error.message == "no such agent: bob.agent")
            }
            do throws(ControlAPIError) {
                _ = try await client.call("nope")
                Issue.record("no error")
            } catch {
                #expect(error.code == -32601)
                #expect(error.detail == "method_not_found")
            }
            await client.close()
        }
    }

    @Test("a call times out; the client stays usable and ignores the late response")
    func timeout() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            let clock = ContinuousClock()
            let started = clock.now
            do throws(ControlAPIError) {
                _ = try await client.call("gated", ["late": true], timeout: .milliseconds(100))
                Issue.record("no timeout")
            } catch {
                #expect(error.kind == .timeout)
                #expect(error.message.contains("gated"))
            }
            #expect(clock.now - started < .seconds(10))
            test.gate.open()
            #expect(try await client.call("echo", ["after"]) == ["after"])
            await client.close()
        }
    }

    @Test("a cancelled call ends at once")
    func cancelled() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            let call = Task { try await client.call("gated") }
            _ = await test.probe.waitFor("gated started")
            call.cancel()
            await #expect(throws: ControlAPIError.self) { try await call.value }
            test.gate.open()
            await client.close()
        }
    }

    @Test("a pending call fails with shutting_down when the daemon shuts down; later calls with connectionClosed")
    func daemonGoesAway() async throws {
        let test = TestMethods()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: test.methods, logger: quietLogger)
        let running = Task { await server.run() }
        let client = try await ControlAPIClient.connect(socketPath: directory.socketPath)
        let call = Task { try await client.call("gated") }
        _ = await test.probe.waitFor("gated started")
        await server.shutdown()
        do {
            _ = try await call.value
            Issue.record("the call outlived the daemon")
        } catch let error as ControlAPIError {
            #expect(error.kind == .remoteError)
            #expect(error.code == -32000)
            #expect(error.detail == "shutting_down")
        }
        do {
            _ = try await client.call("echo")
            Issue.record("a call after the shutdown succeeded")
        } catch {
            #expect(error.kind == .connectionClosed)
        }
        test.gate.open()
        await running.value
        await client.close()
    }

    @Test("a connection the daemon refuses (too many connections) fails the call with that remote error")
    func refusedConnection() async throws {
        var configuration = ControlAPIConfiguration()
        configuration.maxConnections = 1
        try await withServer(configuration: configuration) { _, path in
            let first = try await ControlAPIClient.connect(socketPath: path)
            #expect(try await first.call("echo", [1]) == [1])
            let second = try await ControlAPIClient.connect(socketPath: path)
            do throws(ControlAPIError) {
                _ = try await second.call("echo", [2])
                Issue.record("served past the connection limit")
            } catch {
                #expect(error.kind == .remoteError)
                #expect(error.detail == "too_many_connections")
            }
            await second.close()
            await first.close()
        }
    }

    @Test("notify sends without waiting for a response")
    func notify() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            try await client.notify("record", ["n": 1])
            #expect(await test.probe.waitFor("record") == #"record {"n":1}"#)
            await client.close()
        }
    }

    @Test("params that are not an object or array are refused before sending")
    func scalarParams() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            do throws(ControlAPIError) {
                _ = try await client.call("echo", 5)
                Issue.record("sent scalar params")
            } catch {
                #expect(error.kind == .invalidParams)
            }
            await client.close()
        }
    }

    @Test("a daemon that answers with something other than JSON-RPC is a protocolError")
    func protocolError() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let impostor = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Impostor())
                }
            }
            .bind(unixDomainSocketPath: directory.socketPath)
            .get()
        let client = try await ControlAPIClient.connect(socketPath: directory.socketPath)
        do throws(ControlAPIError) {
            _ = try await client.call("echo")
            Issue.record("accepted a non-JSON-RPC answer")
        } catch {
            #expect(error.kind == .protocolError)
        }
        await client.close()
        try await impostor.close()
    }
}

/// Answers every byte with a line that is not JSON-RPC.
private final class Impostor: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n")), promise: nil)
    }
}
