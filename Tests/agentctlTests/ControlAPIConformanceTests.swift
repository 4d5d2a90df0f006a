import AgentTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// spec/control-api.md, checked the way a client written from the spec alone sees it: real `agentd`
/// processes, requests as raw lines on the Unix socket (issue 10, finding 14).
@Suite("control API against spec/control-api.md", .serialized, .timeLimit(.minutes(3)))
struct ControlAPIConformanceTests {
    /// A short private directory, so that a data directory of a chosen length can be made inside it.
    static func temporaryDirectory() throws -> String {
        let path = "/tmp/cc-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return path
    }

    static func startDaemon(_ dataDir: String, _ extra: [String] = []) async throws -> (JSONLineProcess, PyEvent) {
        let daemon = try JSONLineProcess(
            executable: ProcessRunner.executable("agentd"),
            arguments: ["--data-dir", dataDir, "--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "warning"] + extra)
        return (daemon, try await daemon.waitFor("ready", timeout: .seconds(30)))
    }

    /// The socket path, peer id and first address of a ready daemon.
    struct Node {
        let process: JSONLineProcess
        let socket: String
        let peer: String
        let address: String

        init(_ process: JSONLineProcess, ready: PyEvent) throws {
            self.process = process
            socket = try #require(ready["api"] as? String)
            peer = try #require(ready["peer_id"] as? String)
            address = try #require((ready["addrs"] as? [String])?.first)
        }

        /// `address` without its `/p2p/…` part.
        var transportAddress: String { String(address.dropLast(("/p2p/" + peer).utf8.count)) }

        func call(_ method: String, _ params: String = "null", id: String = "1") throws -> [String: Any] {
            let client = try SpecClient(socket)
            return try client.call(#"{"jsonrpc":"2.0","id":\#(id),"method":"\#(method)","params":\#(params)}"#)
        }

        /// Streams open on the connection to `peer` (nil when not connected).
        func streams(to peer: String) throws -> Int? {
            let peers = try #require((try call("peers"))["result"] as? [String: Any])["peers"] as? [[String: Any]]
            return peers?.first { $0["peer_id"] as? String == peer }?["streams"] as? Int
        }

        /// Polls `peers` every 50 ms until `condition` holds for the streams to `peer`, at most `limit`.
        func waitForStreams(to peer: String, within limit: Duration, _ condition: (Int?) -> Bool) async throws -> Bool {
            let clock = ContinuousClock()
            let deadline = clock.now + limit
            while clock.now < deadline {
                if condition(try streams(to: peer)) { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return condition(try streams(to: peer))
        }
    }

    static func kind(_ response: [String: Any]) -> String? {
        ((response["error"] as? [String: Any])?["data"] as? [String: Any])?["kind"] as? String
    }

    static func code(_ response: [String: Any]) -> Int? { (response["error"] as? [String: Any])?["code"] as? Int }

    /// Daemons started with the perf server on (agentd serves perf only with `--perf`).
    static let perfArguments = ["--perf"]

    @Test(
        "connect, and ping/perf multiaddr targets, dial the address they name: a dead one or another peer's fails while connected"
    )
    func explicitAddressesAreDialled() async throws {
        let dirs = try (0..<3).map { _ in try Self.temporaryDirectory() }
        defer { for dir in dirs { try? FileManager.default.removeItem(atPath: dir) } }
        var nodes: [Node] = []
        do {
            for dir in dirs {
                let (process, ready) = try await Self.startDaemon(dir, Self.perfArguments)
                nodes.append(try Node(process, ready: ready))
            }
            let (a, b, c) = (nodes[0], nodes[1], nodes[2])
            for node in [b, c] {
                let connected = try a.call("connect", #"{"addr":"\#(node.address)"}"#)
                #expect((connected["result"] as? [String: Any])?["peer_id"] as? String == node.peer, "\(connected)")
            }
            // b's peer id at a port where nothing listens: refused, although a is connected to b.
            let dead = "/ip4/127.0.0.1/tcp/1/p2p/\(b.peer)"
            let refused = try a.call("connect", #"{"addr":"\#(dead)"}"#)
            #expect(Self.code(refused) == -32000 && Self.kind(refused) == "connection_failed", "\(refused)")
            // b's address with c's peer id: b answers the handshake, not c (a is connected to c).
            let wrongPeer = try a.call("connect", #"{"addr":"\#(b.transportAddress)/p2p/\#(c.peer)"}"#)
            #expect(Self.code(wrongPeer) == -32000 && Self.kind(wrongPeer) == "peer_id_mismatch", "\(wrongPeer)")
            for method in ["ping", "perf"] {
                let params = #"{"target":"\#(dead)","upload":1,"download":1}"#
                let failed = try a.call(method, params)
                #expect(Self.kind(failed) == "connection_failed", "\(method): \(failed)")
                let mismatched = try a.call(
                    method, #"{"target":"\#(b.transportAddress)/p2p/\#(c.peer)","upload":1,"download":1}"#)
                #expect(Self.kind(mismatched) == "peer_id_mismatch", "\(method): \(mismatched)")
            }
            // The address a dialled is reused, and the peers are still connected.
            let again = try a.call("connect", #"{"addr":"\#(b.address)"}"#)
            #expect((again["result"] as? [String: Any])?["peer_id"] as? String == b.peer, "\(again)")
            let pinged = try a.call("ping", #"{"target":"\#(c.peer)","count":2}"#)
            #expect(((pinged["result"] as? [String: Any])?["rtts_ms"] as? [Double])?.count == 2, "\(pinged)")
        } catch {
            for node in nodes { await node.process.stop() }
            throw error
        }
        for node in nodes { await node.process.stop() }
    }

    @Test(
        "perf: sizes over 1 GiB or not integers are invalid_params; a disconnect cancels it; SIGTERM answers shutting_down and exits"
    )
    func perfLifecycle() async throws {
        let dirs = try (0..<2).map { _ in try Self.temporaryDirectory() }
        defer { for dir in dirs { try? FileManager.default.removeItem(atPath: dir) } }
        var nodes: [Node] = []
        do {
            for dir in dirs {
                let (process, ready) = try await Self.startDaemon(dir, Self.perfArguments)
                nodes.append(try Node(process, ready: ready))
            }
            let (a, b) = (nodes[0], nodes[1])
            #expect(Self.kind(try a.call("connect", #"{"addr":"\#(b.address)"}"#)) == nil)
            for (upload, download) in [
                ("18446744073709551615", "0"), ("1073741825", "0"), ("0", "1073741825"), ("1.5", "0"), ("0", "\"1\""),
                ("-1", "0"),
            ] {
                let refused = try a.call(
                    "perf", #"{"target":"\#(b.peer)","upload":\#(upload),"download":\#(download)}"#)
                #expect(
                    Self.code(refused) == -32602 && Self.kind(refused) == "invalid_params",
                    "\(upload) \(download): \(refused)")
            }
            let big =
                #"{"jsonrpc":"2.0","id":7,"method":"perf","params":{"target":"\#(b.peer)","upload":1073741824,"download":1073741824}}"#

            // The client goes away: the perf stream is reset at once, on both daemons.
            #expect(try await a.waitForStreams(to: b.peer, within: .seconds(10)) { $0 == 0 })
            let leaving = try SpecClient(a.socket)
            try leaving.send(big + "\n")
            #expect(try await a.waitForStreams(to: b.peer, within: .seconds(10)) { ($0 ?? 0) >= 1 })
            leaving.close()
            #expect(try await a.waitForStreams(to: b.peer, within: .seconds(3)) { $0 == 0 })
            #expect(try await b.waitForStreams(to: a.peer, within: .seconds(3)) { $0 == 0 })

            // SIGTERM with a perf in flight: the request is answered shutting_down, the daemon exits.
            // (Without a perf left over from above, so that the stream seen next is this one.)
            #expect(try await a.waitForStreams(to: b.peer, within: .seconds(60)) { $0 == 0 })
            let staying = try SpecClient(a.socket)
            try staying.send(big + "\n")
            #expect(try await a.waitForStreams(to: b.peer, within: .seconds(10)) { ($0 ?? 0) >= 1 })
            let clock = ContinuousClock()
            let signalled = clock.now
            a.process.signal(SIGTERM)
            let line = try #require(try staying.readLine(), "EOF instead of an answer")
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(Self.code(answer) == -32000 && Self.kind(answer) == "shutting_down", "\(line)")
            #expect(answer["id"] as? Int == 7)
            #expect(try staying.readLine() == nil)
            #expect(await a.process.waitForExit() == 0)
            let exited = clock.now - signalled
            #expect(exited < .seconds(3), "\(exited)")
        } catch {
            for node in nodes { await node.process.stop() }
            throw error
        }
        for node in nodes { await node.process.stop() }
    }

    @Test("numbers, framing, keys, errors and the socket path, as the spec states them")
    func oneDaemon() async throws {
        let top = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: top) }
        // §1: DATA_DIR/agentd.sock of 103 bytes, the limit. (A temporary path DATA_DIR/.agentd-XXXXXX/s
        // used to have to fit as well, which made 98 bytes the real limit.)
        let dir = top + "/" + String(repeating: "d", count: 103 - "/agentd.sock".utf8.count - top.utf8.count - 1)
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let socket = dir + "/agentd.sock"
        #expect(socket.utf8.count == 103)
        let (process, ready) = try await Self.startDaemon(dir)
        do {
            let node = try Node(process, ready: ready)
            #expect(node.socket == socket)

            // §4: ids are echoed exactly up to 64 bits; beyond is a parse error, not a rounded double.
            let client = try SpecClient(socket)
            try client.send(#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"id"}"# + "\n")
            #expect(try client.readLine()?.contains(#""id":18446744073709551615,"#) == true)
            try client.send(#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"id"}"# + "\n")
            let huge = try #require(try client.readLine())
            #expect(huge.hasPrefix(#"{"error":{"code":-32700,"#) && huge.contains(#""id":null"#), "\(huge)")
            try client.send(#"{"jsonrpc":"2.0","id":1,"method":"echo","params":[-9223372036854775809]}"# + "\n")
            #expect(try client.readLine()?.contains(#""code":-32700"#) == true)

            // §8.1: count is an integer from 1 to 1000, never silently 1.
            for count in ["1.5", #""3""#, "true", "0", "1001"] {
                let refused = try node.call("ping", #"{"target":"\#(node.peer)","count":\#(count)}"#)
                #expect(Self.code(refused) == -32602 && Self.kind(refused) == "invalid_params", "\(count): \(refused)")
            }

            // §8.4: a key over the kad limit is refused before any lookup; one at the limit runs.
            let long = try node.call("dht.get_closest", #"{"key":"\#(String(repeating: "k", count: 4096))"}"#)
            #expect(Self.code(long) == -32602 && Self.kind(long) == "invalid_params", "\(long)")
            let atLimit = try node.call("dht.get_closest", #"{"key":"\#(String(repeating: "k", count: 1024))"}"#)
            #expect((atLimit["result"] as? [String: Any])?["termination"] as? String == "exhausted", "\(atLimit)")

            // §4's example and §8.3 agree on the not_found message.
            let missing = try node.call("resolve", #"{"name":"nobody.agent"}"#)
            #expect(Self.code(missing) == -32001 && Self.kind(missing) == "not_found")
            let message = ((missing["error"] as? [String: Any])?["data"] as? [String: Any])?["message"] as? String ?? ""
            #expect(message.hasPrefix("nobody.agent not found: no valid record (asked "), "\(message)")

            // §2: 1 MiB + 1 byte, then EOF before the newline: answered line_too_long, then closed.
            let longLine = try SpecClient(socket)
            try longLine.send(bytes: [UInt8](repeating: UInt8(ascii: "a"), count: (1 << 20) + 1))
            longLine.shutdownWrite()
            let tooLong = try #require(try longLine.readLine(), "closed without an answer")
            #expect(tooLong.contains(#""kind":"line_too_long""#) && tooLong.contains(#""id":null"#), "\(tooLong)")
            #expect(try longLine.readLine() == nil)

            // §7: agentctl --json errors are one line.
            let failed = try await ProcessRunner.run(
                ProcessRunner.executable("agentctl"), ["resolve", "nobody.agent", "--data-dir", dir, "--json"])
            #expect(failed.status == 1)
            #expect(
                failed.stderr.hasPrefix(#"{"error":{"#) && failed.stderr.filter { $0 == "\n" }.count == 1,
                "\(failed.stderr)")
        } catch {
            await process.stop()
            throw error
        }
        process.signal(SIGTERM)
        #expect(await process.waitForExit() == 0)
        #expect(!FileManager.default.fileExists(atPath: socket))
    }
}

/// A blocking line client on a Unix socket, with a receive timeout: what a script written from the
/// spec does, no client library in between.
final class SpecClient {
    private var descriptor: Int32
    private var buffer: [UInt8] = []

    init(_ path: String, timeout seconds: Int = 30) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw VectorError("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw VectorError("connect \(path): errno \(code)")
        }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    func send(_ text: String) throws { try send(bytes: Array(text.utf8)) }

    func send(bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw VectorError("send: errno \(errno)") }
            offset += written
        }
    }

    /// The next line without its newline; `nil` at EOF. Throws when nothing comes within the timeout.
    func readLine() throws -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count == 0 { return nil }
            if count < 0 {
                if errno == ECONNRESET { return nil }
                throw VectorError("recv: errno \(errno) (no answer in time?)")
            }
            buffer += chunk[..<count]
        }
    }

    /// Sends one request line and returns the answer parsed.
    func call(_ line: String) throws -> [String: Any] {
        try send(line + "\n")
        let answer = try #require(try readLine(), "the daemon closed the connection")
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any])
    }

    func shutdownWrite() { shutdown(descriptor, Int32(SHUT_WR)) }

    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }
}
