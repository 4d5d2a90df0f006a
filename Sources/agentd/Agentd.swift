import AgentNode
import ArgumentParser
import Foundation
import Identity
import Logging
import Multiformats
import Network
import Resolution
import ServiceLifecycle

/// `agentd`: the node daemon of the .agent network.
@main
struct Agentd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentd",
        abstract: "Run an agent node of the .agent network.",
        discussion: """
            agentd holds this host's Ed25519 identity (DATA_DIR/identity.key, created on first start),
            listens for libp2p connections (TCP with Noise and yamux, and QUIC v1; identify and ping are served, perf with --perf),
            applies resource limits (--limits FILE; defaults in spec/session.md), and
            serves the control API that agentctl and local agents use: JSON-RPC 2.0 over the Unix
            socket DATA_DIR/agentd.sock (mode 0600). When it is ready it prints one JSON line on
            stdout: {"event":"ready","peer_id":"…","addrs":["…"],"listen_addrs":["…"],"api":"…"}
            (addrs: where to dial it, with /p2p; listen_addrs: as bound), then one JSON line per node
            event, e.g. {"event":"autonat","verdict":"public|private|unknown","confidence":N} when
            AutoNAT first reaches a verdict and whenever it or its confidence changes,
            {"event":"reservation","relay":…,"addrs":[…],"expires":UNIX} and {"event":"reservation_lost",…}
            for relay reservations, {"event":"hole_punch","peer":…,"result":"direct|failed","attempts":N,"ms":…}
            for DCUtR upgrades of relayed connections; logs go to stderr.
            SIGINT or SIGTERM shut it down cleanly (GoAway on every connection, socket removed).

            It joins the network through its bootstrap peers (--bootstrap, else the first
            bootstrap-nodes.json found in DATA_DIR, beside the executable, in ../share/agentd, or in
            the source checkout it was built in), publishes its self-certifying name
            <peer id>.agent and every --name in the Kademlia DHT (and keeps them fresh), stores
            others' records in DATA_DIR/agentd.db, and resolves names for agentctl.

            Two daemons on one host need different data directories and listen ports, e.g.
            agentd --data-dir /tmp/a --listen /ip4/127.0.0.1/tcp/0
            """
    )

    /// Parses and runs; usage errors exit 2 (DESIGN §5), not ArgumentParser's 64.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                FileHandle.standardOutput.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(0)
            }
            if error is ExitCode { Foundation.exit(code.rawValue) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }

    @Option(name: .customLong("data-dir"), help: "Data directory (default: $AGENTD_HOME, else ~/.agentd).")
    var dataDir: String?

    @Option(
        name: .customLong("listen"),
        help: "A multiaddr to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; /tcp/0 picks a port; default: \(NodeConfiguration.defaultListenAddresses.joined(separator: " and ")))."
    )
    var listen: [String] = []

    @Option(
        name: .customLong("announce"),
        help: "A multiaddr this node is reachable at but cannot see on its interfaces, e.g. its public address behind a port forward: /ip4/203.0.113.7/tcp/4001 (repeatable; advertised first in identify, records and the ready line).")
    var announce: [String] = []

    @Option(
        name: .customLong("public-cidr"),
        help: "Treat a network as public when deciding which addresses learned from other peers to dial, e.g. 198.18.0.0/15 for a lab (repeatable; spec/network.md, \"Addresses\").")
    var publicCIDR: [String] = []

    @Option(name: .customLong("api-socket"), help: "Control API socket path (default: DATA_DIR/agentd.sock).")
    var apiSocket: String?

    @Option(
        name: .customLong("bootstrap"),
        help: "A bootstrap file or a multiaddr ending in /p2p/<peer id> (repeatable; default: see below).")
    var bootstrap: [String] = []

    @Option(name: .customLong("name"), help: "Publish NAME.agent for this node and keep it fresh (repeatable).")
    var names: [String] = []

    @Option(
        name: .customLong("dht-mode"),
        help: "client, server or auto (follows AutoNAT: server when reachable from outside, client when not; server while unknown).")
    var dhtMode: String = "auto"

    @Option(
        name: .customLong("autonat-server"),
        help: "on or off: dial peers back so they learn whether they are reachable (AutoNAT v1, rate-limited; spec/network.md).")
    var autonatServer: String = "on"

    @Option(
        name: .customLong("relay"),
        help: "Hold a circuit relay v2 reservation at this relay, a multiaddr ending in /p2p/<relay id> (repeatable; the node is then reachable at …/p2p/<relay id>/p2p-circuit/p2p/<own id>; default: relays chosen among connected peers while AutoNAT says private).")
    var relay: [String] = []

    @Option(
        name: .customLong("relay-service"),
        help: "on, off or auto: serve circuit relay v2 (hop) to other peers; auto serves while AutoNAT says this node is reachable from outside.")
    var relayService: String = "auto"

    @Flag(
        name: .customLong("mdns"),
        help: "Find peers on the local links by mDNS (_p2p._udp.local) and dial them; refused on a node that listens on loopback only (spec/network.md, \"mDNS\").")
    var mdns = false

    @Option(name: .customLong("dht-protocol"), help: "The kad protocol id (use /ipfs/kad/1.0.0 to join libp2p DHTs).")
    var dhtProtocol: String = DHTConfiguration.agentProtocolID

    @Option(name: .customLong("dht-replication"), help: "Nodes each record is stored at (1-20).")
    var dhtReplication: Int = DHTConfiguration().replicationFactor

    @Option(
        name: .customLong("dht-disjoint-paths"),
        help: "Disjoint lookup paths of value lookups (1-8; S/Kademlia, spec/dht.md §6.5): more resist eclipse, each costs about one lookup's requests.")
    var dhtDisjointPaths: Int = DHTConfiguration().disjointPaths

    @Flag(name: .customLong("perf"), help: "Serve libp2p perf (/perf/1.0.0) to peers; off by default (it is a load generator).")
    var perf = false

    @Option(
        name: .customLong("limits"),
        help: "A JSON file of resource limits, one object per scope, e.g. {\"ip\": {\"connections\": 64}} (spec/session.md §7).")
    var limits: String?

    @Option(
        name: .customLong("inbox-dir"),
        help: "Messages as files: append received messages to DIR/inbox.jsonl, send each line appended to DIR/outbox.jsonl (results in DIR/sent.jsonl)."
    )
    var inboxDir: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "text or json.")
    var logFormat: String = "text"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of: \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be text or json")
        }
        guard (1...20).contains(dhtReplication) else {
            throw ValidationError("--dht-replication must be 1 to 20")
        }
        guard (1...8).contains(dhtDisjointPaths) else {
            throw ValidationError("--dht-disjoint-paths must be 1 to 8")
        }
        guard ["on", "off"].contains(autonatServer) else {
            throw ValidationError("--autonat-server must be on or off")
        }
        guard RelayServiceMode(rawValue: relayService) != nil else {
            throw ValidationError("--relay-service must be on, off or auto")
        }
        _ = try relayAddresses()
        guard DHTMode(rawValue: dhtMode) != nil else {
            throw ValidationError("--dht-mode must be client, server or auto")
        }
        guard dhtProtocol.hasPrefix("/"), dhtProtocol.utf8.count <= 128, !dhtProtocol.contains(where: \.isNewline) else {
            throw ValidationError("--dht-protocol must be a protocol id starting with /, e.g. /ipfs/kad/1.0.0")
        }
        for name in names {
            do {
                _ = try AgentName(Self.withSuffix(name))
            } catch {
                throw ValidationError("bad --name \"\(name)\": \(error.message)")
            }
        }
        for text in listen {
            do {
                _ = try Multiaddr(text)
            } catch {
                throw ValidationError("bad --listen \"\(text)\": \(error.message)")
            }
        }
        _ = try announcedAddresses()
        _ = try publicNetworks()
    }

    /// `--announce`: dialable TCP addresses (`/ip4|ip6|dns*/HOST/tcp/PORT`) without `/p2p`.
    func announcedAddresses() throws -> [Multiaddr] {
        try announce.map { text in
            let address: Multiaddr
            do {
                address = try Multiaddr(text)
            } catch {
                throw ValidationError("bad --announce \"\(text)\": \(error)")
            }
            guard address.peerIDMultihash == nil, AddressScopeRule.isDialable(address) else {
                throw ValidationError(
                    "bad --announce \"\(text)\": give a dialable TCP address without /p2p, e.g. /ip4/203.0.113.7/tcp/4001")
            }
            return address
        }
    }

    /// `--relay`: a relay's direct address ending in its `/p2p/<peer id>`.
    func relayAddresses() throws -> [Multiaddr] {
        try relay.map { text in
            let address: Multiaddr
            do {
                address = try Multiaddr(text)
            } catch {
                throw ValidationError("bad --relay \"\(text)\": \(error)")
            }
            guard case .p2p? = address.components.last, AddressScopeRule.isDialable(address),
                !address.components.contains(.p2pCircuit)
            else {
                throw ValidationError(
                    "bad --relay \"\(text)\": give the relay's TCP address ending in /p2p/<relay id>, e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…")
            }
            return address
        }
    }

    /// `--public-cidr`: IP networks in CIDR notation.
    func publicNetworks() throws -> [IPNetwork] {
        try publicCIDR.map { text in
            do {
                return try IPNetwork(text)
            } catch {
                throw ValidationError("bad --public-cidr \"\(text)\": \(error)")
            }
        }
    }

    /// `alice` and `alice.agent` both name `alice.agent`.
    static func withSuffix(_ name: String) -> String {
        name.lowercased().hasSuffix(AgentName.suffix) ? name : name + AgentName.suffix
    }

    func run() async throws {
        LogFormat(rawValue: logFormat)!.bootstrap(level: Logger.Level(rawValue: logLevel)!)
        let logger = Logger(label: "agentd")
        let directory = DataDirectory.resolve(explicit: dataDir)
        let addresses = try (listen.isEmpty ? NodeConfiguration.defaultListenAddresses : listen).map { try Multiaddr($0) }
        var configuration = NodeConfiguration(dataDirectory: directory, listenAddresses: addresses, apiSocketPath: apiSocket)
        configuration.dht.mode = DHTMode(rawValue: dhtMode)!
        configuration.dht.protocolID = dhtProtocol
        configuration.dht.replicationFactor = dhtReplication
        configuration.dht.disjointPaths = dhtDisjointPaths
        configuration.names = try names.map { try AgentName(Self.withSuffix($0)) }
        configuration.perf = perf
        configuration.servesAutoNAT = autonatServer == "on"
        configuration.relayAddresses = try relayAddresses()
        configuration.relayService = RelayServiceMode(rawValue: relayService)!
        configuration.mdns = mdns
        configuration.inboxDirectory = inboxDir
        configuration.host.announcedAddresses = try announcedAddresses()
        configuration.host.publicNetworks = try publicNetworks()
        if let limits {
            do {
                configuration.host.limits = try LimitsFile.load(limits, dht: &configuration.dht)
            } catch {
                FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
                throw ExitCode(2)
            }
        }
        do {
            let (bootstrapAddresses, source) = try BootstrapSources.resolve(arguments: bootstrap, dataDirectory: directory)
            configuration.bootstrapAddresses = bootstrapAddresses
            logger.info("bootstrap peers", metadata: ["source": "\(source)", "addresses": "\(bootstrapAddresses.count)"])
        } catch {
            FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        let node = AgentNode(
            configuration: configuration, logger: logger,
            onReady: { ready in FileHandle.standardOutput.write(Data((ready.jsonLine + "\n").utf8)) },
            onEvent: { event in FileHandle.standardOutput.write(Data((event.jsonLine + "\n").utf8)) })
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: node)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch let error as IdentityError {
            FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
            throw ExitCode(1)
        } catch let error as NodeError {
            FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
            throw ExitCode(error.kind == .invalidConfiguration ? 2 : 1)
        } catch {
            FileHandle.standardError.write(Data("agentd: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
