import Foundation
import NIOConcurrencyHelpers

/// A NAT lab in Linux network namespaces, built by the test that needs it (as root) and torn down
/// after it (README, "The NAT lab"; ../shared/notes/nat-traversal.md):
///
/// ```
///  hostA 198.19.1.2 ── routerA [LAN 198.19.1.1 | MASQUERADE | WAN 198.18.0.11] ─┐
///                                                                               ├─ internet 198.18.0.0/24: relay 198.18.0.1
///  hostB 198.19.2.2 ── routerB [LAN 198.19.2.1 | MASQUERADE | WAN 198.18.0.12] ─┘   (public hosts 198.18.0.2…)
/// ```
///
/// Every node is a network namespace named `agl-<owner pid>-<run id>-<role>` (`NATLab.prefix`):
/// the "internet" namespace holds a bridge; the relay (and any public host) hangs off it with one
/// interface; each router has a WAN interface on the bridge and a LAN link to its host; each host
/// routes through its router. A router's NAT is `.cone` (`MASQUERADE`, which keeps the source port
/// when it can) or `.symmetric` (`MASQUERADE --random-fully`: a random port per flow). Its filter
/// table drops unsolicited inbound traffic (FORWARD: only ESTABLISHED,RELATED from the WAN) and
/// every NEW packet from the WAN to the router itself (INPUT): without that rule the far peer's
/// early hole-punch SYN reaches the router, conntrack records a flow for that port, MASQUERADE then
/// picks another port for the local peer's own SYN, and punching fails. The relay has no route to
/// the LANs, so a dial to a LAN address fails at once; a dial to a router's WAN address is dropped.
///
/// Nothing outside the namespaces changes: interfaces are created inside them (a veth pair is
/// made in one namespace with its peer in the other), iptables rules and sysctls are set inside
/// them, IPv6 is off on the lab's interfaces (loopback keeps `::1`) unless the lab is made with
/// `ipv6: true` (then the relay's and the public hosts' interfaces on the bridge also have IPv6: a
/// link-local address and one in fd00:198:18::/64; the routers and hosts stay IPv4), and no
/// namespace has a route to the real network.
///
/// Lifecycle: `start` first sweeps namespaces of the prefix whose owner process is gone (a crashed
/// test run): it kills the processes still inside them by PID and deletes them. `shutdown()` stops
/// every process the lab started (SIGTERM, SIGKILL after 5 s, by PID), kills any other process left
/// inside its namespaces, deletes them and the lab's temporary directory. `NATLab.with` runs a body
/// and shuts the lab down however the body ends.
///
/// Needs root, `ip` (iproute2), `iptables` and `conntrack` (scripts/install-deps.sh). Tests use
/// `.enabled(if: NATLab.enabled, NATLab.skipComment)`: skipped with that reason where the lab
/// cannot be built; with `AGENTD_REQUIRE_NATLAB=1` (`make test` as root) they run and fail instead.
public final class NATLab: Sendable {
    /// A router's NAT behaviour.
    public enum NAT: String, Sendable, CaseIterable, CustomStringConvertible {
        /// Port-preserving `MASQUERADE`: a host's flows keep their source port (endpoint-independent
        /// mapping while the port is free), so a hole punch to the predicted port works.
        case cone
        /// `MASQUERADE --random-fully`: every flow gets a random source port, so the port a peer
        /// observed is not the one the next destination sees, and punching fails.
        case symmetric

        public var description: String { rawValue }
    }

    /// A node of the lab: one network namespace each.
    public enum Node: Hashable, Sendable, CustomStringConvertible {
        /// The "internet" bridge (198.18.0.0/24) and nothing else.
        case internet
        /// The relay / bootstrap host on the internet, 198.18.0.1.
        case relay
        /// Router A: WAN 198.18.0.11, LAN 198.19.1.1.
        case routerA
        /// Router B: WAN 198.18.0.12, LAN 198.19.2.1.
        case routerB
        /// The host behind router A, 198.19.1.2.
        case hostA
        /// The host behind router B, 198.19.2.2.
        case hostB
        /// Another public host on the internet, `1...9`: 198.18.0.(1+n). Made with
        /// `start(…, publicHosts: n)`.
        case publicHost(Int)

        /// The namespace name's last part.
        public var role: String {
            switch self {
            case .internet: "net"
            case .relay: "relay"
            case .routerA: "ra"
            case .routerB: "rb"
            case .hostA: "a"
            case .hostB: "b"
            case .publicHost(let n): "p\(n)"
            }
        }

        public var description: String {
            switch self {
            case .internet: "internet"
            case .relay: "relay"
            case .routerA: "routerA"
            case .routerB: "routerB"
            case .hostA: "hostA"
            case .hostB: "hostB"
            case .publicHost(let n): "publicHost(\(n))"
            }
        }

        /// The router in front of a host (`nil` for public nodes and routers).
        public var router: Node? {
            switch self {
            case .hostA: .routerA
            case .hostB: .routerB
            default: nil
            }
        }
    }

    /// The lab's address plan (the same in every lab: each lab has namespaces of its own).
    public struct Addresses: Sendable {
        /// The internet: 198.18.0.0/24 (RFC 2544 benchmarking space, never routed anywhere real).
        public let internetCIDR = "198.18.0.0/24"
        public let relay = "198.18.0.1"
        public let routerAWAN = "198.18.0.11"
        public let routerBWAN = "198.18.0.12"
        public let routerALAN = "198.19.1.1"
        public let routerBLAN = "198.19.2.1"
        public let hostA = "198.19.1.2"
        public let hostB = "198.19.2.2"

        /// Public host `n` (1...9): 198.18.0.(1+n).
        public func publicHost(_ n: Int) -> String { "198.18.0.\(1 + n)" }

        /// The internet's IPv6 prefix in a lab made with `ipv6: true` (a unique-local prefix, RFC
        /// 4193, that mirrors 198.18: never routed anywhere real).
        public let internet6CIDR = "fd00:198:18::/64"

        /// The IPv6 address of the relay (`fd00:198:18::1`) or public host n (`fd00:198:18::(1+n)`)
        /// in a lab made with `ipv6: true`; `nil` for the other nodes (IPv4 only).
        public func ipv6(of node: Node) -> String? {
            switch node {
            case .relay: "fd00:198:18::1"
            case .publicHost(let n): "fd00:198:18::\(1 + n)"
            default: nil
            }
        }

        /// The node's own address as others see it: a router's WAN address, a host's LAN address;
        /// `nil` for the bridge.
        public func of(_ node: Node) -> String? {
            switch node {
            case .internet: nil
            case .relay: relay
            case .routerA: routerAWAN
            case .routerB: routerBWAN
            case .hostA: hostA
            case .hostB: hostB
            case .publicHost(let n): publicHost(n)
            }
        }

        /// The WAN address that the internet sees a host's flows come from (its router's).
        public func wan(of node: Node) -> String? {
            switch node {
            case .hostA, .routerA: routerAWAN
            case .hostB, .routerB: routerBWAN
            default: of(node)
            }
        }
    }

    /// Namespace names start with this, then `<owner pid>-<run id>-<role>`.
    public static let prefix = "agl-"

    public let addresses = Addresses()
    /// The NAT of router A and of router B.
    public let natA: NAT
    public let natB: NAT
    /// How many extra public hosts (`Node.publicHost(1...)`) the lab has.
    public let publicHosts: Int
    /// Whether the relay and the public hosts also have IPv6 on the bridge (`Addresses.ipv6(of:)`).
    public let ipv6: Bool
    /// `agl-<pid>-<run id>`: every namespace of this lab starts with it.
    public let name: String
    /// A temporary directory of the lab's own (agentd data directories, …), removed at shutdown.
    public let directory: String

    private let state = NIOLockedValueBox(State())

    private struct State: Sendable {
        var processes: [JSONLineProcess] = []
        var daemons = 0
        var shutDown = false
    }

    /// Every node of this lab.
    public var nodes: [Node] {
        [.internet, .relay, .routerA, .routerB, .hostA, .hostB] + (0..<publicHosts).map { .publicHost($0 + 1) }
    }

    /// The namespace of `node` (for `ip netns exec` or `ip -n`).
    public func namespace(_ node: Node) -> String { "\(name)-\(node.role)" }

    /// The namespaces of this lab that exist now.
    public func existingNamespaces() throws -> [String] {
        try Self.listNamespaces().filter { $0.hasPrefix(name + "-") }
    }

    private init(natA: NAT, natB: NAT, publicHosts: Int, ipv6: Bool, name: String, directory: String) {
        self.natA = natA
        self.natB = natB
        self.publicHosts = publicHosts
        self.ipv6 = ipv6
        self.name = name
        self.directory = directory
    }

    // MARK: Availability

    /// Why the lab cannot be built here, or `nil` when it can (root, and `ip`, `iptables`,
    /// `conntrack` found).
    public static let unavailableReason: String? = {
        #if os(Linux)
            var missing: [String] = []
            for tool in ["ip", "iptables", "conntrack"] where Tools.find(tool) == nil { missing.append(tool) }
            if geteuid() != 0 {
                return "the NAT lab needs root (network namespaces)"
                    + (missing.isEmpty ? "" : " and \(missing.joined(separator: ", "))")
            }
            if !missing.isEmpty {
                return "the NAT lab needs \(missing.joined(separator: ", ")) (scripts/install-deps.sh)"
            }
            return nil
        #else
            return "the NAT lab needs Linux network namespaces"
        #endif
    }()

    /// The path of a system tool the lab uses (`ip`, `iptables`, `conntrack`, …), found in PATH or
    /// the sbin directories.
    public static func toolPath(_ name: String) -> String { Tools.path(name) }

    /// Whether the lab can be built here.
    public static var isAvailable: Bool { unavailableReason == nil }

    /// `AGENTD_REQUIRE_NATLAB=1`: lab tests run (and fail) even where the lab cannot be built.
    public static var required: Bool { ProcessInfo.processInfo.environment["AGENTD_REQUIRE_NATLAB"] == "1" }

    /// Whether lab tests should run: the lab can be built, or it is required (and fails to start).
    public static var enabled: Bool { required || isAvailable }

    /// The reason a skipped lab test gives.
    public static let skipComment =
        "NAT lab tests need root and iproute2, iptables, conntrack (scripts/install-deps.sh); run as root or set AGENTD_REQUIRE_NATLAB=1 to fail instead of skipping"

    // MARK: Building and tearing down

    /// Builds a lab whose two routers have the NAT `nat`, with `publicHosts` extra public hosts
    /// (and IPv6 beside IPv4 on the bridge for the relay and them with `ipv6`).
    public static func start(nat: NAT, publicHosts: Int = 0, ipv6: Bool = false) async throws -> NATLab {
        try await start(routerA: nat, routerB: nat, publicHosts: publicHosts, ipv6: ipv6)
    }

    /// Builds a lab with router A's NAT `routerA` and router B's `routerB`.
    public static func start(
        routerA: NAT, routerB: NAT, publicHosts: Int = 0, ipv6: Bool = false
    ) async throws -> NATLab {
        if let reason = unavailableReason { throw NATLabError(reason) }
        guard (0...9).contains(publicHosts) else { throw NATLabError("publicHosts must be 0...9, not \(publicHosts)") }
        sweepStale()
        let run = String(UInt16.random(in: 0...UInt16.max), radix: 16)
        let name = "\(prefix)\(getpid())-\(run)"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let lab = NATLab(
            natA: routerA, natB: routerB, publicHosts: publicHosts, ipv6: ipv6, name: name, directory: directory)
        do {
            try lab.build()
        } catch {
            await lab.shutdown()
            throw error
        }
        return lab
    }

    /// Builds a lab, runs `body` with it, and shuts the lab down when `body` returns or throws.
    public static func with<T>(
        nat: NAT, publicHosts: Int = 0, ipv6: Bool = false, _ body: (NATLab) async throws -> T
    ) async throws -> T {
        try await with(routerA: nat, routerB: nat, publicHosts: publicHosts, ipv6: ipv6, body)
    }

    /// Builds a lab with a NAT per router, runs `body` with it, and shuts the lab down when `body`
    /// returns or throws.
    public static func with<T>(
        routerA: NAT, routerB: NAT, publicHosts: Int = 0, ipv6: Bool = false, _ body: (NATLab) async throws -> T
    ) async throws -> T {
        let lab = try await start(routerA: routerA, routerB: routerB, publicHosts: publicHosts, ipv6: ipv6)
        let result: T
        do {
            result = try await body(lab)
        } catch {
            await lab.shutdown()
            throw error
        }
        await lab.shutdown()
        return result
    }

    private func build() throws {
        let ns = namespace
        try Tools.run("ip", ["-batch", "-"], stdin: nodes.map { "netns add \(ns($0))\n" }.joined())
        // IPv6 off on every interface made from now on (loopback, which exists, keeps ::1): the
        // lab is IPv4, and v6 link-local neighbours would be reachable around the NATs.
        for node in nodes {
            var settings = ["net.ipv6.conf.default.disable_ipv6=1"]
            if node == .routerA || node == .routerB { settings.append("net.ipv4.ip_forward=1") }
            try Tools.run("ip", ["netns", "exec", ns(node), Tools.path("sysctl"), "-qw"] + settings)
        }
        // The bridge, and one veth pair per attached node with its far end in that node's namespace.
        // With IPv6 the bridge does not snoop multicast listeners (MLD): the lab has no querier, and
        // snooping must not decide where ff02::fb goes; it floods multicast like a plain switch.
        var bridge = "link set lo up\nlink add br0 type bridge\(ipv6 ? " mcast_snooping 0" : "")\nlink set br0 up\n"
        let attached: [(Node, String)] =
            [(.relay, "eth0"), (.routerA, "wan"), (.routerB, "wan")]
            + (0..<publicHosts).map { (.publicHost($0 + 1), "eth0") }
        for (node, device) in attached {
            bridge += "link add \(node.role) type veth peer name \(device) netns \(ns(node))\n"
            bridge += "link set \(node.role) master br0\nlink set \(node.role) up\n"
        }
        try Tools.run("ip", ["-n", ns(.internet), "-batch", "-"], stdin: bridge)
        for node in [Node.relay] + (0..<publicHosts).map({ .publicHost($0 + 1) }) {
            let address = addresses.of(node)!
            var commands = "link set lo up\naddr add \(address)/24 dev eth0\n"
            if ipv6, let address6 = addresses.ipv6(of: node) {
                // IPv6 on this one interface, without duplicate address detection (its link-local
                // address would be tentative for a second, and multicast from it refused).
                try Tools.run(
                    "ip",
                    [
                        "netns", "exec", ns(node), Tools.path("sysctl"), "-qw", "net.ipv6.conf.eth0.accept_dad=0",
                        "net.ipv6.conf.eth0.disable_ipv6=0",
                    ])
                commands += "addr add \(address6)/64 dev eth0 nodad\n"
            }
            try Tools.run("ip", ["-n", ns(node), "-batch", "-"], stdin: commands + "link set eth0 up\n")
        }
        for (router, host, nat) in [(Node.routerA, Node.hostA, natA), (.routerB, .hostB, natB)] {
            let lan = router == .routerA ? addresses.routerALAN : addresses.routerBLAN
            try Tools.run(
                "ip", ["-n", ns(router), "-batch", "-"],
                stdin: """
                    link set lo up
                    addr add \(addresses.of(router)!)/24 dev wan
                    link set wan up
                    link add lan type veth peer name eth0 netns \(ns(host))
                    addr add \(lan)/24 dev lan
                    link set lan up

                    """)
            try Tools.run(
                "ip", ["-n", ns(host), "-batch", "-"],
                stdin: """
                    link set lo up
                    addr add \(addresses.of(host)!)/24 dev eth0
                    link set eth0 up
                    route add default via \(lan)

                    """)
            try Tools.run("ip", ["netns", "exec", ns(router), Tools.path("iptables-restore")], stdin: Self.rules(nat))
        }
    }

    /// A router's iptables rules (iptables-restore format).
    static func rules(_ nat: NAT) -> String {
        """
        *nat
        :PREROUTING ACCEPT [0:0]
        :INPUT ACCEPT [0:0]
        :OUTPUT ACCEPT [0:0]
        :POSTROUTING ACCEPT [0:0]
        -A POSTROUTING -o wan -j MASQUERADE\(nat == .symmetric ? " --random-fully" : "")
        COMMIT
        *filter
        :INPUT ACCEPT [0:0]
        :FORWARD ACCEPT [0:0]
        :OUTPUT ACCEPT [0:0]
        -A INPUT -i wan -m conntrack --ctstate NEW -j DROP
        -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        -A FORWARD -i wan -j DROP
        COMMIT

        """
    }

    /// Stops every process the lab started (SIGTERM, then SIGKILL 5 s later, by PID), kills any
    /// process still inside its namespaces, deletes the namespaces and the lab's directory. Safe to
    /// call twice; never throws (what it cannot remove, the next lab's sweep does).
    public func shutdown() async {
        let processes = state.withLockedValue { state -> [JSONLineProcess] in
            state.shutDown = true
            defer { state.processes = [] }
            return state.processes
        }
        await withTaskGroup(of: Void.self) { group in
            for process in processes {
                group.addTask {
                    process.signal(SIGTERM)
                    await process.stop()
                }
            }
        }
        Self.remove(namespaces: nodes.map(namespace))
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Kills the processes inside `namespaces` (by PID) and deletes the namespaces.
    private static func remove(namespaces: [String]) {
        for namespace in namespaces {
            let pids = (try? Tools.run("ip", ["netns", "pids", namespace]).stdoutText) ?? ""
            for pid in pids.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) where pid != getpid() {
                kill(pid, SIGKILL)
            }
        }
        _ = try? ProcessRunner.runBlocking(
            Tools.path("ip"), ["-force", "-batch", "-"],
            stdin: Array(namespaces.map { "netns del \($0)\n" }.joined().utf8))
    }

    /// The names of all network namespaces (`ip netns list`).
    public static func listNamespaces() throws -> [String] {
        try Tools.run("ip", ["netns", "list"]).stdoutText.split(separator: "\n").compactMap {
            $0.split(separator: " ").first.map(String.init)
        }
    }

    /// Deletes the namespaces (and temporary directories) of labs whose owner process is gone,
    /// killing what still runs inside them. Returns the namespaces deleted.
    @discardableResult
    public static func sweepStale() -> [String] {
        func stale(_ name: String) -> Bool {
            guard name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }) else {
                return false
            }
            return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
        }
        let namespaces = ((try? listNamespaces()) ?? []).filter(stale)
        if !namespaces.isEmpty { remove(namespaces: namespaces) }
        let temporary = FileManager.default.temporaryDirectory
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? [] where stale(entry) {
            try? FileManager.default.removeItem(at: temporary.appendingPathComponent(entry))
        }
        return namespaces
    }

    // MARK: Running things in the lab

    /// Starts `executable` with `arguments` inside `node`'s namespace (`ip netns exec`, which execs
    /// it: the process keeps the PID returned). It prints JSON lines the test can await; the lab
    /// stops it at shutdown (or `stop` it earlier).
    public func run(
        in node: Node, executable: String, arguments: [String] = [], environment: [String: String] = [:]
    ) throws -> JSONLineProcess {
        try state.withLockedValue { state in
            guard !state.shutDown else { throw NATLabError("the lab \(name) is shut down") }
            let process = try JSONLineProcess(
                executable: Tools.path("ip"), arguments: ["netns", "exec", namespace(node), executable] + arguments,
                environment: environment)
            state.processes.append(process)
            return process
        }
    }

    /// Stops a process the lab started (SIGTERM, SIGKILL after 5 s) and waits for it.
    public func stop(_ process: JSONLineProcess) async {
        state.withLockedValue { state in state.processes.removeAll { $0 === process } }
        process.signal(SIGTERM)
        await process.stop()
    }

    /// Runs a command to completion inside `node`'s namespace and returns its status and output.
    public func exec(
        in node: Node, _ executable: String, _ arguments: [String] = [], stdin: [UInt8]? = nil
    ) throws -> ProcessRunner.Result {
        try ProcessRunner.runBlocking(
            Tools.path("ip"), ["netns", "exec", namespace(node), executable] + arguments, stdin: stdin)
    }

    // MARK: agentd in the lab

    /// An agentd running in the lab.
    public struct Daemon: Sendable {
        public let node: Node
        public let process: JSONLineProcess
        public let dataDirectory: String
        /// Its ready line.
        public let ready: PyEvent
        public let peerID: String
        /// The ready line's dialable addresses (with `/p2p/…`).
        public let addrs: [String]

        /// Its first address on the node's own IP (`/ip4/<ip>/tcp/<port>/p2p/<id>`), else its first.
        public let address: String

        /// Runs `agentctl ARGUMENTS --data-dir DIR --timeout T` against this daemon (from the root
        /// namespace: the control socket is a file; the daemon does the networking in its node).
        public func agentctl(_ arguments: [String], timeout: Double = 10) throws -> ProcessRunner.Result {
            try ProcessRunner.runBlocking(
                ProcessRunner.executable("agentctl"),
                arguments + ["--data-dir", dataDirectory, "--timeout", String(timeout)])
        }

        /// `agentctl` with the arguments given one by one.
        public func agentctl(_ arguments: String...) throws -> ProcessRunner.Result {
            try agentctl(arguments)
        }
    }

    /// Starts agentd in `node` and waits for its ready line. Unless `arguments` say otherwise it
    /// runs with `--listen /ip4/0.0.0.0/tcp/4001`, an empty bootstrap list, `--log-level warning`,
    /// and `--public-cidr 198.18.0.0/24` (the lab's internet counts as public; the LANs, in
    /// 198.19.0.0/16, stay reserved as a real LAN is private). `dataDirectory` reuses a directory
    /// (a restart keeps the identity); by default each daemon gets a fresh one in the lab's
    /// directory.
    public func startAgentd(
        in node: Node, arguments: [String] = [], dataDirectory: String? = nil,
        readyTimeout: Duration = .seconds(30)
    ) async throws -> Daemon {
        let index = try state.withLockedValue { state -> Int in
            guard !state.shutDown else { throw NATLabError("the lab \(name) is shut down") }
            state.daemons += 1
            return state.daemons
        }
        let dataDirectory = dataDirectory ?? "\(directory)/\(node.role)-\(index)"
        var all = ["--data-dir", dataDirectory]
        if !arguments.contains("--listen") { all += ["--listen", "/ip4/0.0.0.0/tcp/4001"] }
        if !arguments.contains("--bootstrap") {
            let empty = "\(directory)/no-peers.json"
            if !FileManager.default.fileExists(atPath: empty) {
                try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: empty))
            }
            all += ["--bootstrap", empty]
        }
        if !arguments.contains("--log-level") { all += ["--log-level", "warning"] }
        if !arguments.contains("--public-cidr") { all += ["--public-cidr", addresses.internetCIDR] }
        let process = try run(in: node, executable: ProcessRunner.executable("agentd"), arguments: all + arguments)
        let ready: PyEvent
        do {
            ready = try await process.waitFor("ready", timeout: readyTimeout)
        } catch {
            await stop(process)
            throw NATLabError("agentd in \(node) (pid \(process.pid)) printed no ready line: \(error)")
        }
        guard let peerID = ready["peer_id"] as? String, let addrs = ready["addrs"] as? [String] else {
            await stop(process)
            throw NATLabError("agentd in \(node): ready line without peer_id or addrs: \(ready.fields)")
        }
        let ip = addresses.of(node).map { "/ip4/\($0)/" } ?? ""
        let address = addrs.first { !ip.isEmpty && $0.hasPrefix(ip) } ?? addrs.first ?? ""
        return Daemon(
            node: node, process: process, dataDirectory: dataDirectory, ready: ready, peerID: peerID, addrs: addrs,
            address: address)
    }

    // MARK: py-libp2p in the lab

    /// Starts Tests/Interop/py/peer.py (py-libp2p 0.8.1, see its header) in `node` with
    /// `arguments`, e.g. `["dial", relay.address, "--reserve"]`; stopped by the lab.
    public func runPyPeer(in node: Node, _ arguments: [String]) throws -> JSONLineProcess {
        try run(in: node, executable: try Python.executable(), arguments: [JSONLineProcess.script] + arguments)
    }

    /// A py-libp2p relay running in the lab.
    public struct PyRelay: Sendable {
        public let node: Node
        public let process: JSONLineProcess
        public let peerID: String
        /// `/ip4/<ip>/tcp/<port>/p2p/<id>`.
        public let address: String
    }

    /// Starts py-libp2p 0.8.1's circuit relay v2 (hop and stop, `CircuitV2Protocol` with py's
    /// default limits; `peer.py listen --relay-hop`) in `node` (the relay host by default) at
    /// `<node ip>:port`, and waits for its ready line. Its quirks: ../shared/notes/nat-traversal.md
    /// (1-10: it keeps reading the hop stream after a reply, honours `peer.id` in RESERVE, holds 4
    /// reservations in total unless `maxReservations`, writes a status into the pipe at a limit).
    public func startPyRelay(
        in node: Node = .relay, port: Int = 4001, maxReservations: Int? = nil, readyTimeout: Duration = .seconds(30)
    ) async throws -> PyRelay {
        guard let ip = addresses.of(node) else { throw NATLabError("\(node) has no address for a relay") }
        var arguments = ["listen", "--listen", "/ip4/\(ip)/tcp/\(port)", "--relay-hop"]
        if let maxReservations { arguments += ["--max-reservations", String(maxReservations)] }
        let process = try runPyPeer(in: node, arguments)
        let ready: PyEvent
        do {
            ready = try await process.waitFor("ready", timeout: readyTimeout)
        } catch {
            await stop(process)
            throw NATLabError("the py relay in \(node) (pid \(process.pid)) printed no ready line: \(error)")
        }
        guard let peerID = ready["peer_id"] as? String, let address = (ready["addrs"] as? [String])?.first else {
            await stop(process)
            throw NATLabError("the py relay in \(node): ready line without peer_id or addrs: \(ready.fields)")
        }
        return PyRelay(node: node, process: process, peerID: peerID, address: address)
    }

    /// A py-libp2p peer listening in the lab, reserved at a relay (`startPyNATPeer`).
    public struct PyNATPeer: Sendable {
        public let node: Node
        public let process: JSONLineProcess
        public let peerID: String
        /// Its listen address on the node's own IP, with `/p2p/…`.
        public let address: String
        /// `RELAY/p2p-circuit/p2p/<id>`: where others reach it through the relay.
        public let circuitAddress: String
        /// The relay's answer: `{"event":"reservation","status":100,"expire":…,"addrs":[…],"circuit":…}`.
        public let reservation: PyEvent
    }

    /// Starts a py-libp2p 0.8.1 peer in `node` (a host behind a NAT, typically) listening on
    /// `0.0.0.0:port`, which connects to `relay` (a multiaddr with `/p2p/`), reserves there, accepts
    /// circuits through it (STOP) and, with `dcutr`, runs py's DCUtR service (which initiates hole
    /// punches on every relayed connection every 2 s and first dials all known addresses for up to
    /// 10 s: quirks 18-26 of ../shared/notes/nat-traversal.md). Waits for the reservation; throws if
    /// the relay refuses it.
    public func startPyNATPeer(
        in node: Node, relay: String, port: Int = 4001, dcutr: Bool = true, timeout: Duration = .seconds(30)
    ) async throws -> PyNATPeer {
        var arguments = ["listen", "--listen", "/ip4/0.0.0.0/tcp/\(port)", "--reserve-at", relay]
        if dcutr { arguments.append("--dcutr") }
        let process = try runPyPeer(in: node, arguments)
        do {
            let ready = try await process.waitFor("ready", timeout: timeout)
            let reservation = try await process.waitFor("reservation", timeout: timeout)
            guard let peerID = ready["peer_id"] as? String, let circuit = reservation["circuit"] as? String else {
                throw NATLabError("no peer_id or circuit address: \(ready.fields) \(reservation.fields)")
            }
            guard reservation["status"] as? Int == 100 else {
                throw NATLabError("the relay refused the reservation: \(reservation.fields)")
            }
            let ip = addresses.of(node) ?? "0.0.0.0"
            return PyNATPeer(
                node: node, process: process, peerID: peerID, address: "/ip4/\(ip)/tcp/\(port)/p2p/\(peerID)",
                circuitAddress: circuit, reservation: reservation)
        } catch {
            await stop(process)
            throw NATLabError("the py peer in \(node) (pid \(process.pid)) did not reserve at \(relay): \(error)")
        }
    }

    // MARK: Observing the routers

    /// The connection-tracking table of `node` (a router's NAT flows), `conntrack -L`.
    public func conntrack(_ node: Node, protocol proto: String = "tcp") throws -> [ConntrackFlow] {
        let result = try exec(in: node, Tools.path("conntrack"), ["-L", "-p", proto])
        guard result.status == 0 else {
            throw NATLabError("conntrack -L in \(node) failed (\(result.status)): \(result.stderr)")
        }
        return ConntrackFlow.parse(result.stdoutText)
    }

    /// Waits (polling the table every 20 ms, at most `timeout`) for a flow on `node` that satisfies
    /// `predicate`, and returns it.
    public func waitForFlow(
        on node: Node, protocol proto: String = "tcp", timeout: Duration = .seconds(10),
        where predicate: (ConntrackFlow) -> Bool
    ) async throws -> ConntrackFlow {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let flows = try conntrack(node, protocol: proto)
            if let flow = flows.first(where: predicate) { return flow }
            guard clock.now < deadline else {
                throw NATLabError("no matching \(proto) flow on \(node) within \(timeout); flows: \(flows)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The flows on `router` that go from its host straight to the other router's WAN address: a
    /// direct (hole-punched) connection between the two hosts, not one through the relay.
    public func directFlows(on router: Node) throws -> [ConntrackFlow] {
        let (host, far) =
            router == .routerA ? (addresses.hostA, addresses.routerBWAN) : (addresses.hostB, addresses.routerAWAN)
        guard router == .routerA || router == .routerB else { throw NATLabError("\(router) is not a router") }
        return try conntrack(router).filter { $0.original.source == host && $0.original.destination == far }
    }

    /// Waits (at most `timeout`) for an established direct flow on `router` (`directFlows`): the
    /// trace a hole punch leaves.
    public func waitForDirectFlow(on router: Node, timeout: Duration = .seconds(10)) async throws -> ConntrackFlow {
        let (host, far) =
            router == .routerA ? (addresses.hostA, addresses.routerBWAN) : (addresses.hostB, addresses.routerAWAN)
        return try await waitForFlow(on: router, timeout: timeout) {
            $0.original.source == host && $0.original.destination == far && $0.state == "ESTABLISHED"
        }
    }

    /// Empties `router`'s connection-tracking table (`conntrack -F`): every NAT mapping is gone, as
    /// after a router reboot; established connections through it then stall.
    public func flushConntrack(_ router: Node) throws {
        let result = try exec(in: router, Tools.path("conntrack"), ["-F"])
        guard result.status == 0 else {
            throw NATLabError("conntrack -F in \(router) failed (\(result.status)): \(result.stderr)")
        }
    }

    /// Packets the router's INPUT rule dropped (NEW from the WAN to the router itself).
    public func inputDrops(_ router: Node) throws -> Int { try dropped(router, chain: "INPUT") }

    /// Packets the router's FORWARD rule dropped (unsolicited from the WAN towards the LAN).
    public func forwardDrops(_ router: Node) throws -> Int { try dropped(router, chain: "FORWARD") }

    private func dropped(_ router: Node, chain: String) throws -> Int {
        let result = try exec(in: router, Tools.path("iptables"), ["-L", chain, "-v", "-n", "-x"])
        guard result.status == 0 else {
            throw NATLabError("iptables -L \(chain) in \(router) failed (\(result.status)): \(result.stderr)")
        }
        // Rule lines: pkts bytes target prot opt in out source destination [match…]
        return result.stdoutText.split(separator: "\n").reduce(0) { sum, line in
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard fields.count > 2, fields[2] == "DROP", let packets = Int(fields[0]) else { return sum }
            return sum + packets
        }
    }
}

/// An error building or using the lab.
public struct NATLabError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The system tools the lab runs.
enum Tools {
    /// `name` in PATH or the sbin directories (root's tools are there, and PATH may lack them).
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return directories.lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The path of `name`, or `name` itself (the run then fails with a clear error).
    static func path(_ name: String) -> String { find(name) ?? name }

    /// Runs the tool `name`; a non-zero exit throws with its stderr.
    @discardableResult
    static func run(_ name: String, _ arguments: [String], stdin: String? = nil) throws -> ProcessRunner.Result {
        let result = try ProcessRunner.runBlocking(path(name), arguments, stdin: stdin.map { Array($0.utf8) })
        guard result.status == 0 else {
            throw NATLabError(
                "\(name) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.stderr)"
                    + (stdin.map { "\ninput:\n\($0)" } ?? ""))
        }
        return result
    }
}
