import AgentTesting
import Foundation
import Testing

/// Agent messages across real agentd processes, driven by agentctl (issue #12): direct delivery,
/// mailboxes while the recipient is stopped (with a replica SIGKILLed), requests answered by
/// `reply`, and the file mode.
@Suite("messages across agentd processes", .serialized, .timeLimit(.minutes(3)))
struct MessageProcessTests {
    /// A network of agentd processes on loopback that can stop, kill and restart its members.
    final class Network: @unchecked Sendable {
        // @unchecked: used by one test task at a time (the suite is serialized and each test owns
        // its network); the arrays are only touched from that task.
        let base: String
        var processes: [Int: JSONLineProcess] = [:]
        var peerIDs: [Int: String] = [:]
        var extraArguments: [Int: [String]] = [:]

        init() throws {
            base = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-msg-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/no-peers.json"))
            try Data(DHTProcessTests.loopbackLimits.utf8).write(to: URL(fileURLWithPath: base + "/limits.json"))
        }

        func dataDir(_ index: Int) -> String { base + "/node-\(index)" }

        /// Starts node `index` (node 1 alone, the others bootstrapping from node 1) with
        /// `--name node-INDEX`, and waits for its ready line.
        func start(_ index: Int) async throws {
            let bootstrap = index == 1 ? base + "/no-peers.json" : base + "/bootstrap-nodes.json"
            let process = try JSONLineProcess(
                executable: ProcessRunner.executable("agentd"),
                arguments: [
                    "--data-dir", dataDir(index), "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap,
                    "--name", "node-\(index)", "--log-level", "warning", "--limits", base + "/limits.json",
                ] + (extraArguments[index] ?? []))
            processes[index] = process
            let ready: PyEvent
            do {
                ready = try await process.waitFor("ready", timeout: .seconds(20))
            } catch {
                throw VectorError("agentd node-\(index) (pid \(process.pid)) printed no ready line: \(error)")
            }
            let peerID = try #require(ready["peer_id"] as? String)
            peerIDs[index] = peerID
            if index == 1 {
                let address = try #require((ready["addrs"] as? [String])?.first)
                let list: [String: Any] = ["version": 1, "peers": [["peer_id": peerID, "addrs": [address]]]]
                try JSONSerialization.data(withJSONObject: list).write(to: URL(fileURLWithPath: base + "/bootstrap-nodes.json"))
            }
        }

        /// SIGTERM (a clean stop) or SIGKILL, by PID, and waits for the exit.
        func stop(_ index: Int, signal: Int32 = SIGTERM) async {
            guard let process = processes.removeValue(forKey: index) else { return }
            process.signal(signal)
            await process.stop()
        }

        func index(of peerID: String) -> Int? { peerIDs.first { $0.value == peerID }?.key }

        func agentctl(_ index: Int, _ arguments: [String], timeout: Int = 20) async throws -> ProcessRunner.Result {
            try await ProcessRunner.run(
                ProcessRunner.executable("agentctl"), arguments + ["--data-dir", dataDir(index), "--timeout", "\(timeout)"])
        }

        func inbox(_ index: Int) async throws -> [[String: Any]] {
            let result = try await agentctl(index, ["inbox", "--json"])
            guard result.status == 0 else { throw VectorError("inbox of node-\(index): \(result.stderr)") }
            return try result.json()["messages"] as? [[String: Any]] ?? []
        }

        /// Polls `body` every 100 ms until it returns true or `timeout` passes.
        func eventually(_ what: String, timeout: Duration = .seconds(30), _ body: () async throws -> Bool) async throws {
            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            while try await !body() {
                guard clock.now < deadline else { throw VectorError("timed out after \(timeout) waiting for \(what)") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        func shutdown() async {
            for index in Array(processes.keys) { await stop(index) }
            try? FileManager.default.removeItem(atPath: base)
        }
    }

    static func withNetwork(of count: Int, extra: [Int: [String]] = [:], _ body: (Network) async throws -> Void) async throws {
        let network = try Network()
        network.extraArguments = extra
        do {
            for index in 1...count { try await network.start(index) }
            try await body(network)
        } catch {
            await network.shutdown()
            throw error
        }
        await network.shutdown()
    }

    static func texts(_ messages: [[String: Any]]) -> [String] { messages.compactMap { $0["content"] as? String } }

    @Test("direct: send, inbox, ack; a request with --wait-response is answered by reply; bad input exits 2")
    func directAndRequest() async throws {
        try await Self.withNetwork(of: 3) { network in
            let sent = try await network.agentctl(2, ["send", "node-3.agent", "hello bob", "--json"])
            #expect(sent.status == 0, "\(sent.stderr)")
            let result = try sent.json()
            #expect(result["delivery"] as? String == "direct")
            let id = try #require(result["id"] as? String)
            let inbox = try await network.inbox(3)
            #expect(Self.texts(inbox) == ["hello bob"])
            #expect(inbox.first?["id"] as? String == id)
            #expect(inbox.first?["sender"] as? String == "node-2.agent")
            #expect(inbox.first?["recipient"] as? String == "node-3.agent")
            #expect(inbox.first?["type"] as? String == "notification")
            #expect(try await network.agentctl(3, ["ack", id]).status == 0)
            #expect(try await network.inbox(3).isEmpty)

            // A request: node-3 answers with reply while node-2's send waits for the response.
            let requester = Task.detached { try await network.agentctl(2, ["send", "node-3.agent", "ping?", "--wait-response", "20", "--json"]) }
            var requestID: String?
            try await network.eventually("the request in node-3's inbox") {
                requestID = try await network.inbox(3).first { $0["type"] as? String == "request" }?["id"] as? String
                return requestID != nil
            }
            let reply = try await network.agentctl(3, ["reply", try #require(requestID), "pong!", "--json"])
            #expect(reply.status == 0, "\(reply.stderr)")
            let answered = try await requester.value
            #expect(answered.status == 0, "\(answered.stderr)")
            let response = try #require(try answered.json()["response"] as? [String: Any])
            #expect(response["content"] as? String == "pong!")
            #expect(response["in_reply_to"] as? String == requestID)
            #expect(response["type"] as? String == "response")

            // No answer: exit 1 after the wait.
            let unanswered = try await network.agentctl(2, ["send", "node-3.agent", "anyone?", "--wait-response", "1", "--json"])
            #expect(unanswered.status == 1)
            // Bad input: exit 2 with the reason.
            #expect(try await network.agentctl(2, ["send", "not a name!", "x"]).status == 2)
            #expect(try await network.agentctl(2, ["send", "node-3.agent"]).status == 2)
            #expect(try await network.agentctl(2, ["send", "node-3.agent", "--json-content", "{oops"]).status == 2)
            #expect(try await network.agentctl(2, ["send", "node-3.agent", "x", "--from", "someone-else.agent"]).status == 2)
            // A blocked sender is refused (exit 1), and accepted again after unblock.
            #expect(try await network.agentctl(3, ["block", "node-2.agent"]).status == 0)
            let refused = try await network.agentctl(2, ["send", "node-3.agent", "let me in", "--json"])
            #expect(refused.status == 1)
            #expect((try refused.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "refused", "\(refused.stderr)")
            #expect(try await network.agentctl(3, ["unblock", "node-2.agent"]).status == 0)
            #expect(try await network.agentctl(2, ["send", "node-3.agent", "thanks"]).status == 0)
            // A name without a record: cannot be accepted at all, exit 1.
            let nobody = try await network.agentctl(2, ["send", "nobody.agent", "x", "--json"])
            #expect(nobody.status == 1)
            #expect((try nobody.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "unreachable", "\(nobody.stderr)")
        }
    }

    @Test("recipient stopped: mailbox; a replica SIGKILLed; the recipient restarts and gets every message in order, once")
    func mailboxAcrossRestart() async throws {
        try await Self.withNetwork(of: 6) { network in
            await network.stop(3)
            var replicas = Set<String>()
            var ids: [String] = []
            for text in ["one", "two", "three"] {
                let sent = try await network.agentctl(2, ["send", "node-3.agent", text, "--json"], timeout: 60)
                #expect(sent.status == 0, "\(sent.stderr)")
                let result = try sent.json()
                #expect(result["delivery"] as? String == "mailbox")
                #expect((result["replicas"] as? Int ?? 0) >= 2)
                replicas.formUnion(result["stored_at"] as? [String] ?? [])
                ids.append(try #require(result["id"] as? String))
            }
            let status = try await network.agentctl(2, ["status", ids[0], "--json"])
            #expect(try status.json()["status"] as? String == "stored")
            // Kill one replica that is neither the sender nor the bootstrap node, if one is.
            let victim = replicas.compactMap(network.index(of:)).filter { $0 != 1 && $0 != 2 }.sorted().first
            let killed = try #require(victim, "no replica other than nodes 1 and 2 among \(replicas)")
            await network.stop(killed, signal: SIGKILL)
            try await network.start(3)
            try await network.eventually("three messages in node-3's inbox") { try await network.inbox(3).count >= 3 }
            let inbox = try await network.inbox(3)
            #expect(Self.texts(inbox) == ["one", "two", "three"])
            #expect(inbox.compactMap { $0["id"] as? String } == ids)
            // A restart drains again: nothing comes twice.
            await network.stop(3)
            try await network.start(3)
            try await Task.sleep(for: .seconds(2))
            await #expect(Self.texts(try network.inbox(3)) == ["one", "two", "three"])
        }
    }

    @Test("file mode: outbox lines are sent once, results in sent.jsonl, received messages appended to inbox.jsonl, across a restart")
    func fileMode() async throws {
        let inboxDir = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-files-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: inboxDir) }
        try await Self.withNetwork(of: 3, extra: [3: ["--inbox-dir", inboxDir]]) { network in
            func lines(_ file: String) throws -> [[String: Any]] {
                let data = (try? Data(contentsOf: URL(fileURLWithPath: inboxDir + "/" + file))) ?? Data()
                return try data.split(separator: UInt8(ascii: "\n")).map {
                    try #require(try JSONSerialization.jsonObject(with: Data($0)) as? [String: Any])
                }
            }
            // Received: appended to inbox.jsonl.
            #expect(try await network.agentctl(2, ["send", "node-3.agent", "to a file"]).status == 0)
            try await network.eventually("inbox.jsonl") { try lines("inbox.jsonl").count == 1 }
            #expect(Self.texts(try lines("inbox.jsonl")) == ["to a file"])
            // Sent: each outbox line once, with its result; a malformed line gets an error result.
            let outbox = FileHandle(forWritingAtPath: inboxDir + "/outbox.jsonl")!
            outbox.seekToEndOfFile()
            outbox.write(Data(#"{"to":"node-2.agent","content":"from a file"}"# .utf8 + [0x0a]))
            outbox.write(Data(#"{"to":"node-2.agent","content":{"n":1},"media_type":"application/json"}"# .utf8 + [0x0a]))
            outbox.write(Data("not json\n".utf8))
            try await network.eventually("sent.jsonl") { try lines("sent.jsonl").count == 3 }
            let sent = try lines("sent.jsonl")
            #expect(sent.map { $0["line"] as? Int } == [1, 2, 3])
            #expect(sent[0]["delivery"] as? String == "direct")
            #expect(sent[1]["delivery"] as? String == "direct")
            #expect((sent[2]["error"] as? [String: Any])?["kind"] as? String == "malformed")
            // Restart: nothing sent twice, a line written meanwhile is sent.
            await network.stop(3)
            outbox.write(Data(#"{"to":"node-2.agent","content":"after the restart"}"# .utf8 + [0x0a]))
            try outbox.close()
            try await network.start(3)
            try await network.eventually("the fourth result") { try lines("sent.jsonl").count == 4 }
            #expect(try lines("sent.jsonl").map { $0["line"] as? Int } == [1, 2, 3, 4])
            try await network.eventually("node-2's inbox") { try await network.inbox(2).count == 3 }
            let texts = try await network.inbox(2).map { $0["content"] as? String ?? "\($0["content"] ?? "")" }
            #expect(texts.count == 3)
            #expect(texts.first == "from a file")
            #expect(texts.last == "after the restart")
            #expect(try lines("inbox.jsonl").count == 1)
            // In file mode the file is the inbox: the daemon's inbox is empty.
            #expect(try await network.inbox(3).isEmpty)
        }
    }
}
