import AgentTesting
import Foundation
import Testing

/// Real `agentd` processes driven by real `agentctl` processes, as a user runs them.
@Suite("agentd and agentctl as processes", .serialized, .timeLimit(.minutes(2)))
struct DaemonProcessTests {
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-proc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func startDaemon(_ dataDir: String, _ extra: [String] = []) async throws -> (JSONLineProcess, PyEvent) {
        let daemon = try JSONLineProcess(
            executable: ProcessRunner.executable("agentd"),
            arguments: ["--data-dir", dataDir, "--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "warning"] + extra)
        let ready = try await daemon.waitFor("ready", timeout: .seconds(20))
        return (daemon, ready)
    }

    func agentctl(_ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(ProcessRunner.executable("agentctl"), arguments)
    }

    @Test("a name registered with agentctl is published again after a restart, until unregister")
    func registrationSurvivesRestart() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func names(_ daemon: JSONLineProcess) async throws -> [String: [String: Any]] {
            let result = try await agentctl("names", "--data-dir", dir, "--json")
            #expect(result.status == 0, "\(result.stderr)")
            let list = try #require(try result.json()["names"] as? [[String: Any]])
            return Dictionary(uniqueKeysWithValues: list.map { ($0["name"] as? String ?? "?", $0) })
        }
        func restart(_ daemon: JSONLineProcess) async throws -> JSONLineProcess {
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit() == 0)
            return try await Self.startDaemon(dir).0
        }

        var daemon = try await Self.startDaemon(dir).0
        do {
            let registered = try await agentctl(
                "register", "keeper", "--protocol", "/chat/1.0.0", "--ttl", "3600", "--data-dir", dir, "--json")
            #expect(registered.status == 0, "\(registered.stderr)")
            let firstSeq = try #require(try registered.json()["seq"] as? Int)
            let listed = try await names(daemon)
            #expect(listed["keeper.agent"]?["persistent"] as? Bool == true)
            #expect(listed["keeper.agent"]?["published"] as? Bool == true)
            // The self-certifying name is published each start, not saved.
            #expect(listed.values.contains { $0["persistent"] as? Bool == false })

            daemon = try await restart(daemon)
            let afterRestart = try #require(try await names(daemon)["keeper.agent"])
            #expect(afterRestart["persistent"] as? Bool == true)
            #expect((afterRestart["seq"] as? Int ?? 0) > firstSeq)
            #expect(afterRestart["protocols"] as? [String] == ["/chat/1.0.0"])
            let human = try await agentctl("names", "--data-dir", dir)
            #expect(human.stdoutText.contains("keeper.agent") && human.stdoutText.contains("(persistent)"))

            let unregistered = try await agentctl("unregister", "keeper.agent", "--data-dir", dir)
            #expect(unregistered.status == 0, "\(unregistered.stderr)")
            #expect(unregistered.stdoutText.contains("no longer published"))
            let again = try await agentctl("unregister", "keeper", "--data-dir", dir, "--json")
            #expect(try again.json()["was_registered"] as? Bool == false)
            #expect(try await names(daemon)["keeper.agent"] == nil)
            #expect(try await agentctl("unregister", "not a name!", "--data-dir", dir).status == 2)

            daemon = try await restart(daemon)
            #expect(try await names(daemon)["keeper.agent"] == nil)
        } catch {
            await daemon.stop()
            throw error
        }
        daemon.signal(SIGTERM)
        #expect(await daemon.waitForExit() == 0)
    }

    @Test("block and unblock: refused at accept and at dial, kept across a restart; limits shows usage and refusals")
    func denyList() async throws {
        let dirA = try Self.temporaryDirectory()
        let dirB = try Self.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: dirA)
            try? FileManager.default.removeItem(atPath: dirB)
        }
        var (a, readyA) = try await Self.startDaemon(dirA)
        let (b, readyB) = try await Self.startDaemon(dirB)
        do {
            let addrA = try #require((readyA["addrs"] as? [String])?.first)
            let peerB = try #require(readyB["peer_id"] as? String)
            let addrB = try #require((readyB["addrs"] as? [String])?.first)

            let blocked = try await agentctl("block", peerB, "--data-dir", dirA, "--json")
            #expect(blocked.status == 0, "\(blocked.stderr)")
            #expect(try blocked.json()["added"] as? Bool == true)
            // At dial: a clear error.
            let dial = try await agentctl("connect", addrB, "--data-dir", dirA)
            #expect(dial.status == 1)
            #expect(dial.stderr.contains("blocked"))
            // At accept, once B's peer id is known: refused, counted, never listed.
            _ = try await agentctl("connect", addrA, "--data-dir", dirB)
            var denied = 0
            for _ in 0..<50 where denied == 0 {
                denied = try await agentctl("limits", "--data-dir", dirA, "--json").json()["denied"] as? Int ?? 0
                if denied == 0 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(denied >= 1)
            let peers = try await agentctl("peers", "--data-dir", dirA, "--json").json()["peers"] as? [[String: Any]] ?? []
            #expect(!peers.contains { $0["peer_id"] as? String == peerB })

            // Kept across a restart, in a private file.
            a.signal(SIGTERM)
            #expect(await a.waitForExit() == 0)
            let mode = try FileManager.default.attributesOfItem(atPath: dirA + "/denylist")[.posixPermissions] as? Int
            #expect(mode == 0o600)
            (a, readyA) = try await Self.startDaemon(dirA)
            let limits = try await agentctl("limits", "--data-dir", dirA, "--json").json()
            #expect(limits["blocked"] as? [String] == [peerB])
            let rows = try #require(limits["scopes"] as? [[String: Any]])
            #expect(rows.contains { $0["scope"] as? String == "ip" && $0["resource"] as? String == "connections" && $0["limit"] as? Int == 8 })
            #expect(rows.allSatisfy { $0["used"] is Int && $0["refused"] is Int })
            #expect(try await agentctl("connect", addrB, "--data-dir", dirA).status == 1)

            // Unblocked: the dial works again.
            let unblocked = try await agentctl("unblock", peerB, "--data-dir", dirA, "--json")
            #expect(try unblocked.json()["removed"] as? Bool == true)
            let connected = try await agentctl("connect", addrB, "--data-dir", dirA)
            #expect(connected.status == 0, "\(connected.stderr)")

            // A network: the live connection closes, and B's dial is refused at accept.
            #expect(try await agentctl("block", "127.0.0.1/8", "--data-dir", dirA).status == 2)  // host bits set
            #expect(try await agentctl("block", "not-a-peer", "--data-dir", dirA).status == 2)
            #expect(try await agentctl("block", "127.0.0.0/8", "--data-dir", dirA).status == 0)
            let after = try await agentctl("peers", "--data-dir", dirA, "--json").json()["peers"] as? [[String: Any]] ?? []
            #expect(after.isEmpty)
            #expect(try await agentctl("connect", addrA, "--data-dir", dirB).status == 1)
            let human = try await agentctl("limits", "--data-dir", dirA)
            #expect(human.stdoutText.contains("pending_handshakes") && human.stdoutText.contains("127.0.0.0/8"))
        } catch {
            await a.stop()
            await b.stop()
            throw error
        }
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(await a.waitForExit() == 0)
        #expect(await b.waitForExit() == 0)
    }

    @Test("two daemons side by side: id, connect, ping, peers, perf; clean shutdown on SIGTERM")
    func twoDaemons() async throws {
        let dirA = try Self.temporaryDirectory()
        let dirB = try Self.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: dirA)
            try? FileManager.default.removeItem(atPath: dirB)
        }
        let (a, readyA) = try await Self.startDaemon(dirA)
        // b serves perf (off by default).
        let (b, readyB) = try await Self.startDaemon(dirB, ["--perf"])
        do {
            #expect(readyA["api"] as? String == dirA + "/agentd.sock")
            let peerB = try #require(readyB["peer_id"] as? String)
            let addrB = try #require((readyB["addrs"] as? [String])?.first)
            #expect(addrB.hasSuffix("/p2p/" + peerB))
            let socketMode = try FileManager.default.attributesOfItem(atPath: dirA + "/agentd.sock")[.posixPermissions] as? Int
            #expect(socketMode == 0o600)

            let id = try await agentctl("id", "--data-dir", dirA, "--json")
            #expect(id.status == 0, "\(id.stderr)")
            #expect(try id.json()["peer_id"] as? String == readyA["peer_id"] as? String)
            #expect((try id.json()["protocols"] as? [String] ?? []).contains("/ipfs/ping/1.0.0"))

            let connect = try await agentctl("connect", addrB, "--data-dir", dirA, "--json")
            #expect(connect.status == 0, "\(connect.stderr)")
            #expect(try connect.json()["peer_id"] as? String == peerB)

            let ping = try await agentctl("ping", peerB, "--count", "3", "--data-dir", dirA, "--json")
            #expect(ping.status == 0, "\(ping.stderr)")
            #expect((try ping.json()["rtts_ms"] as? [Double])?.count == 3)
            let humanPing = try await agentctl("ping", addrB, "--count", "2", "--data-dir", dirA)
            #expect(humanPing.stdoutText.contains("pong from \(peerB)"))

            let peers = try await agentctl("peers", "--data-dir", dirA, "--json")
            let listed = try #require(try peers.json()["peers"] as? [[String: Any]])
            #expect(listed.contains { $0["peer_id"] as? String == peerB && $0["direction"] as? String == "outbound" })
            let peersOfB = try await agentctl("peers", "--data-dir", dirB, "--json")
            #expect((try peersOfB.json()["peers"] as? [[String: Any]])?.first?["direction"] as? String == "inbound")

            let perf = try await agentctl("perf", addrB, "--upload", "2000000", "--download", "3000000", "--data-dir", dirA, "--json")
            #expect(perf.status == 0, "\(perf.stderr)")
            let perfJSON = try perf.json()
            #expect(perfJSON["upload_bytes"] as? Int == 2_000_000)
            #expect(perfJSON["download_bytes"] as? Int == 3_000_000)
            #expect((perfJSON["download_bytes_per_second"] as? Double ?? 0) > 0)
            #expect(perfJSON["upload_seconds"] != nil)

            // Failures: a peer that is not there (1), a bad target (2).
            let refused = try await agentctl(
                "ping", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "--data-dir", dirA)
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("refused"))
            #expect(try await agentctl("ping", "not-a-peer", "--data-dir", dirA).status == 2)
            #expect(try await agentctl("ping", addrB, "--count", "0", "--data-dir", dirA).status == 2)
        } catch {
            await a.stop()
            await b.stop()
            throw error
        }

        // SIGTERM: clean exit, socket removed; then the CLI says the daemon is unreachable (3).
        a.signal(SIGTERM)
        let status = await a.waitForExit()
        #expect(status == 0)
        #expect(!FileManager.default.fileExists(atPath: dirA + "/agentd.sock"))
        let unreachable = try await agentctl("id", "--data-dir", dirA)
        #expect(unreachable.status == 3)
        #expect(unreachable.stderr.contains("agentd --data-dir"))

        // SIGKILL the other: its stale socket must not stop a new daemon from starting.
        b.signal(SIGKILL)
        _ = await b.waitForExit()
        let (again, _) = try await Self.startDaemon(dirB)
        #expect(try await agentctl("id", "--data-dir", dirB).status == 0)
        again.signal(SIGTERM)
        #expect(await again.waitForExit() == 0)
    }

    @Test("bad daemon arguments exit 2 with a message")
    func badArguments() async throws {
        let agentd = ProcessRunner.executable("agentd")
        for arguments in [["--listen", "/ip4/1.2.3.4/tcp/99999"], ["--log-level", "loud"], ["--log-format", "xml"], ["--bogus"]] {
            let result = try await ProcessRunner.run(agentd, arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(!result.stderr.isEmpty)
        }
    }
}
