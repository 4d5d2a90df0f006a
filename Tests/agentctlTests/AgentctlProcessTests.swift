import AgentTesting
import Foundation
import Identity
import Resolution
import Testing

/// `agentctl` and `agentd` run as real processes, as a user runs them.
@Suite("agentctl offline commands, run as a process")
struct AgentctlProcessTests {
    let agentctl = ProcessRunner.executable("agentctl")

    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("agentctl-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func run(_ arguments: String..., environment: [String: String] = [:], stdin: [UInt8]? = nil) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(agentctl, arguments, environment: environment, stdin: stdin)
    }

    @Test("identity new creates a 0600 key file and prints its ids; show prints the same; no overwrite without --force")
    func identity() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let created = try await run("identity", "new", "--data-dir", dir, "--json")
        #expect(created.status == 0, "\(created.stderr)")
        let createdJSON = try created.json()
        let peerID = try #require(createdJSON["peer_id"] as? String)
        #expect(peerID.hasPrefix("12D3KooW"))
        #expect((createdJSON["did"] as? String)?.hasPrefix("did:key:z6Mk") == true)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/identity.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)

        let shown = try await run("identity", "show", "--data-dir", dir, "--json")
        #expect(shown.status == 0)
        let shownJSON = try shown.json()
        #expect(shownJSON["peer_id"] as? String == peerID)
        let publicKeyText = try #require(shownJSON["public_key"] as? String)
        let publicKey = try #require(Data(base64Encoded: publicKeyText))
        #expect(publicKey.count == 32)
        #expect(PeerID(publicKey: try Ed25519.PublicKey(rawRepresentation: Array(publicKey))).description == peerID)

        let again = try await run("identity", "new", "--data-dir", dir)
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"))
        #expect(try await run("identity", "show", "--data-dir", dir, "--json").json()["peer_id"] as? String == peerID)

        let forced = try await run("identity", "new", "--data-dir", dir, "--force", "--json")
        #expect(forced.status == 0)
        #expect(try forced.json()["peer_id"] as? String != peerID)

        // Human output names the peer id too.
        let human = try await run("identity", "show", "--data-dir", dir)
        #expect(human.stdoutText.contains("peer id:"))
    }

    @Test("AGENTD_HOME is the default data directory")
    func agentdHome() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try await run("identity", "new", environment: ["AGENTD_HOME": dir]).status == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/identity.key"))
    }

    @Test("a key file readable by others is refused with the chmod fix; missing identity is exit 1 with a hint")
    func insecureKeyFile() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let missing = try await run("identity", "show", "--data-dir", dir)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("agentctl identity new"))
        #expect(try await run("identity", "new", "--data-dir", dir).status == 0)
        chmod(dir + "/identity.key", 0o644)
        let refused = try await run("identity", "show", "--data-dir", dir, "--json")
        #expect(refused.status == 1)
        let error = try #require(try refused.errorJSON()["error"] as? [String: Any])
        #expect(error["kind"] as? String == "insecure_key_file")
        #expect((error["message"] as? String)?.contains("chmod 600") == true)
    }

    @Test("record create then verify; a tampered file exits 2 with the reason")
    func recordCreateVerify() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try await run("identity", "new", "--data-dir", dir).status == 0)
        let file = dir + "/alice.rec"
        let created = try await run(
            "record", "create", "--name", "Alice", "--address", "/ip4/127.0.0.1/tcp/4001", "--address", "/ip6/::1/tcp/4001",
            "--protocol", "/agent/msg/1.0.0", "--ttl", "3600", "--seq", "7", "--data-dir", dir, "--out", file, "--json")
        #expect(created.status == 0, "\(created.stderr)")
        let createdJSON = try created.json()
        #expect(createdJSON["name"] as? String == "alice.agent")
        #expect(createdJSON["seq"] as? Int == 7)
        // Times as RFC 3339 UTC with milliseconds, the integer beside it.
        let timestampText = try #require(createdJSON["timestamp"] as? String)
        #expect(timestampText.count == 24 && timestampText.hasSuffix(".000Z"))
        #expect(createdJSON["timestamp_unix"] is Int)

        let verified = try await run("record", "verify", file)
        #expect(verified.status == 0, "\(verified.stderr)")
        let json = try verified.json()
        #expect(json["name"] as? String == "alice.agent")
        #expect(json["addresses"] as? [String] == ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"])
        #expect(json["protocols"] as? [String] == ["/agent/msg/1.0.0"])
        #expect(json["peer_id"] as? String == createdJSON["peer_id"] as? String)
        #expect(json["valid"] as? Bool == true)

        // The same record through stdin, and the bytes decode in-process to the same record.
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: file)))
        #expect(try await run("record", "verify", "-", stdin: bytes).status == 0)
        #expect(try SignedAgentRecord(bytes: bytes).record.seq == 7)

        // Flip one byte of the port: the signature no longer covers the content.
        var tampered = bytes
        let port = try #require(tampered.firstRange(of: [0x06, 0x0f, 0xa1]))
        tampered[port.lowerBound + 2] = 0xa2
        try Data(tampered).write(to: URL(fileURLWithPath: file))
        let rejected = try await run("record", "verify", file)
        #expect(rejected.status == 2)
        #expect(rejected.stderr.contains("does not carry a valid signature"))
        let rejectedJSON = try await run("record", "verify", file, "--json")
        #expect(rejectedJSON.status == 2)
        #expect((try rejectedJSON.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "bad_signature")

        // Truncated and garbage files are clear errors too, never a crash.
        try Data(bytes.prefix(40)).write(to: URL(fileURLWithPath: file))
        let truncated = try await run("record", "verify", file)
        #expect(truncated.status == 2)
        #expect(truncated.stderr.contains("record ends"))
        try Data(repeating: 0xff, count: 9000).write(to: URL(fileURLWithPath: file))
        #expect(try await run("record", "verify", file).status == 2)
    }

    @Test("an expired record is refused at verify time; --now checks at another time")
    func expired() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try await run("identity", "new", "--data-dir", dir).status == 0)
        let file = dir + "/old.rec"
        let created = try await run(
            "record", "create", "--name", "bob", "--ttl", "60", "--timestamp", "1767225600", "--data-dir", dir, "--out", file)
        #expect(created.status == 0, "\(created.stderr)")
        let rejected = try await run("record", "verify", file, "--json")
        #expect(rejected.status == 2)
        #expect((try rejected.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "too_old")
        #expect(try await run("record", "verify", file, "--now", "1767225630").status == 0)
        let expired = try await run("record", "verify", file, "--now", "1767225700", "--json")
        #expect((try expired.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "expired")
    }

    @Test("rotation: a record endorsed by the previous key verifies")
    func rotation() async throws {
        let old = try temporaryDirectory()
        let new = try temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: old)
            try? FileManager.default.removeItem(atPath: new)
        }
        #expect(try await run("identity", "new", "--data-dir", old).status == 0)
        #expect(try await run("identity", "new", "--data-dir", new).status == 0)
        let created = try await run(
            "record", "create", "--name", "carol", "--rotate-from", old + "/identity.key", "--data-dir", new, "--json")
        #expect(created.status == 0, "\(created.stderr)")
        let json = try created.json()
        let oldID = try await run("identity", "show", "--data-dir", old, "--json").json()["peer_id"] as? String
        #expect((json["rotation"] as? [String: Any])?["previous_peer_id"] as? String == oldID)
        let recordText = try #require(json["record_base64"] as? String)
        let bytes = Array(try #require(Data(base64Encoded: recordText)))
        #expect(try await run("record", "verify", "-", stdin: bytes).status == 0)
    }

    @Test(
        "bad arguments exit 2 with a message, never a crash",
        arguments: [
            ["record", "create", "--name", "bad_name"],
            ["record", "create", "--name", "ok", "--address", "/ip4/999.1.1.1/tcp/1"],
            ["record", "create", "--name", "ok", "--ttl", "10"],
            ["record", "create", "--name", "ok", "--ttl", "-5"],
            ["record", "create"],
            ["record", "verify"],
            ["identity", "frobnicate"],
            ["--no-such-flag"],
        ])
    func badArguments(arguments: [String]) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try await run("identity", "new", "--data-dir", dir).status == 0)
        let extra = arguments.first == "record" && arguments.count > 2 ? ["--data-dir", dir] : []
        let result = try await ProcessRunner.run(agentctl, arguments + extra)
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(!result.stderr.isEmpty)
    }

    @Test("--help exits 0 for agentctl and agentd; agentd --help says what the daemon does")
    func help() async throws {
        let ctl = try await run("--help")
        #expect(ctl.status == 0)
        #expect(ctl.stdoutText.contains("identity"))
        let daemon = try await ProcessRunner.run(ProcessRunner.executable("agentd"), ["--help"])
        #expect(daemon.status == 0)
        #expect(daemon.stdoutText.contains("Kademlia"))
        #expect(daemon.stdoutText.contains("--data-dir"))
    }

    @Test("bootstrap check validates files")
    func bootstrapCheck() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good.json"
        try Data(#"{"version":1,"peers":[{"peer_id":"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA","addrs":["/ip4/127.0.0.1/tcp/4001"]}]}"#.utf8)
            .write(to: URL(fileURLWithPath: good))
        let ok = try await run("bootstrap", "check", good, "--json")
        #expect(ok.status == 0)
        #expect((try ok.json()["peers"] as? [[String: Any]])?.count == 1)
        let bad = dir + "/bad.json"
        try Data(#"{"version":3,"peers":[]}"#.utf8).write(to: URL(fileURLWithPath: bad))
        let refused = try await run("bootstrap", "check", bad)
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("version 3"))
        #expect(try await run("bootstrap", "check", dir + "/missing.json").status == 1)
    }
}
