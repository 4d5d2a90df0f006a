import AgentTesting
import Foundation
import Testing

/// Circuit relay v2 and DCUtR across agentd processes on loopback: R serves hop
/// (`--relay-service on`), B reserves at R (`--relay`), A reaches B through R by circuit address
/// and by name; event lines, `agentctl nat`, `peers` and `ping` report what happened.
@Suite("Relay and hole punching across agentd processes", .serialized, .timeLimit(.minutes(3)))
struct RelayProcessTests {
    typealias Node = ControlAPIConformanceTests.Node

    func agentctl(_ dataDir: String, _ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(
            ProcessRunner.executable("agentctl"), arguments + ["--data-dir", dataDir, "--timeout", "10"])
    }

    static func start(_ dataDir: String, listen: String, _ extra: [String]) async throws -> (JSONLineProcess, Node) {
        let process = try JSONLineProcess(
            executable: ProcessRunner.executable("agentd"),
            arguments: ["--data-dir", dataDir, "--listen", listen, "--log-level", "warning"] + extra)
        do {
            return (process, try Node(process, ready: try await process.waitFor("ready", timeout: .seconds(30))))
        } catch {
            await DHTProcessTests.stop([process])
            throw error
        }
    }

    /// Polls `body` every 100 ms until it returns a value, at most `limit`.
    func eventually<T>(within limit: Duration = .seconds(15), _ body: () async throws -> T?) async throws -> T? {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while clock.now < deadline {
            if let value = try await body() { return value }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await body()
    }

    /// R (127.0.0.1, relay service on), B (127.0.0.2, `--relay R`), A (127.0.0.3); B and A bootstrap
    /// from R. `beforeA` runs once B holds its reservation. Stops every process by PID.
    func withRelayedPair(
        extraB: [String] = [], beforeA: (_ b: Node, _ dirB: String) async throws -> Void = { _, _ in },
        afterA: (_ dirA: String) async throws -> Void = { _ in },
        _ body: (_ r: Node, _ b: Node, _ a: Node, _ dirs: (r: String, b: String, a: String)) async throws -> Void
    ) async throws {
        let base = try ControlAPIConformanceTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/none.json"))
        var started: [JSONLineProcess] = []
        do {
            let (processR, r) = try await Self.start(
                base + "/r", listen: "/ip4/127.0.0.1/tcp/0",
                ["--bootstrap", base + "/none.json", "--relay-service", "on", "--dht-mode", "server"])
            started.append(processR)
            let (processB, b) = try await Self.start(
                base + "/b", listen: "/ip4/127.0.0.2/tcp/0",
                // A DHT client: A learns of B only from its record, never from routing tables.
                ["--bootstrap", r.address, "--relay", r.address, "--dht-mode", "client"] + extraB)
            started.append(processB)
            let reservation = try await processB.waitFor("reservation", timeout: .seconds(30))
            #expect(reservation["relay"] as? String == r.peer)
            #expect((reservation["addrs"] as? [String])?.first == r.address + "/p2p-circuit")
            #expect((reservation["expires"] as? Int ?? 0) > Int(Date().timeIntervalSince1970))
            try await beforeA(b, base + "/b")
            let (processA, a) = try await Self.start(
                base + "/a", listen: "/ip4/127.0.0.3/tcp/0", ["--bootstrap", r.address, "--dht-mode", "server"])
            started.append(processA)
            try await afterA(base + "/a")
            try await body(r, b, a, (base + "/r", base + "/b", base + "/a"))
        } catch {
            await DHTProcessTests.stop(started)
            throw error
        }
        await DHTProcessTests.stop(started)
    }

    @Test("A connects to B by its circuit address (relayed), DCUtR makes it direct; nat shows the reservation and the relay's usage")
    func circuitThenDirect() async throws {
        try await withRelayedPair { r, b, a, dirs in
            // B's nat: the reservation, its voucher checked.
            let natB = try await agentctl(dirs.b, "nat", "--json")
            #expect(natB.status == 0, "\(natB.stderr)")
            let reservations = try #require(try natB.json()["relay_reservations"] as? [[String: Any]])
            #expect(reservations.count == 1)
            #expect(reservations.first?["relay"] as? String == r.peer)
            #expect(reservations.first?["voucher_verified"] as? Bool == true)
            #expect((reservations.first?["addrs"] as? [String])?.contains(r.address + "/p2p-circuit") == true)
            #expect(try await agentctl(dirs.b, "nat").stdoutText.contains("reservation:   \(r.peer) (voucher verified"))
            // R's nat: serving, one reservation.
            let service = try #require(try await agentctl(dirs.r, "nat", "--json").json()["relay_service"] as? [String: Any])
            #expect(service["mode"] as? String == "on" && service["serving"] as? Bool == true)
            #expect(service["reservations"] as? Int == 1)
            // B advertises its circuit address (agentctl id).
            let circuit = r.address + "/p2p-circuit/p2p/" + b.peer
            let idB = try await agentctl(dirs.b, "id", "--json").json()
            #expect((idB["addrs"] as? [String])?.contains(circuit) == true)

            let connected = try await agentctl(dirs.a, "connect", circuit, "--json")
            #expect(connected.status == 0, "\(connected.stderr)")
            let result = try connected.json()
            #expect(result["peer_id"] as? String == b.peer && result["path"] as? String == "relayed")
            // Connecting again reuses the circuit connection dialled to that address.
            #expect(try await agentctl(dirs.a, "connect", circuit).stdoutText.contains("(relayed)"))
            let firstPeers = try #require(try await agentctl(dirs.a, "peers", "--json").json()["peers"] as? [[String: Any]])
            #expect(
                firstPeers.filter { $0["peer_id"] as? String == b.peer }.map { $0["path"] as? String }.contains("relayed"))
            #expect(
                firstPeers.filter { $0["peer_id"] as? String == b.peer && $0["path"] as? String == "relayed" }.count == 1,
                "the second connect reused the circuit connection")
            // R relayed it.
            let usage = try #require(try await agentctl(dirs.r, "nat", "--json").json()["relay_service"] as? [String: Any])
            #expect((usage["circuits_relayed"] as? Int ?? 0) >= 1)

            // B accepted the relayed connection: it starts DCUtR; on loopback the punch connects.
            let punch = try await b.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punch["peer"] as? String == a.peer && punch["result"] as? String == "direct")
            #expect((punch["attempts"] as? Int ?? 0) >= 1 && punch["ms"] is Int)
            // A sees a direct connection to B; ping goes over it.
            let direct = try await eventually {
                let peers = try await agentctl(dirs.a, "peers", "--json").json()["peers"] as? [[String: Any]] ?? []
                return peers.first { $0["peer_id"] as? String == b.peer && $0["path"] as? String == "direct" }
            }
            #expect((direct?["addr"] as? String)?.hasPrefix("/ip4/127.0.0.2/tcp/") == true)
            let ping = try await agentctl(dirs.a, "ping", b.peer, "--count", "1", "--json").json()
            #expect(ping["path"] as? String == "direct" && (ping["addr"] as? String)?.hasPrefix("/ip4/127.0.0.2/") == true)
            // The same event as a notification on A's side is covered below; A printed its own line too
            // (A is the side that answered DCUtR).
            let punchA = try await a.process.waitFor("hole_punch", timeout: .seconds(30))
            #expect(punchA["peer"] as? String == b.peer)
            // The circuit address still gives a relayed connection although a direct one exists
            // (the one being closed after the punch's grace period, or a new one).
            let relayedAgain = try await agentctl(dirs.a, "connect", circuit, "--json")
            #expect(relayedAgain.status == 0, "\(relayedAgain.stderr)")
            #expect(try relayedAgain.json()["path"] as? String == "relayed")
        }
    }

    @Test("a circuit dialled while a direct connection exists: connect says relayed, both coexist, ping prefers direct")
    func circuitBesideDirect() async throws {
        try await withRelayedPair { r, b, a, dirs in
            let direct = try await agentctl(dirs.a, "connect", b.address, "--json")
            #expect(direct.status == 0, "\(direct.stderr)")
            #expect(try direct.json()["path"] as? String == "direct")
            let circuit = r.address + "/p2p-circuit/p2p/" + b.peer
            let relayed = try await agentctl(dirs.a, "connect", circuit, "--json")
            #expect(relayed.status == 0, "\(relayed.stderr)")
            #expect(try relayed.json()["path"] as? String == "relayed")
            let peers = try #require(try await agentctl(dirs.a, "peers", "--json").json()["peers"] as? [[String: Any]])
            let paths = peers.filter { $0["peer_id"] as? String == b.peer }.compactMap { $0["path"] as? String }
            #expect(paths.sorted() == ["direct", "relayed"])
            let ping = try await agentctl(dirs.a, "ping", b.peer, "--count", "1", "--json").json()
            #expect(ping["path"] as? String == "direct" && ping["addr"] as? String == b.transportAddress)
        }
    }

    @Test("A blocks B's IP: A resolves bee.agent, its direct address is refused, ping goes relayed and says so; the punch fails")
    func relayedByName() async throws {
        try await withRelayedPair(
            beforeA: { b, dirB in
                let registered = try await agentctl(dirB, "register", "bee", "--json")
                #expect(registered.status == 0, "\(registered.stderr)")
            },
            afterA: { dirA in
                // A neither dials B's direct address nor accepts B's punch (it comes from B's
                // listen address): the relayed path is all there is.
                let blocked = try await agentctl(dirA, "block", "127.0.0.2")
                #expect(blocked.status == 0, "\(blocked.stderr)")
            }
        ) { r, b, a, dirs in
            let subscription = try SpecClient(a.socket)
            _ = try subscription.call(#"{"jsonrpc":"2.0","id":1,"method":"events.subscribe"}"#)
            // The record carries B's circuit address (republished once the reservation was made).
            let circuit = r.address + "/p2p-circuit"
            let record = try await eventually {
                let resolved = try await agentctl(dirs.a, "resolve", "bee.agent", "--no-cache", "--json")
                let addresses = (try? resolved.json())?["addresses"] as? [String] ?? []
                return addresses.contains(circuit) ? addresses : nil
            }
            #expect(record != nil, "bee.agent never carried \(circuit)")
            let ping = try await agentctl(dirs.a, "ping", "bee.agent", "--count", "2", "--json")
            #expect(ping.status == 0, "\(ping.stderr)")
            let result = try ping.json()
            #expect(result["peer_id"] as? String == b.peer && result["path"] as? String == "relayed")
            #expect(result["addr"] as? String == circuit)
            let human = try await agentctl(dirs.a, "ping", "bee.agent", "--count", "1")
            #expect(human.stdoutText.contains("pong from \(b.peer) (relayed)"), "\(human.stdoutText)")
            let peers = try #require(try await agentctl(dirs.a, "peers", "--json").json()["peers"] as? [[String: Any]])
            let toB = peers.filter { $0["peer_id"] as? String == b.peer }
            #expect(toB.map { $0["path"] as? String } == ["relayed"])
            // B cannot punch through its own block: DCUtR fails, the relayed connection stays.
            let punch = try await b.process.waitFor("hole_punch", timeout: .seconds(60))
            #expect(punch["result"] as? String == "failed" && punch["reason"] is String)
            let again = try await agentctl(dirs.a, "ping", b.peer, "--count", "1", "--json").json()
            #expect(again["path"] as? String == "relayed")
            // A answered DCUtR: its hole_punch event arrives as a notification too.
            var notified: [String: Any]?
            while let line = try subscription.readLine() {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                if let params = object?["params"] as? [String: Any], params["event"] as? String == "hole_punch" {
                    notified = params
                    break
                }
            }
            #expect(notified?["peer"] as? String == b.peer && notified?["result"] as? String == "failed")
        }
    }

    @Test("a relay restart: B loses its reservation, reserves again, and republishes its record with the circuit address")
    func relayRestart() async throws {
        let base = try ControlAPIConformanceTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/none.json"))
        var started: [JSONLineProcess] = []
        do {
            let relayArguments = ["--bootstrap", base + "/none.json", "--relay-service", "on", "--dht-mode", "server"]
            let (firstR, r) = try await Self.start(base + "/r", listen: "/ip4/127.0.0.1/tcp/0", relayArguments)
            var processR = firstR
            started.append(processR)
            let (processB, _) = try await Self.start(
                base + "/b", listen: "/ip4/127.0.0.2/tcp/0",
                ["--bootstrap", r.address, "--relay", r.address, "--dht-mode", "client"])
            started.append(processB)
            _ = try await processB.waitFor("reservation", timeout: .seconds(30))
            // B's self-certifying name (`names` lists it as not persistent).
            let names = try #require(try await agentctl(base + "/b", "names", "--json").json()["names"] as? [[String: Any]])
            let name = try #require(names.first { $0["persistent"] as? Bool == false }?["name"] as? String)
            let circuit = r.address + "/p2p-circuit"
            func record() async throws -> [String: Any]? {
                let resolved = try await agentctl(base + "/b", "resolve", name, "--no-cache", "--json")
                return resolved.status == 0 ? try resolved.json() : nil
            }
            let before = try await eventually { try await record().flatMap { ($0["addresses"] as? [String] ?? []).contains(circuit) ? $0 : nil } }
            let seqBefore = try #require(before?["seq"] as? Int)

            processR.signal(SIGTERM)
            #expect(await processR.waitForExit() == 0)
            started.removeAll { $0 === processR }
            let lost = try await processB.waitFor("reservation_lost", timeout: .seconds(30))
            #expect(lost["relay"] as? String == r.peer && lost["reason"] is String)
            (processR, _) = try await Self.start(base + "/r", listen: r.transportAddress, relayArguments)
            started.append(processR)
            // Reserved again (the client retries 1, 2, 4 … s apart).
            let again = try await eventually(within: .seconds(30)) {
                let reservations = processB.events.filter { $0["event"] as? String == "reservation" }
                return reservations.count >= 2 ? reservations.last : nil
            }
            #expect(again?["relay"] as? String == r.peer && (again?["addrs"] as? [String]) == [circuit])
            // The record at R is B's newer one, with the circuit address again.
            let after = try await eventually {
                try await record().flatMap { ($0["seq"] as? Int ?? 0) > seqBefore ? $0 : nil }
            }
            #expect(after != nil, "B did not republish its record after reserving again")
            let addressesAfter = (after?["addresses"] as? [String]) ?? []
            #expect(addressesAfter.contains(circuit))
        } catch {
            await DHTProcessTests.stop(started)
            throw error
        }
        await DHTProcessTests.stop(started)
    }

    @Test("no --relay: a node AutoNAT finds private reserves by itself at a connected peer that offers hop")
    func automaticRelay() async throws {
        let base = try ControlAPIConformanceTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/none.json"))
        var started: [JSONLineProcess] = []
        do {
            // 127.0.0.0/8 public for AutoNAT; B listens on 127.0.0.2 but dials from 127.0.0.1, where
            // R's dial-back finds nobody: B is private (as in AutoNATProcessTests).
            let lab = ["--public-cidr", "127.0.0.0/8"]
            let (processR, r) = try await Self.start(
                base + "/r", listen: "/ip4/127.0.0.1/tcp/0",
                ["--bootstrap", base + "/none.json", "--relay-service", "on"] + lab)
            started.append(processR)
            let (processB, b) = try await Self.start(
                base + "/b", listen: "/ip4/127.0.0.2/tcp/0", ["--bootstrap", r.address] + lab)
            started.append(processB)
            let verdict = try await processB.waitFor("autonat", timeout: .seconds(30))
            #expect(verdict["verdict"] as? String == "private")
            let reservation = try await processB.waitFor("reservation", timeout: .seconds(30))
            #expect(reservation["relay"] as? String == r.peer)
            let nat = try await agentctl(base + "/b", "nat", "--json").json()
            let held = try #require(nat["relay_reservations"] as? [[String: Any]])
            #expect(held.count == 1 && held.first?["chosen"] as? String == "auto")
            #expect(try await agentctl(base + "/b", "id", "--json").json()["addrs"] as? [String] ?? [] == [
                b.address, r.address + "/p2p-circuit/p2p/" + b.peer,
            ])
            // R (public) chose nobody.
            #expect(!processR.events.contains { $0["event"] as? String == "reservation" })
        } catch {
            await DHTProcessTests.stop(started)
            throw error
        }
        await DHTProcessTests.stop(started)
    }
}
