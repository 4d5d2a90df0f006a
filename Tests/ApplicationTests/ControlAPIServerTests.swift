import AgentTesting
import Foundation
import NIOCore
import Testing

@testable import Application

/// The server's protocol, spoken byte for byte over a real Unix socket.
@Suite("Control API server: JSON-RPC over the socket", .timeLimit(.minutes(1)))
struct ControlAPIServerTests {
    @Test("a request gets its response, as one line with sorted keys")
    func roundTrip() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            try await client.send(#"{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":2,"b":40}}"# + "\n")
            #expect(await client.readLine() == #"{"id":1,"jsonrpc":"2.0","result":42}"#)
            #expect(
                try await client.roundTrip(#"{"jsonrpc":"2.0","id":2,"method":"echo","params":["x"]}"#)["result"] == [
                    "x"
                ])
            await client.close()
        }
    }

    @Test(
        "ids come back exactly as sent: strings, numbers of every size, null",
        arguments: [
            #""abc""#, #""ü☃""#, #""""#, "0", "-7", "9223372036854775807", "18446744073709551615", "1.5", "null",
        ])
    func idsPreserved(id: String) async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            try await client.send(#"{"jsonrpc":"2.0","id":"# + id + #","method":"echo","params":{}}"# + "\n")
            let line = try #require(await client.readLine())
            #expect(line.hasPrefix(#"{"id":"# + id + ","))
            #expect(try JSONValue(parsing: line)["id"] == JSONValue(parsing: id))
            await client.close()
        }
    }

    @Test("requests on one connection are answered as they finish, not in order, each with its id")
    func outOfOrder() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await RawClient.connect(path)
            try await client.send(
                #"{"jsonrpc":"2.0","id":"slow","method":"gated","params":{"n":1}}"# + "\n"
                    + #"{"jsonrpc":"2.0","id":"fast","method":"echo","params":{"n":2}}"# + "\n")
            _ = await test.probe.waitFor("gated started")
            let first = try await client.readJSON()
            #expect(first["id"] == "fast")
            #expect(first["result"] == ["n": 2])
            test.gate.open()
            let second = try await client.readJSON()
            #expect(second["id"] == "slow")
            #expect(second["result"] == ["n": 1])
            await client.close()
        }
    }

    struct ErrorCase: Sendable, CustomTestStringConvertible {
        var line: String
        var code: Int
        var kind: String
        var id: JSONValue = .null
        var testDescription: String { "\(code) \(kind): \(line.prefix(60))" }
    }

    static let errorCases: [ErrorCase] = [
        ErrorCase(line: "garbage", code: -32700, kind: "parse_error"),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1,"method":"echo""#, code: -32700, kind: "parse_error"),
        ErrorCase(line: "{}", code: -32600, kind: "invalid_request"),
        ErrorCase(line: "[]", code: -32600, kind: "batch_not_supported"),
        ErrorCase(line: #"[{"jsonrpc":"2.0","id":1,"method":"echo"}]"#, code: -32600, kind: "batch_not_supported"),
        ErrorCase(line: #""a string""#, code: -32600, kind: "invalid_request"),
        ErrorCase(line: "42", code: -32600, kind: "invalid_request"),
        ErrorCase(line: #"{"id":1,"method":"echo"}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"1.0","id":1,"method":"echo"}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":2.0,"id":1,"method":"echo"}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1,"method":5}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1,"method":""}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":{},"method":"echo"}"#, code: -32600, kind: "invalid_request"),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":true,"method":"echo"}"#, code: -32600, kind: "invalid_request"),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"echo","params":5}"#, code: -32600, kind: "invalid_request", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1,"method":"nope"}"#, code: -32601, kind: "method_not_found", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#, code: -32601, kind: "method_not_found", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1}}"#, code: -32602, kind: "invalid_params",
            id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":"2"}}"#, code: -32602,
            kind: "invalid_params",
            id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"invalid_params"}}"#, code: -32602,
            kind: "invalid_params", id: 1),
        ErrorCase(line: #"{"jsonrpc":"2.0","id":1,"method":"no.accept"}"#, code: -32603, kind: "internal_error", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"failed"}}"#, code: -32000, kind: "failed",
            id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"untyped"}}"#, code: -32000,
            kind: "failed", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"not_found"}}"#, code: -32001,
            kind: "unknown_name", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"invalid_input"}}"#, code: -32002,
            kind: "invalid_name", id: 1),
        ErrorCase(
            line: #"{"jsonrpc":"2.0","id":1,"method":"fail","params":{"kind":"timeout"}}"#, code: -32003,
            kind: "timeout",
            id: 1),
    ]

    @Test("every error code, with its standard message and a data.kind and data.message", arguments: errorCases)
    func errorCodes(errorCase: ErrorCase) async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let response = try await client.roundTrip(errorCase.line)
            #expect(response["jsonrpc"] == "2.0")
            #expect(response["id"] == errorCase.id)
            #expect(response["result"] == nil)
            #expect(response.errorCode == errorCase.code)
            #expect(response.errorKind == errorCase.kind)
            #expect(response["error"]?["message"]?.stringValue == JSONRPCErrorCode.standardMessage(for: errorCase.code))
            #expect(response["error"]?["data"]?["message"]?.stringValue?.isEmpty == false)
            // The connection survives every error but a too-long line.
            #expect(try await client.roundTrip(#"{"jsonrpc":"2.0","id":"after","method":"echo"}"#)["id"] == "after")
            await client.close()
        }
    }

    @Test("an untyped handler error is answered with its description")
    func untypedMessage() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let response = try await client.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"fail","params":{}}"#)
            #expect(response["error"]?["data"]?["message"] == "an untyped failure")
            await client.close()
        }
    }

    @Test("notifications (no id) run but get no response, even when unknown or failing")
    func notifications() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await RawClient.connect(path)
            try await client.send(
                #"{"jsonrpc":"2.0","method":"record","params":{"x":1}}"# + "\n"
                    + #"{"jsonrpc":"2.0","method":"nope"}"# + "\n"
                    + #"{"jsonrpc":"2.0","method":"fail","params":{"kind":"failed"}}"# + "\n"
                    + #"{"jsonrpc":"2.0","method":"ticks"}"# + "\n")
            #expect(await test.probe.waitFor("record") == #"record {"x":1}"#)
            let response = try await client.roundTrip(#"{"jsonrpc":"2.0","id":7,"method":"echo"}"#)
            #expect(response["id"] == 7)
            #expect(response["result"] == .null)
            await client.close()
        }
    }

    @Test("blank lines between requests are ignored; CRLF line ends are accepted")
    func blankLines() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            try await client.send("\n  \n\r\n" + #"{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}"# + "\r\n")
            #expect(try await client.readJSON()["result"] == [1])
            await client.close()
        }
    }

    @Test("invalid UTF-8 is a parse error")
    func invalidUTF8() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let line = Array(#"{"jsonrpc":"2.0","id":1,"method":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8) + [0x0A]
            try await client.send(bytes: line)
            let response = try await client.readJSON()
            #expect(response.errorCode == -32700)
            #expect(response["error"]?["data"]?["message"]?.stringValue?.contains("UTF-8") == true)
            await client.close()
        }
    }

    @Test("deeply nested JSON is refused at the depth limit, without recursing into it")
    func deeplyNested() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let nested = String(repeating: "[", count: 500_000)
            let response = try await client.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo","params":"# + nested)
            #expect(response.errorCode == -32700)
            #expect(response["error"]?["data"]?["message"]?.stringValue?.contains("nested deeper than 64") == true)
            let objects = String(repeating: #"{"a":"#, count: 100_000)
            #expect(try await client.roundTrip(objects).errorCode == -32700)
            let fine = String(repeating: "[", count: 63) + String(repeating: "]", count: 63)
            let echoed = try await client.roundTrip(#"{"jsonrpc":"2.0","id":2,"method":"echo","params":"# + fine + "}")
            #expect(echoed["id"] == 2)
            await client.close()
        }
    }

    @Test("a 2 MiB line is answered with line_too_long, then the connection is closed; others are unaffected")
    func tooLongLine() async throws {
        try await withServer { _, path in
            let other = try await RawClient.connect(path)
            let client = try await RawClient.connect(path)
            // Not awaited: the server closes the connection before it has read all of it.
            let line = [UInt8](repeating: UInt8(ascii: "a"), count: 2 << 20) + [0x0A]
            client.channel.writeAndFlush(ByteBuffer(bytes: line), promise: nil)
            let response = try await client.readJSON()
            #expect(response.errorCode == -32600)
            #expect(response.errorKind == "line_too_long")
            #expect(response["id"] == .null)
            #expect(await client.readLine() == nil)
            #expect(try await other.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#)["id"] == 1)
            await client.close()
            await other.close()
        }
    }

    @Test("a line over 1 MiB with no newline at all is refused once it passes the limit")
    func neverEndingLine() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let chunk = [UInt8](repeating: UInt8(ascii: " "), count: 256 * 1024)
            var refused: JSONValue?
            let channel = client.channel
            let sender = Task {
                // Keeps sending until the server closes; bounded at 64 MiB.
                for _ in 0..<256 {
                    do { try await channel.writeAndFlush(ByteBuffer(bytes: chunk)) } catch { return }
                }
            }
            refused = try await client.readJSON()
            sender.cancel()
            _ = await sender.value
            #expect(refused?.errorKind == "line_too_long")
            #expect(await client.readLine() == nil)
            await client.close()
        }
    }

    @Test("1 MiB + 1 byte and then EOF, before the newline, is still answered line_too_long (spec §2)")
    func tooLongLineThenEOF() async throws {
        try await withServer { _, path in
            // (One byte more is refused before the EOF: the framer allows one byte for a "\r".)
            let tooLong = try await RawClient.connect(path)
            try await tooLong.send(bytes: [UInt8](repeating: UInt8(ascii: "a"), count: (1 << 20) + 1))
            try await tooLong.channel.close(mode: .output)
            let response = try await tooLong.readJSON()
            #expect(response.errorCode == -32600)
            #expect(response.errorKind == "line_too_long")
            #expect(response["id"] == .null)
            #expect(await tooLong.readLine() == nil)
            await tooLong.close()
            // Exactly 1 MiB without its newline is an incomplete request: discarded, no answer.
            let client = try await RawClient.connect(path)
            try await client.send(bytes: [UInt8](repeating: UInt8(ascii: " "), count: 1 << 20))
            try await client.channel.close(mode: .output)
            #expect(await client.readLine() == nil)
            await client.close()
        }
    }

    @Test("at shutdown, requests still running are answered shutting_down before the connection closes")
    func shutdownAnswersInFlight() async throws {
        let test = TestMethods()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try await ControlAPIServer.bind(
            socketPath: directory.socketPath, methods: test.methods, logger: quietLogger)
        let running = Task { await server.run() }
        let client = try await RawClient.connect(directory.socketPath)
        // `gated` ignores cancellation: the answer must not wait for the handler.
        try await client.send(#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"gated"}"# + "\n")
        try await client.send(#"{"jsonrpc":"2.0","id":"s","method":"sleep","params":{"ms":600000}}"# + "\n")
        _ = await test.probe.waitFor("gated started")
        #expect(try await client.roundTrip(#"{"jsonrpc":"2.0","id":"e","method":"echo"}"#)["id"] == "e")
        await server.shutdown()
        var answers: [JSONValue: String] = [:]
        while let line = await client.readLine() {
            let response = try JSONValue(parsing: line)
            #expect(response.errorCode == -32000, "\(line)")
            answers[response["id"] ?? .null] = response.errorKind
        }
        #expect(answers == [.number(UInt64.max): "shutting_down", "s": "shutting_down"])
        test.gate.open()  // run() waits for every handler to return
        await running.value
        await client.close()
    }

    @Test("seeded garbage bytes get parse or request errors; the server keeps serving")
    func garbage() async throws {
        try await withServer { _, path in
            var random = SeededGenerator(seed: 0x6761_7262)
            for round in 0..<20 {
                let client = try await RawClient.connect(path)
                var bytes: [UInt8] = []
                for _ in 0..<10 {
                    bytes += random.bytes(Int.random(in: 1..<200, using: &random)).map { $0 == 0x0A ? 0x20 : $0 }
                    bytes.append(0x0A)
                }
                try await client.send(bytes: bytes)
                try await client.send(#"{"jsonrpc":"2.0","id":"final","method":"echo"}"# + "\n")
                while true {
                    let response = try await client.readJSON()
                    if response["id"] == "final" { break }
                    let code = try #require(response.errorCode, "round \(round): \(response.jsonText)")
                    #expect([-32700, -32600].contains(code), "round \(round): \(response.jsonText)")
                }
                await client.close()
            }
        }
    }

    @Test("a client that sends half a line and disconnects leaves the server serving")
    func halfLineThenDisconnect() async throws {
        try await withServer { server, path in
            for _ in 0..<10 {
                let client = try await RawClient.connect(path)
                try await client.send(#"{"jsonrpc":"2.0","id":1,"meth"#)
                await client.close()
            }
            let client = try await RawClient.connect(path)
            #expect(try await client.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#)["id"] == 1)
            // The ten are gone from the server, not kept open.
            #expect(try await eventually { server.connectionCount == 1 })
            await client.close()
            #expect(try await eventually { server.connectionCount == 0 })
        }
    }

    @Test("a client that half-closes after its requests still gets every answer, then EOF")
    func halfClose() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            try await client.send(
                #"{"jsonrpc":"2.0","id":1,"method":"sleep","params":{"ms":50}}"# + "\n"
                    + #"{"jsonrpc":"2.0","id":2,"method":"echo"}"# + "\n" + #"{"jsonrpc":"2.0","id":3,"me"#)
            try await client.channel.close(mode: .output)
            var ids: Set<JSONValue> = []
            while let line = await client.readLine() {
                ids.insert(try JSONValue(parsing: line)["id"] ?? .null)
            }
            #expect(ids == [1, 2])
            await client.close()
        }
    }

    @Test("100 concurrent clients, each pipelining requests, all get their own answers")
    func manyClients() async throws {
        try await withServer { _, path in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for clientNumber in 0..<100 {
                    group.addTask {
                        let client = try await RawClient.connect(path)
                        var lines = ""
                        for request in 0..<5 {
                            lines +=
                                #"{"jsonrpc":"2.0","id":\#(request),"method":"add","params":{"a":\#(clientNumber),"b":\#(request)}}"#
                                + "\n"
                        }
                        try await client.send(lines)
                        var results: [JSONValue: JSONValue] = [:]
                        for _ in 0..<5 {
                            let response = try await client.readJSON()
                            results[response["id"] ?? .null] = response["result"]
                        }
                        for request in 0..<5 {
                            #expect(results[.number(request)] == .number(clientNumber + request))
                        }
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("more pipelined requests than the concurrency limit: reading pauses and resumes, none is lost")
    func pipelinedBeyondLimit() async throws {
        var configuration = ControlAPIConfiguration()
        configuration.maxConcurrentRequestsPerConnection = 4
        try await withServer(configuration: configuration) { _, path in
            let client = try await RawClient.connect(path)
            var lines = ""
            for id in 0..<300 {
                lines += #"{"jsonrpc":"2.0","id":\#(id),"method":"sleep","params":{"ms":1}}"# + "\n"
            }
            try await client.send(lines)
            var ids: Set<Int> = []
            for _ in 0..<300 {
                let response = try await client.readJSON()
                #expect(response["result"] == "slept")
                ids.insert(try #require(response["id"]?.intValue))
            }
            #expect(ids == Set(0..<300))
            await client.close()
        }
    }

    @Test("a client that reads its answers late gets all of them; the server paused instead of buffering")
    func lateReader() async throws {
        var configuration = ControlAPIConfiguration()
        configuration.maxOutboundBytesPerConnection = 64 * 1024
        try await withServer(configuration: configuration) { server, path in
            let client = try await RawClient.connect(path, autoRead: false)
            let payload = String(repeating: "p", count: 1000)
            var lines = ""
            for id in 0..<3000 {
                lines += #"{"jsonrpc":"2.0","id":\#(id),"method":"echo","params":["\#(payload)"]}"# + "\n"
            }
            // Not awaited: with the server paused, these bytes wait in the client's own buffer.
            client.channel.writeAndFlush(ByteBuffer(string: lines), promise: nil)
            try await Task.sleep(for: .milliseconds(300))
            _ = client.channel.setOption(.autoRead, value: true)
            client.channel.read()
            var count = 0
            while count < 3000 {
                let response = try await client.readJSON()
                #expect(response["result"]?[0]?.stringValue?.count == 1000)
                count += 1
            }
            await client.close()
        }
    }

    @Test("a result longer than maxResponseLength is answered with internal_error instead")
    func responseTooLarge() async throws {
        var configuration = ControlAPIConfiguration()
        configuration.maxResponseLength = 1000
        try await withServer(configuration: configuration) { _, path in
            let client = try await RawClient.connect(path)
            let big = String(repeating: "b", count: 2000)
            let response = try await client.roundTrip(#"{"jsonrpc":"2.0","id":9,"method":"echo","params":["\#(big)"]}"#)
            #expect(response["id"] == 9)
            #expect(response.errorCode == -32603)
            #expect(response.errorKind == "response_too_large")
            await client.close()
        }
    }

    @Test("past maxConnections a new connection gets one too_many_connections error and is closed")
    func connectionLimit() async throws {
        var configuration = ControlAPIConfiguration()
        configuration.maxConnections = 2
        try await withServer(configuration: configuration) { server, path in
            let first = try await RawClient.connect(path)
            let second = try await RawClient.connect(path)
            #expect(try await first.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#)["id"] == 1)
            #expect(try await second.roundTrip(#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#)["id"] == 1)
            let third = try await RawClient.connect(path)
            let refusal = try await third.readJSON()
            #expect(refusal.errorCode == -32000)
            #expect(refusal.errorKind == "too_many_connections")
            #expect(await third.readLine() == nil)
            #expect(server.connectionCount == 2)
            await first.close()
            await second.close()
            await third.close()
        }
    }
}
