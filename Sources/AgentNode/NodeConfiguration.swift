import Multiformats
import Network
import Resolution

/// Everything `AgentNode` needs to run, resolved from the command line and defaults.
public struct NodeConfiguration: Sendable {
    /// Default listen addresses (issue #3): all IPv4 and IPv6 interfaces, port 4001.
    public static let defaultListenAddresses = [
        "/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/::/udp/4001/quic-v1",
    ]

    public var dataDirectory: DataDirectory
    /// Addresses to listen on; `/tcp/0` picks a free port.
    public var listenAddresses: [Multiaddr]
    /// The control API socket (default: DATA_DIR/agentd.sock).
    public var apiSocketPath: String
    public var host = Network.Host.Configuration()
    /// The DHT: mode, protocol id, replication, timings.
    public var dht = DHTConfiguration()
    /// Peers to join the network through (each address ends in `/p2p/<peer id>`).
    public var bootstrapAddresses: [Multiaddr] = []
    /// Names to publish on start and keep fresh (`--name`), besides the node's self-certifying name.
    public var names: [AgentName] = []
    /// Serve perf (`/perf/1.0.0`, `agentd --perf`): off by default, as it lets any peer make the
    /// node send and take up to `Perf.defaultMaximumBytes` per stream.
    public var perf = false
    /// Serve AutoNAT (`/libp2p/autonat/1.0.0`): dial other peers back so they learn whether they
    /// are reachable (`--autonat-server on|off`; on by default). Its limits: `autonatServer`.
    public var servesAutoNAT = true
    /// The AutoNAT server's limits and timeouts (spec/network.md, "AutoNAT v1"); its address rule
    /// is made from `host.publicNetworks` when the node starts.
    public var autonatServer = AutoNATServer.Configuration()
    /// The AutoNAT client's timing (spec/network.md, "AutoNAT v1"); its address rule is made from
    /// `host.publicNetworks` when the node starts.
    public var autonat = AutoNATService.Configuration()
    /// Relays to hold a reservation at (`--relay`, each ending in `/p2p/<relay id>`), kept and
    /// renewed for the node's life. Empty: relays are chosen among connected peers that offer hop
    /// while AutoNAT says this node is private (spec/network.md, "agentd and relays").
    public var relayAddresses: [Multiaddr] = []
    /// mDNS discovery on the local links (`--mdns`; spec/network.md, "mDNS").
    public var mdns = false
    /// Serve circuit relay v2 hop (`--relay-service on|off|auto`; auto: while AutoNAT says public).
    public var relayService = RelayServiceMode.auto
    /// The relay service's limits.
    public var relayLimits = RelayLimits()
    /// Automatic relay choice: at most this many reservations at relays chosen among connected peers.
    public var automaticRelays = 2
    /// DCUtR's timeouts.
    public var holePunch = HolePunchService.Configuration()
    /// The SQLite database (default: DATA_DIR/agentd.db); nil keeps records in memory only.
    public var databasePath: String?
    /// The inbox and outbox (default: DATA_DIR/messages.db) and the mailbox replica store
    /// (default: DATA_DIR/mailbox.db); nil keeps them in memory only.
    public var messagesDatabasePath: String?
    public var mailboxDatabasePath: String?
    /// `--inbox-dir`: messages as files (README, "Messages as files").
    public var inboxDirectory: String?

    public init(dataDirectory: DataDirectory, listenAddresses: [Multiaddr], apiSocketPath: String? = nil) {
        self.dataDirectory = dataDirectory
        self.listenAddresses = listenAddresses
        self.apiSocketPath = apiSocketPath ?? dataDirectory.apiSocketPath
        self.databasePath = dataDirectory.databasePath
        self.messagesDatabasePath = dataDirectory.path + "/messages.db"
        self.mailboxDatabasePath = dataDirectory.path + "/mailbox.db"
    }
}

/// When the node serves circuit relay v2 hop (`--relay-service`).
public enum RelayServiceMode: String, Sendable, CaseIterable {
    /// Always.
    case on
    /// Never.
    case off
    /// While AutoNAT says the node is reachable from outside (public); stopped when it says private.
    case auto
}
