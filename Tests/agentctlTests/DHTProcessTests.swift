import AgentTesting
import Foundation
import Identity
import Testing

/// A network of real `agentd` processes on loopback, driven by real `agentctl` processes: names are
/// published, stored at replicas and resolved across processes, as on a user's machine.
@Suite("the DHT across agentd processes", .serialized, .timeLimit(.minutes(2)))
struct DHTProcessTests {
    /// One running agentd of the network.
    struct Node {
        /// 1-based; node i publishes `node-i.agent`.
        let index: Int
        let dataDir: String
        let peerID: String
        /// Its listen address with `/p2p/<peer id>`, from the ready line.
        let address: String
        let process: JSONLineProcess

        var name: String { "node-\(index).agent" }
        /// The listen address as the node publishes it in its record: without `/p2p/`.
        var publishedAddress: String { String(address.dropLast("/p2p/\(peerID)".count)) }
    }

    /// Runs `body` with `count` agentd processes, each with its own data directory under one
    /// temporary directory: node 1 starts alone (an empty bootstrap list), then nodes 2… join in
    /// turn through a bootstrap-nodes.json naming node 1. Node i runs with `--name node-i`. Every
    /// process started is stopped by PID when `body` returns or throws, and when a start fails.
    static func withNetwork(of count: Int, _ body: ([Node]) async throws -> Void) async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-dht-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        var started: [JSONLineProcess] = []
        do {
            try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/no-peers.json"))
            // Every node is on 127.0.0.1: one address for the per-IP limits (README, "Resource limits").
            try Data(Self.loopbackLimits.utf8).write(to: URL(fileURLWithPath: base + "/limits.json"))
            var nodes: [Node] = []
            for index in 1...count {
                let dataDir = base + "/node-\(index)"
                let bootstrap = index == 1 ? base + "/no-peers.json" : base + "/bootstrap-nodes.json"
                let process = try JSONLineProcess(
                    executable: ProcessRunner.executable("agentd"),
                    arguments: [
                        "--data-dir", dataDir, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap,
                        "--name", "node-\(index)", "--log-level", "warning", "--limits", base + "/limits.json",
                    ])
                started.append(process)
                let ready: PyEvent
                do {
                    ready = try await process.waitFor("ready", timeout: .seconds(20))
                } catch {
                    // Its log went to stderr; waitFor's own message speaks of peer.py.
                    throw VectorError("agentd node-\(index) (pid \(process.pid)) printed no ready line: \(error)")
                }
                let peerID = try #require(ready["peer_id"] as? String)
                let address = try #require((ready["addrs"] as? [String])?.first)
                #expect(address.hasSuffix("/p2p/" + peerID))
                nodes.append(Node(index: index, dataDir: dataDir, peerID: peerID, address: address, process: process))
                if index == 1 {
                    let list: [String: Any] = ["version": 1, "peers": [["peer_id": peerID, "addrs": [address]]]]
                    try JSONSerialization.data(withJSONObject: list).write(
                        to: URL(fileURLWithPath: base + "/bootstrap-nodes.json"))
                }
            }
            try await body(nodes)
        } catch {
            await stop(started)
            try? FileManager.default.removeItem(atPath: base)
            throw error
        }
        await stop(started)
        try? FileManager.default.removeItem(atPath: base)
    }

    /// SIGTERM to every process at once; one that has not exited 5 s later is killed (by PID).
    static func stop(_ processes: [JSONLineProcess]) async {
        await withTaskGroup(of: Void.self) { group in
            for process in processes {
                group.addTask {
                    process.signal(SIGTERM)
                    await process.stop()
                }
            }
        }
    }

    /// Runs agentctl against `node`'s daemon; a daemon that does not answer fails the call in 10 s.
    /// Limits for many nodes on one address: the per-IP and per-subnet ones as high as the node's.
    static let loopbackLimits = """
        {"ip": {"pending_handshakes": 64, "connections": 512}, "subnet": {"pending_handshakes": 64, "connections": 512}}
        """

    func agentctl(_ node: Node, _ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(
            ProcessRunner.executable("agentctl"), arguments + ["--data-dir", node.dataDir, "--timeout", "10"])
    }

    /// Checks a `resolve --json` answer against the node that holds the name.
    func expectRecord(
        _ result: ProcessRunner.Result, name: String, of holder: Node, addresses: [String]? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(result.status == 0, "resolve \(name): \(result.stderr)", sourceLocation: sourceLocation)
        let record = try result.json()
        #expect(record["name"] as? String == name, sourceLocation: sourceLocation)
        #expect(record["peer_id"] as? String == holder.peerID, sourceLocation: sourceLocation)
        // The key is the holder's: its peer id is derived from it.
        let key = try #require(
            Data(base64Encoded: record["public_key"] as? String ?? ""), sourceLocation: sourceLocation)
        #expect(
            PeerID(publicKey: try Ed25519.PublicKey(rawRepresentation: Array(key))).description == holder.peerID,
            sourceLocation: sourceLocation)
        #expect(
            record["addresses"] as? [String] == addresses ?? [holder.publishedAddress], sourceLocation: sourceLocation)
        let protocols = record["protocols"] as? [String] ?? []
        #expect(
            protocols.contains("/ipfs/ping/1.0.0") && protocols.contains("/agent/kad/1.0.0"),
            sourceLocation: sourceLocation)
        #expect((record["seq"] as? Int ?? 0) > 0, sourceLocation: sourceLocation)
        // Signed just now, valid for the default day: expires = timestamp + ttl.
        // RFC 3339 UTC with milliseconds, as messages print times (spec/control-api.md §8.5).
        let dates = ISO8601DateFormatter()
        dates.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        #expect((record["timestamp"] as? String)?.hasSuffix(".000Z") == true, sourceLocation: sourceLocation)
        #expect((record["timestamp_unix"] as? Int).map { UInt64($0) } == (record["timestamp"] as? String).flatMap { dates.date(from: $0) }.map { UInt64($0.timeIntervalSince1970) }, sourceLocation: sourceLocation)
        let timestamp = try #require(
            dates.date(from: record["timestamp"] as? String ?? ""), sourceLocation: sourceLocation)
        let expires = try #require(dates.date(from: record["expires"] as? String ?? ""), sourceLocation: sourceLocation)
        #expect(abs(timestamp.timeIntervalSinceNow) < 120, sourceLocation: sourceLocation)
        #expect(record["ttl"] as? Int == 86_400, sourceLocation: sourceLocation)
        #expect(expires.timeIntervalSince(timestamp) == 86_400, sourceLocation: sourceLocation)
        #expect(record["source"] as? String == "network", sourceLocation: sourceLocation)
        #expect((record["replicas"] as? Int ?? 0) >= 1, sourceLocation: sourceLocation)
    }

    @Test(
        "names resolve across four nodes; register, unknown and malformed names, ping by name, dht peers, get-closest")
    func namesAcrossNodes() async throws {
        try await Self.withNetwork(of: 4) { nodes in
            // Every --name, resolved from the next node.
            for node in nodes {
                let other = nodes[node.index % nodes.count]
                try expectRecord(try await agentctl(other, "resolve", node.name, "--json"), name: node.name, of: node)
            }

            // An extra name with explicit addresses, stored at the other three, resolved from a fourth.
            let holder = nodes[1]
            let addresses = ["/ip4/127.0.0.1/tcp/4999", "/ip6/::1/tcp/4999"]
            let registered = try await agentctl(
                holder, "register", "extra-2", "--address", addresses[0], "--address", addresses[1], "--json")
            #expect(registered.status == 0, "\(registered.stderr)")
            let registration = try registered.json()
            #expect(registration["name"] as? String == "extra-2.agent")
            #expect(registration["peer_id"] as? String == holder.peerID)
            #expect(registration["addresses"] as? [String] == addresses)
            #expect(
                Set(registration["replicas"] as? [String] ?? []) == Set(nodes.filter { $0.index != 2 }.map(\.peerID)))
            #expect((registration["failures"] as? [Any])?.isEmpty == true)
            let extra = try await agentctl(nodes[3], "resolve", "extra-2.agent", "--no-cache", "--json")
            try expectRecord(extra, name: "extra-2.agent", of: holder, addresses: addresses)
            #expect(try extra.json()["seq"] as? Int == registration["seq"] as? Int)

            // A name nobody holds: exit 1, "not found"; with --json the kind says so too.
            let unknown = try await agentctl(nodes[2], "resolve", "nobody-here.agent")
            #expect(unknown.status == 1)
            #expect(unknown.stderr.contains("not found"), "\(unknown.stderr)")
            let unknownJSON = try await agentctl(nodes[2], "resolve", "nobody-here", "--json")
            #expect(unknownJSON.status == 1)
            #expect((try unknownJSON.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "not_found")

            // Malformed names: exit 2, refused before any lookup.
            for name in ["bad_name.agent", "two words.agent", "a..b.agent"] {
                let malformed = try await agentctl(nodes[2], "resolve", name, "--json")
                #expect(malformed.status == 2, "\(name): \(malformed.stderr)")
                #expect(
                    (try malformed.errorJSON()["error"] as? [String: Any])?["kind"] as? String == "invalid_name",
                    "\(name)")
            }

            // ping NAME.agent resolves the name, then connects to the record's address.
            let ping = try await agentctl(nodes[0], "ping", nodes[2].name, "--count", "2", "--json")
            #expect(ping.status == 0, "\(ping.stderr)")
            #expect(try ping.json()["peer_id"] as? String == nodes[2].peerID)
            #expect((try ping.json()["rtts_ms"] as? [Double])?.count == 2)
            let humanPing = try await agentctl(nodes[1], "ping", nodes[3].name, "--count", "1")
            #expect(humanPing.status == 0, "\(humanPing.stderr)")
            #expect(humanPing.stdoutText.contains("pong from \(nodes[3].peerID)"))

            // Every node's routing table holds the three others.
            for node in nodes {
                let peers = try await agentctl(node, "dht", "peers", "--json")
                #expect(peers.status == 0, "\(peers.stderr)")
                let table = try peers.json()
                #expect(table["mode"] as? String == "server")
                #expect(table["protocol"] as? String == "/agent/kad/1.0.0")
                let listed = Set((table["peers"] as? [[String: Any]] ?? []).compactMap { $0["peer_id"] as? String })
                #expect(
                    listed == Set(nodes.filter { $0.index != node.index }.map(\.peerID)),
                    "routing table of \(node.name)")
            }

            // An iterative lookup finds every other node, for a name key and for a peer id key.
            let closest = try await agentctl(nodes[3], "dht", "get-closest", nodes[0].name, "--json")
            #expect(closest.status == 0, "\(closest.stderr)")
            let lookup = try closest.json()
            #expect(lookup["key_kind"] as? String == "name")
            let found = Set((lookup["peers"] as? [[String: Any]] ?? []).compactMap { $0["peer_id"] as? String })
            #expect(found == Set(nodes.prefix(3).map(\.peerID)))
            let byPeer = try await agentctl(nodes[1], "dht", "get-closest", nodes[2].peerID, "--json")
            #expect(byPeer.status == 0, "\(byPeer.stderr)")
            #expect(try byPeer.json()["key_kind"] as? String == "peer_id")
            #expect((try byPeer.json()["peers"] as? [Any])?.isEmpty == false)
        }
    }

    @Test("a SIGKILLed node: the other names still resolve, its record stays at the replicas, ping of it fails")
    func killedNode() async throws {
        try await Self.withNetwork(of: 4) { nodes in
            // node-4 published its name when nodes 1-3 were up: they are its replicas.
            let killed = nodes[3]
            killed.process.signal(SIGKILL)
            #expect(await killed.process.waitForExit() == SIGKILL)
            let survivors = nodes.prefix(3)

            // From other nodes: node 1 published its name alone, so within the first maintenance
            // round (60 s) only node 1 itself holds it and would answer "local" (spec/dht.md §7.1).
            for resolver in survivors {
                for node in survivors where node.index != resolver.index {
                    try expectRecord(
                        try await agentctl(resolver, "resolve", node.name, "--no-cache", "--json"), name: node.name, of: node)
                }
                let gone = try await agentctl(resolver, "resolve", killed.name, "--no-cache", "--json")
                try expectRecord(gone, name: killed.name, of: killed)
            }

            let ping = try await agentctl(nodes[0], "ping", killed.name, "--json")
            #expect(ping.status == 1, "\(ping.stdoutText)")
            let error = try #require(try ping.errorJSON()["error"] as? [String: Any])
            #expect(error["kind"] as? String == "unreachable")
            #expect((error["message"] as? String)?.contains(killed.peerID) == true)
        }
    }
}
