import AgentTesting
import Foundation
import Testing

/// The NAT lab itself (Sources/AgentTesting/NATLab.swift): agentd behind a NAT reaches the relay
/// and cannot be reached back; the routers' NAT is what it claims (conntrack); a TCP simultaneous
/// open works through two cone NATs and fails through two symmetric ones; nothing of a lab is left
/// after it, whatever way its test ends.
@Suite(
    "the NAT lab", .serialized, .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)),
    .timeLimit(.minutes(3)))
struct NATLabTests {
    @Test(
        "agentd behind a NAT dials and pings the relay; the relay cannot dial it back; conntrack shows the mapping",
        arguments: NATLab.NAT.allCases)
    func agentdBehindNAT(nat: NATLab.NAT) async throws {
        try await NATLab.with(nat: nat) { lab in
            let ip = lab.addresses
            let relay = try await lab.startAgentd(in: .relay)
            let a = try await lab.startAgentd(in: .hostA)
            #expect(relay.address == "/ip4/\(ip.relay)/tcp/4001/p2p/\(relay.peerID)")
            #expect(a.address == "/ip4/\(ip.hostA)/tcp/4001/p2p/\(a.peerID)")

            let ping = try a.agentctl("ping", relay.address, "--count", "3", "--json")
            #expect(ping.status == 0, "ping from A: \(ping.stderr)")
            #expect((try ping.json()["rtts_ms"] as? [Double])?.count == 3)

            // Router A translated the flow: A's LAN address and port out, its WAN address and the
            // mapped port in. Cone keeps the port, symmetric picks another.
            let flow = try await lab.waitForFlow(on: .routerA) {
                $0.original.source == ip.hostA && $0.original.destination == ip.relay
                    && $0.original.destinationPort == 4001 && $0.state == "ESTABLISHED"
            }
            #expect(flow.reply.source == ip.relay && flow.reply.destination == ip.routerAWAN)
            #expect(flow.isPortPreserved == (nat == .cone), "\(nat): \(flow)")

            // The relay sees A at exactly that mapping.
            let peers = try relay.agentctl("peers", "--json")
            #expect(peers.status == 0, "\(peers.stderr)")
            let entries = try #require(try peers.json()["peers"] as? [[String: Any]])
            let seen = entries.first { $0["peer_id"] as? String == a.peerID }
            #expect(seen?["addr"] as? String == "/ip4/\(ip.routerAWAN)/tcp/\(flow.mappedPort ?? -1)")
            #expect(seen?["direction"] as? String == "inbound")

            // The relay cannot open a connection to A: A's LAN address is unroutable from the
            // internet (no route: the dial fails at once, long before agentctl's timeout) …
            let clock = ContinuousClock()
            let started = clock.now
            let lan = try relay.agentctl(["connect", "/ip4/\(ip.hostA)/tcp/4001/p2p/\(a.peerID)"], timeout: 20)
            #expect(lan.status == 1, "connect to A's LAN address: \(lan.status) \(lan.stdoutText) \(lan.stderr)")
            #expect(clock.now - started < .seconds(10), "the dial to an unroutable address took \(clock.now - started)")
            // … and router A's WAN address drops the SYN (its INPUT rule): no answer at all, so the
            // dial only ends at a timeout (agentctl's 2 s here).
            let dropped = try lab.inputDrops(.routerA)
            let wan = try relay.agentctl(["connect", "/ip4/\(ip.routerAWAN)/tcp/4001/p2p/\(a.peerID)"], timeout: 2)
            #expect(wan.status == 1, "connect to router A's WAN address: \(wan.status) \(wan.stdoutText) \(wan.stderr)")
            // The relay's agentd keeps dialling (15 s) after agentctl gave up: wait for the drop
            // rather than assume it happened within agentctl's 2 s on a loaded machine.
            let clock2 = ContinuousClock()
            let deadline = clock2.now + .seconds(20)
            var drops = try lab.inputDrops(.routerA)
            while drops <= dropped, clock2.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                drops = try lab.inputDrops(.routerA)
            }
            #expect(drops > dropped, "router A's INPUT rule dropped no SYN")
            // A is still connected to the relay, through the mapping.
            let again = try a.agentctl("ping", relay.peerID, "--json")
            #expect(again.status == 0, "ping over the existing connection: \(again.stderr)")
        }
    }

    @Test("the relay's agentd restarts in place: same data directory, peer id and address; A pings it again")
    func relayRestart() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let relay = try await lab.startAgentd(in: .relay)
            let a = try await lab.startAgentd(in: .hostA)
            #expect(try a.agentctl("ping", relay.address).status == 0)
            await lab.stop(relay.process)
            let failed = try a.agentctl(["ping", relay.address], timeout: 10)
            #expect(failed.status != 0, "ping to a stopped relay: \(failed.stdoutText)")
            let again = try await lab.startAgentd(in: .relay, dataDirectory: relay.dataDirectory)
            #expect(again.peerID == relay.peerID && again.address == relay.address)
            let ping = try a.agentctl("ping", relay.address)
            #expect(ping.status == 0, "ping after the restart: \(ping.stderr)")
        }
    }

    @Test(
        "TCP simultaneous open between the two hosts: direct through cone NATs, impossible through symmetric ones",
        arguments: NATLab.NAT.allCases)
    func holePunch(nat: NATLab.NAT) async throws {
        try await NATLab.with(nat: nat) { lab in
            let ip = lab.addresses
            // Through cone NATs a punch connects as soon as B's SYN is out, so a long timeout costs
            // nothing and covers a loaded machine; through symmetric ones no timing can make the
            // ports match, so 3 s per attempt is enough.
            let outcome = try await Self.punch(lab, attempts: 3, timeout: nat == .cone ? 10 : 3)
            switch nat {
            case .cone:
                let success = try #require(outcome.success, "no attempt connected: \(outcome.failures)")
                // Deterministic orchestration: the first attempt connects.
                #expect(success.attempt == 1, "failed attempts: \(outcome.failures)")
                #expect(success.a["received"] as? String == "B" && success.b["received"] as? String == "A")
                // Each side's peer is the other's router, at the other's own port.
                #expect(success.a["remote"] as? [AnyHashable] == [ip.routerBWAN, success.portB])
                #expect(success.b["remote"] as? [AnyHashable] == [ip.routerAWAN, success.portA])
                // Both routers track the WAN-to-WAN flow, ports preserved.
                let flowA = try await lab.waitForFlow(on: .routerA) {
                    $0.original.source == ip.hostA && $0.original.sourcePort == success.portA
                        && $0.original.destination == ip.routerBWAN && $0.original.destinationPort == success.portB
                }
                #expect(flowA.state == "ESTABLISHED" && flowA.isAssured, "\(flowA)")
                #expect(flowA.reply.destination == ip.routerAWAN && flowA.isPortPreserved, "\(flowA)")
                let flowB = try await lab.waitForFlow(on: .routerB) {
                    $0.original.source == ip.hostB && $0.original.sourcePort == success.portB
                        && $0.original.destination == ip.routerAWAN && $0.original.destinationPort == success.portA
                }
                #expect(flowB.state == "ESTABLISHED" && flowB.isAssured, "\(flowB)")
                #expect(flowB.reply.destination == ip.routerBWAN && flowB.isPortPreserved, "\(flowB)")
                #expect(try await lab.waitForDirectFlow(on: .routerA) == flowA)
                #expect(try lab.directFlows(on: .routerA) == [flowA])
                #expect(try lab.directFlows(on: .routerB) == [flowB])
                try lab.flushConntrack(.routerA)
                #expect(try lab.directFlows(on: .routerA).isEmpty)
            case .symmetric:
                #expect(
                    outcome.success == nil,
                    "a punch through symmetric NATs connected: \(String(describing: outcome.success?.a.fields))")
                #expect(outcome.failures.count == 3)
                // Why: router A gave A's flow towards B a random port, not the one B aimed at.
                let flows = try lab.directFlows(on: .routerA)
                #expect(flows.count >= 1)
                #expect(flows.allSatisfy { !$0.isPortPreserved && $0.state != "ESTABLISHED" }, "\(flows)")
            }
        }
    }

    /// One connected attempt: each side's result event and the two ports.
    struct PunchSuccess {
        let attempt: Int
        let portA: Int
        let portB: Int
        let a: PyEvent
        let b: PyEvent
    }

    /// Runs up to `attempts` TCP simultaneous opens between host A and host B (tcp_punch.py on each).
    /// Each attempt: both bind a fresh port (listener and dialler on it, as libp2p hosts dial from
    /// their listen port); the rendezvous gives each the other's predicted address, its router's WAN
    /// address and its own port; A connects (its SYN is dropped at router B, which has no mapping
    /// yet); once router A's conntrack shows A's flow (the mapping exists), B connects, and B's SYN
    /// passes router A into A's half-open socket: a simultaneous open. The order is the one DCUtR's
    /// SYNC produces, observed instead of timed.
    static func punch(
        _ lab: NATLab, attempts: Int, timeout: Double
    ) async throws -> (success: PunchSuccess?, failures: [String]) {
        let ip = lab.addresses
        let script = TestVectors.repositoryRoot.appendingPathComponent("Tests/NATLabTests/tcp_punch.py").path
        let a = try lab.run(in: .hostA, executable: try Python.executable(), arguments: [script])
        let b = try lab.run(in: .hostB, executable: try Python.executable(), arguments: [script])
        var failures: [String] = []
        for attempt in 1...attempts {
            let portA = try #require(try await a.command("bind")["port"] as? Int)
            let portB = try #require(try await b.command("bind")["port"] as? Int)
            _ = try await a.command(
                "connect", ["host": ip.routerBWAN, "port": portB, "timeout": timeout, "attempt": attempt, "say": "A"])
            _ = try await lab.waitForFlow(on: .routerA, timeout: .seconds(10)) {
                $0.original.source == ip.hostA && $0.original.sourcePort == portA
                    && $0.original.destination == ip.routerBWAN && $0.original.destinationPort == portB
            }
            _ = try await b.command(
                "connect", ["host": ip.routerAWAN, "port": portA, "timeout": timeout, "attempt": attempt, "say": "B"])
            let limit = Duration.seconds(timeout + 20)
            let resultA = try await a.waitFor("connect", timeout: limit) { $0["attempt"] as? Int == attempt }
            let resultB = try await b.waitFor("connect", timeout: limit) { $0["attempt"] as? Int == attempt }
            if resultA["ok"] as? Bool == true, resultB["ok"] as? Bool == true {
                return (PunchSuccess(attempt: attempt, portA: portA, portB: portB, a: resultA, b: resultB), failures)
            }
            failures.append("attempt \(attempt): A \(resultA.fields), B \(resultB.fields)")
        }
        return (nil, failures)
    }

    @Test("shutdown stops the lab's processes and deletes its namespaces, also when the test throws midway")
    func cleanup() async throws {
        struct Midway: Error {}
        var names: [String] = []
        var directory = ""
        var pid: Int32 = 0
        await #expect(throws: Midway.self) {
            try await NATLab.with(nat: .cone) { lab in
                names = lab.nodes.map(lab.namespace)
                directory = lab.directory
                #expect(Set(try lab.existingNamespaces()) == Set(names))
                pid = try await lab.startAgentd(in: .relay).process.pid
                throw Midway()
            }
        }
        #expect(names.count == 6)
        #expect(Set(try NATLab.listNamespaces()).isDisjoint(with: names))
        #expect(kill(pid, 0) != 0, "agentd (pid \(pid)) still runs")
        #expect(!FileManager.default.fileExists(atPath: directory))

        let lab = try await NATLab.start(nat: .symmetric, publicHosts: 2)
        let made = try lab.existingNamespaces()
        #expect(made.count == 8)
        await lab.shutdown()
        #expect(Set(try NATLab.listNamespaces()).isDisjoint(with: made))
        await lab.shutdown()  // twice is harmless
        await #expect(throws: NATLabError.self) { _ = try await lab.startAgentd(in: .relay) }
    }

    @Test("building and using a lab leaves the root namespace's interfaces, routes, rules and forwarding alone")
    func rootNamespaceUntouched() async throws {
        func snapshot() throws -> [String] {
            let ip = NATLab.toolPath("ip")
            // Interface names and addresses, routes, iptables rules without counters or dates, forwarding.
            let addresses: [String] = try ProcessRunner.runBlocking(ip, ["-o", "addr", "show"]).stdoutText
                .split(separator: "\n").map { line in line.split(separator: " ").prefix(4).joined(separator: " ") }
            let links: [String] = try ProcessRunner.runBlocking(ip, ["-o", "link", "show"]).stdoutText
                .split(separator: "\n").map { line in line.split(separator: " ").prefix(2).joined(separator: " ") }
            let routes: [String] = try ProcessRunner.runBlocking(ip, ["route", "show", "table", "all"]).stdoutText
                .split(separator: "\n").map(String.init)
            let saved: String = try ProcessRunner.runBlocking(NATLab.toolPath("iptables-save"), []).stdoutText
            let rules: [String] = saved.split(separator: "\n").filter { !$0.hasPrefix("#") }
                .map { line in String(line.replacing(/\[\d+:\d+\]/, with: "")) }
            let forwarding = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_forward", encoding: .utf8)
            return links + addresses + routes + rules + [forwarding]
        }
        let before = try snapshot()
        try await NATLab.with(nat: .symmetric) { lab in
            let relay = try await lab.startAgentd(in: .relay)
            let a = try await lab.startAgentd(in: .hostA)
            #expect(try a.agentctl("ping", relay.address).status == 0)
            #expect(try snapshot() == before)
        }
        #expect(try snapshot() == before)
    }

    @Test("a lab's start deletes the namespaces of labs whose owner process is gone, and kills what runs in them")
    func staleSweep() async throws {
        // A PID that is gone: a process that has exited.
        let exited = Process()
        exited.executableURL = URL(fileURLWithPath: "/bin/true")
        try exited.run()
        exited.waitUntilExit()
        let stale = "\(NATLab.prefix)\(exited.processIdentifier)-dead-a"
        let live = "\(NATLab.prefix)1-live-a"  // PID 1 always runs
        for name in [stale, live] {
            #expect(try ProcessRunner.runBlocking(NATLab.toolPath("ip"), ["netns", "add", name]).status == 0)
        }
        // A process left running in the stale namespace.
        let orphan = Process()
        orphan.executableURL = URL(fileURLWithPath: NATLab.toolPath("ip"))
        orphan.arguments = ["netns", "exec", stale, "sleep", "600"]
        try orphan.run()
        defer {
            if orphan.isRunning { kill(orphan.processIdentifier, SIGKILL) }
            _ = try? ProcessRunner.runBlocking(NATLab.toolPath("ip"), ["netns", "del", live])
            _ = try? ProcessRunner.runBlocking(NATLab.toolPath("ip"), ["netns", "del", stale])
        }
        // Wait until it is inside (ip netns exec has entered the namespace).
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while try ProcessRunner.runBlocking(NATLab.toolPath("ip"), ["netns", "pids", stale]).stdoutText.isEmpty,
            clock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(20))
        }

        try await NATLab.with(nat: .cone) { _ in }

        let names = try NATLab.listNamespaces()
        #expect(!names.contains(stale))
        #expect(names.contains(live), "a live owner's namespace was swept")
        let gone = clock.now + .seconds(10)
        while orphan.isRunning, clock.now < gone { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!orphan.isRunning, "the process in the stale namespace still runs")
    }
}

/// `conntrack -L` lines as the lab reads them (no root needed).
@Suite("conntrack flows")
struct ConntrackFlowTests {
    @Test("a NATed TCP flow, a simultaneous open and a UDP flow parse into their tuples")
    func parse() {
        let text = """
            tcp      6 431999 ESTABLISHED src=198.19.1.2 dst=198.18.0.1 sport=40123 dport=4001 src=198.18.0.1 dst=198.18.0.11 sport=4001 dport=51515 [ASSURED] mark=0 use=1
            tcp      6 119 SYN_SENT2 src=198.19.1.2 dst=198.18.0.12 sport=33385 dport=33703 [UNREPLIED] src=198.18.0.12 dst=198.18.0.11 sport=33703 dport=33385 mark=0 use=1
            udp      17 29 src=198.19.2.2 dst=198.18.0.1 sport=5000 dport=53 [UNREPLIED] src=198.18.0.1 dst=198.18.0.12 sport=53 dport=5000 mark=0 use=1
            conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.
            """
        let flows = ConntrackFlow.parse(text)
        #expect(flows.count == 3)
        #expect(flows[0].state == "ESTABLISHED" && flows[0].isAssured)
        #expect(flows[0].original.source == "198.19.1.2" && flows[0].original.sourcePort == 40123)
        #expect(flows[0].reply.destination == "198.18.0.11" && flows[0].mappedPort == 51515)
        #expect(!flows[0].isPortPreserved)
        #expect(flows[1].state == "SYN_SENT2" && flows[1].flags == ["UNREPLIED"] && flows[1].isPortPreserved)
        #expect(flows[2].transport == "udp" && flows[2].state == nil && flows[2].reply.destinationPort == 5000)
        #expect(ConntrackFlow.parse("garbage\n\ntcp 6\n").isEmpty)
    }
}

/// The lab's py-libp2p relay fixture (`NATLab.startPyRelay`), for interop tests through the NATs.
@Suite(
    "py-libp2p's relay in the NAT lab", .serialized,
    .enabled(if: NATLab.enabled, Comment(rawValue: NATLab.skipComment)),
    .enabled(if: Python.available, "needs the Python venv (.venv, scripts/install-deps.sh)"),
    .timeLimit(.minutes(2)))
struct NATLabPyRelayTests {
    @Test("py's relay at 198.18.0.1: agentd behind NAT A reaches it and sees hop; a py peer behind NAT B reserves")
    func pyRelay() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let ip = lab.addresses
            let relay = try await lab.startPyRelay()
            #expect(relay.address == "/ip4/\(ip.relay)/tcp/4001/p2p/\(relay.peerID)")

            let a = try await lab.startAgentd(in: .hostA)
            let ping = try a.agentctl("ping", relay.address, "--json")
            #expect(ping.status == 0, "ping from A: \(ping.stderr)")
            let peers = try #require(try a.agentctl("peers", "--json").json()["peers"] as? [[String: Any]])
            let protocols = peers.first { $0["peer_id"] as? String == relay.peerID }?["protocols"] as? [String] ?? []
            #expect(protocols.contains("/libp2p/circuit/relay/0.2.0/hop"), "\(protocols)")

            let b = try lab.runPyPeer(in: .hostB, ["dial", relay.address, "--reserve"])
            let reservation = try await b.waitFor("reservation")
            #expect(reservation["status"] as? Int == 100)  // OK
            #expect((reservation["expire"] as? Int ?? 0) > Int(Date().timeIntervalSince1970))
            #expect(reservation["addrs"] as? [String] == [relay.address])
            // B's connection to the relay went through router B's NAT.
            _ = try await lab.waitForFlow(on: .routerB) {
                $0.original.source == ip.hostB && $0.original.destination == ip.relay
                    && $0.original.destinationPort == 4001 && $0.state == "ESTABLISHED"
            }
        }
    }

    @Test("py peers on every role: B behind NAT B reserves at py's relay, A behind NAT A reaches it over the circuit")
    func pyCircuit() async throws {
        try await NATLab.with(nat: .cone) { lab in
            let ip = lab.addresses
            let relay = try await lab.startPyRelay()
            let b = try await lab.startPyNATPeer(in: .hostB, relay: relay.address, dcutr: true)
            #expect(b.circuitAddress == "\(relay.address)/p2p-circuit/p2p/\(b.peerID)")
            #expect(b.address == "/ip4/\(ip.hostB)/tcp/4001/p2p/\(b.peerID)")

            let a = try lab.runPyPeer(in: .hostA, ["dial", b.circuitAddress, "--ping", "2", "--timeout", "20"])
            let pings = try await a.waitFor("done", timeout: .seconds(30))
            #expect(pings["event"] as? String == "done")
            #expect(a.events.filter { $0["event"] as? String == "ping" }.count == 2)
            // B saw A come in (over the circuit: A has no route to B, and router B drops inbound).
            _ = try await b.process.waitFor("connected", timeout: .seconds(10)) {
                $0["direction"] as? String == "inbound"
            }
            // Both hosts reached only the relay (A's dial has ended; B holds its reservation).
            #expect(try lab.directFlows(on: .routerA).isEmpty && lab.directFlows(on: .routerB).isEmpty)
            _ = try await lab.waitForFlow(on: .routerB) {
                $0.original.source == ip.hostB && $0.original.destination == ip.relay && $0.state == "ESTABLISHED"
            }
        }
    }
}
