import AgentTesting
import Foundation
import Testing

/// AutoNAT between agentd processes on loopback, with 127.0.0.0/8 made public (`--public-cidr`):
/// the event lines on stdout, `events.subscribe`, `agentctl nat`, `--dht-mode auto` following the
/// verdict, `--autonat-server`.
@Suite("AutoNAT across agentd processes", .serialized, .timeLimit(.minutes(2)))
struct AutoNATProcessTests {
    static let lab = ["--public-cidr", "127.0.0.0/8"]

    func agentctl(_ dataDir: String, _ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(
            ProcessRunner.executable("agentctl"), arguments + ["--data-dir", dataDir, "--timeout", "10"])
    }

    /// Starts A alone, then B bootstrapping from A (B listening on `listenB`); stops both by PID.
    func withPair(
        listenB: String = "/ip4/127.0.0.1/tcp/0", extraA: [String] = [],
        _ body: (
            _ a: ControlAPIConformanceTests.Node, _ b: ControlAPIConformanceTests.Node, _ dirs: (String, String),
            _ subscription: SpecClient
        ) async throws -> Void
    ) async throws {
        let base = try ControlAPIConformanceTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/none.json"))
        var started: [JSONLineProcess] = []
        do {
            let (processA, readyA) = try await ControlAPIConformanceTests.startDaemon(
                base + "/a", ["--bootstrap", base + "/none.json"] + Self.lab + extraA)
            started.append(processA)
            let a = try ControlAPIConformanceTests.Node(processA, ready: readyA)
            // Subscribed on A before B exists: A's verdict comes as a notification.
            let subscription = try SpecClient(a.socket)
            let refused = try a.call("events.subscribe", #"{"kinds":["autonat"]}"#)
            #expect(ControlAPIConformanceTests.code(refused) == -32602)
            let accepted = try subscription.call(#"{"jsonrpc":"2.0","id":1,"method":"events.subscribe"}"#)
            #expect((accepted["result"] as? [String: Any])?["subscription"] as? String == "events")
            let processB = try JSONLineProcess(
                executable: ProcessRunner.executable("agentd"),
                arguments: [
                    "--data-dir", base + "/b", "--listen", listenB, "--log-level", "warning", "--bootstrap", a.address,
                ] + Self.lab)
            started.append(processB)
            let b = try ControlAPIConformanceTests.Node(
                processB, ready: try await processB.waitFor("ready", timeout: .seconds(30)))
            try await body(a, b, (base + "/a", base + "/b"), subscription)
        } catch {
            await DHTProcessTests.stop(started)
            throw error
        }
        await DHTProcessTests.stop(started)
    }

    @Test("two reachable nodes: autonat event lines and notifications say public; agentctl nat shows the evidence")
    func bothPublic() async throws {
        try await withPair { a, b, dirs, subscription in
            let lineB = try await b.process.waitFor("autonat", timeout: .seconds(30))
            #expect(lineB["verdict"] as? String == "public" && lineB["confidence"] as? Int == 1)
            let lineA = try await a.process.waitFor("autonat", timeout: .seconds(30))
            #expect(lineA["verdict"] as? String == "public")
            // The same object as a control API notification (A's subscription).
            let line = try #require(try subscription.readLine())
            let notification = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(notification["method"] as? String == "event" && notification["id"] == nil)
            let params = try #require(notification["params"] as? [String: Any])
            #expect(params["event"] as? String == "autonat" && params["verdict"] as? String == "public")
            #expect(params["confidence"] as? Int == lineA["confidence"] as? Int)

            let nat = try await agentctl(dirs.1, "nat", "--json")
            #expect(nat.status == 0, "\(nat.stderr)")
            let status = try nat.json()
            #expect(status["reachability"] as? String == "public" && status["confidence"] as? Int == 1)
            #expect(status["observed_ips"] as? [String] == ["127.0.0.1"])
            #expect(status["servers"] as? [String] == [a.peer])
            let answer = try #require((status["answers"] as? [[String: Any]])?.first)
            #expect(answer["server"] as? String == a.peer && answer["status"] as? String == "OK")
            #expect(answer["addr"] as? String == b.transportAddress && answer["evidence"] as? String == "public")
            let server = try #require(status["autonat_server"] as? [String: Any])
            #expect(server["enabled"] as? Bool == true)
            #expect((server["answers"] as? [String: Any])?["OK"] as? Int == 1, "B dialled A back once")
            #expect((status["relay_reservations"] as? [Any])?.isEmpty == true)
            let text = try await agentctl(dirs.1, "nat")
            #expect(text.stdoutText.contains("reachability:  public (confidence 1)"))
            #expect(text.stdoutText.contains("\(a.peer) OK"))
            // --dht-mode auto: public keeps the server mode.
            #expect((try await agentctl(dirs.1, "dht", "peers", "--json").json())["mode"] as? String == "server")
            // --relay-service auto (the default): public serves hop (it follows the event; wait for it).
            var serving = false
            for _ in 0..<200 {
                let service = (try await agentctl(dirs.1, "nat", "--json").json())["relay_service"] as? [String: Any]
                #expect(service?["mode"] as? String == "auto")
                serving = service?["serving"] as? Bool == true
                if serving { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(serving)
            let protocols = try #require((try await agentctl(dirs.1, "id", "--json").json())["protocols"] as? [String])
            #expect(protocols.contains("/libp2p/circuit/relay/0.2.0/hop"))
        }
    }

    @Test("a node that cannot be dialled back is private, prints so, and its auto DHT mode becomes client")
    func privateNode() async throws {
        // B listens on 127.0.0.2 and dials from 127.0.0.1: A sees 127.0.0.1, where nobody listens
        // on B's port (a NAT's outside address in miniature).
        try await withPair(listenB: "/ip4/127.0.0.2/tcp/0") { a, b, dirs, _ in
            let line = try await b.process.waitFor("autonat", timeout: .seconds(30))
            #expect(line["verdict"] as? String == "private" && line["confidence"] as? Int == 1)
            let status = try await agentctl(dirs.1, "nat", "--json").json()
            let answer = try #require((status["answers"] as? [[String: Any]])?.first)
            #expect(answer["status"] as? String == "E_DIAL_ERROR" && answer["evidence"] as? String == "private")
            #expect((status["checked_addrs"] as? [String])?.contains { $0.hasPrefix("/ip4/127.0.0.1/tcp/") } == true)
            // The mode switch follows the event; wait for it (at most 10 s).
            var mode: String?
            for _ in 0..<200 {
                mode = (try await agentctl(dirs.1, "dht", "peers", "--json").json())["mode"] as? String
                if mode == "client" { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(mode == "client")
            #expect((try await agentctl(dirs.0, "dht", "peers", "--json").json())["mode"] as? String == "server")
            // --relay-service auto: a private node does not relay.
            let service = (try await agentctl(dirs.1, "nat", "--json").json())["relay_service"] as? [String: Any]
            #expect(service?["mode"] as? String == "auto" && service?["serving"] as? Bool == false)
            #expect(!(try await agentctl(dirs.1, "id", "--json").json()["protocols"] as? [String] ?? []).contains(
                "/libp2p/circuit/relay/0.2.0/hop"))
            // B no longer offers kad: A learns it from the identify push.
            var offered = true
            for _ in 0..<200 {
                let peers = try #require((try await agentctl(dirs.0, "peers", "--json").json())["peers"] as? [[String: Any]])
                offered = (peers.first { $0["peer_id"] as? String == b.peer }?["protocols"] as? [String] ?? [])
                    .contains("/agent/kad/1.0.0")
                if !offered { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(!offered)
        }
    }

    @Test("--autonat-server off: nobody answers, the verdict stays unknown; a bad value exits 2")
    func serverOff() async throws {
        try await withPair(extraA: ["--autonat-server", "off"]) { a, b, dirs, _ in
            // B serves: A learns it is public. A does not: B has nobody to ask.
            #expect(try await a.process.waitFor("autonat", timeout: .seconds(30))["verdict"] as? String == "public")
            let status = try await agentctl(dirs.1, "nat", "--json").json()
            #expect(status["reachability"] as? String == "unknown" && (status["servers"] as? [Any])?.isEmpty == true)
            #expect((status["answers"] as? [Any])?.isEmpty == true)
            #expect(!b.process.events.contains { $0["event"] as? String == "autonat" })
            let own = try await agentctl(dirs.0, "nat", "--json").json()
            #expect((own["autonat_server"] as? [String: Any])?["enabled"] as? Bool == false)
            let protocols = try #require((try await agentctl(dirs.0, "id", "--json").json())["protocols"] as? [String])
            #expect(!protocols.contains("/libp2p/autonat/1.0.0"))
        }
        let bad = try await ProcessRunner.run(ProcessRunner.executable("agentd"), ["--autonat-server", "maybe"])
        #expect(bad.status == 2 && bad.stderr.contains("--autonat-server must be on or off"))
        let badRelayService = try await ProcessRunner.run(ProcessRunner.executable("agentd"), ["--relay-service", "maybe"])
        #expect(badRelayService.status == 2 && badRelayService.stderr.contains("--relay-service must be on, off or auto"))
        let badRelay = try await ProcessRunner.run(ProcessRunner.executable("agentd"), ["--relay", "/ip4/127.0.0.1/tcp/4001"])
        #expect(badRelay.status == 2 && badRelay.stderr.contains("bad --relay"))
    }
}
