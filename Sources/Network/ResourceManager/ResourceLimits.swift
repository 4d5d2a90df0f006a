/// Every limit the resource manager enforces, by scope, with the defaults of spec/session.md §7
/// ("Resource limits").
///
/// Scopes, outermost first (go-libp2p's resource manager is the model): `system` (the whole node),
/// `ip` (one remote address: an IPv4 /32 or an IPv6 /64), `subnet` (an IPv4 /24 or an IPv6 /48),
/// `protocol_peer` (one protocol of one peer), `connection`, `stream`. Per-IP limits sit well below
/// per-subnet ones, so one address cannot use up the share of its neighbours; and the per-subnet
/// ones below the system's, so one network cannot use up the node.
///
/// The defaults let a node serve a few hundred peers and withstand one attacking address; a test
/// network that runs many nodes on 127.0.0.1 raises the `ip` and `subnet` limits (see
/// `ResourceLimits.loopbackTestNetwork`, and `agentd --limits FILE`).
public struct ResourceLimits: Hashable, Sendable {
    /// Connections in the upgrade phase (TCP accepted, handshake not finished), node-wide.
    public var systemPendingHandshakes = 64
    /// Established connections, node-wide.
    public var systemConnections = 512
    /// Memory of all connections' receive windows and queued outbound bytes, node-wide. 1 GiB.
    public var systemMemory = 1 << 30
    /// Handshakes in flight from one address (IPv4 /32, IPv6 /64).
    public var ipPendingHandshakes = 8
    /// Established inbound connections from one address.
    public var ipConnections = 8
    /// Handshakes in flight from one subnet (IPv4 /24, IPv6 /48).
    public var subnetPendingHandshakes = 32
    /// Established inbound connections from one subnet.
    public var subnetConnections = 64
    /// Inbound streams of one protocol that one peer may hold open at once.
    public var protocolPeerInboundStreams = 64
    /// Live yamux streams on one connection (both directions).
    public var connectionStreams = 1024
    /// The receive windows of one connection's streams added up, the initial 256 KiB of each
    /// included: 32 MiB, so 128 fresh streams, or one stream auto-tuned to its 16 MiB maximum with
    /// room for the rest. A SYN beyond it is refused with RST.
    public var connectionReceiveWindowMemory = 32 << 20
    /// Outbound bytes one connection holds queued (not yet sent for want of window or socket),
    /// counted at what the buffers cost in memory. 16 MiB.
    public var connectionSendQueueMemory = 16 << 20
    /// Outbound bytes one stream may queue. 1 MiB.
    public var streamSendQueueBytes = 1 << 20

    public init() {}

    /// A limit by its scope and resource name, as in a limits file and in `agentctl limits`.
    public enum Entry: String, CaseIterable, Hashable, Sendable {
        case systemPendingHandshakes = "system.pending_handshakes"
        case systemConnections = "system.connections"
        case systemMemory = "system.memory"
        case ipPendingHandshakes = "ip.pending_handshakes"
        case ipConnections = "ip.connections"
        case subnetPendingHandshakes = "subnet.pending_handshakes"
        case subnetConnections = "subnet.connections"
        case protocolPeerInboundStreams = "protocol_peer.inbound_streams"
        case connectionStreams = "connection.streams"
        case connectionReceiveWindowMemory = "connection.receive_window_memory"
        case connectionSendQueueMemory = "connection.send_queue_memory"
        case streamSendQueueBytes = "stream.send_queue_bytes"

        /// `system`, `ip`, `subnet`, `protocol_peer`, `connection`, `stream`.
        public var scope: String { String(rawValue.prefix { $0 != "." }) }
        /// The resource within the scope, e.g. `pending_handshakes`.
        public var resource: String { String(rawValue.drop { $0 != "." }.dropFirst()) }

        /// The smallest value that still lets the node work (a limit of 0 connections is no node).
        var minimum: Int {
            switch self {
            case .connectionReceiveWindowMemory: 256 * 1024  // one stream's initial window (yamux spec)
            case .connectionSendQueueMemory, .streamSendQueueBytes: 64 * 1024
            case .systemMemory: 1 << 20
            default: 1
            }
        }
    }

    /// The scopes, in order.
    public static let scopes = ["system", "ip", "subnet", "protocol_peer", "connection", "stream"]

    public subscript(entry: Entry) -> Int {
        get {
            switch entry {
            case .systemPendingHandshakes: systemPendingHandshakes
            case .systemConnections: systemConnections
            case .systemMemory: systemMemory
            case .ipPendingHandshakes: ipPendingHandshakes
            case .ipConnections: ipConnections
            case .subnetPendingHandshakes: subnetPendingHandshakes
            case .subnetConnections: subnetConnections
            case .protocolPeerInboundStreams: protocolPeerInboundStreams
            case .connectionStreams: connectionStreams
            case .connectionReceiveWindowMemory: connectionReceiveWindowMemory
            case .connectionSendQueueMemory: connectionSendQueueMemory
            case .streamSendQueueBytes: streamSendQueueBytes
            }
        }
        set {
            switch entry {
            case .systemPendingHandshakes: systemPendingHandshakes = newValue
            case .systemConnections: systemConnections = newValue
            case .systemMemory: systemMemory = newValue
            case .ipPendingHandshakes: ipPendingHandshakes = newValue
            case .ipConnections: ipConnections = newValue
            case .subnetPendingHandshakes: subnetPendingHandshakes = newValue
            case .subnetConnections: subnetConnections = newValue
            case .protocolPeerInboundStreams: protocolPeerInboundStreams = newValue
            case .connectionStreams: connectionStreams = newValue
            case .connectionReceiveWindowMemory: connectionReceiveWindowMemory = newValue
            case .connectionSendQueueMemory: connectionSendQueueMemory = newValue
            case .streamSendQueueBytes: streamSendQueueBytes = newValue
            }
        }
    }

    /// Sets `scope`.`resource` to `value`, as a limits file or flag asks.
    /// - Throws: `NetworkError.invalidConfiguration` naming the unknown scope or resource (with the
    ///   known ones), or a value below the entry's minimum.
    public mutating func set(scope: String, resource: String, to value: Int) throws(NetworkError) {
        guard Self.scopes.contains(scope) else {
            throw NetworkError(
                .invalidConfiguration,
                "unknown scope \"\(Self.printable(scope))\"; the scopes are \(Self.scopes.joined(separator: ", "))")
        }
        guard let entry = Entry(rawValue: "\(scope).\(resource)") else {
            let known = Entry.allCases.filter { $0.scope == scope }.map(\.resource)
            throw NetworkError(
                .invalidConfiguration,
                "unknown resource \"\(Self.printable(resource))\" in scope \(scope); it has \(known.joined(separator: ", "))"
            )
        }
        guard value >= entry.minimum else {
            throw NetworkError(
                .invalidConfiguration, "\(entry.rawValue) must be at least \(entry.minimum), not \(value)")
        }
        self[entry] = value
    }

    /// Limits for a test network of many nodes on 127.0.0.1 (the per-address and per-subnet limits
    /// as high as the node-wide ones): every node shares one address there.
    public static var loopbackTestNetwork: ResourceLimits {
        var limits = ResourceLimits()
        limits.ipPendingHandshakes = limits.systemPendingHandshakes
        limits.subnetPendingHandshakes = limits.systemPendingHandshakes
        limits.ipConnections = limits.systemConnections
        limits.subnetConnections = limits.systemConnections
        return limits
    }

    static func printable(_ text: String) -> String {
        let head = text.prefix(64).unicodeScalars.map {
            $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f && $0 != "\"" ? Character($0) : "?"
        }
        return String(head) + (text.count > 64 ? "…" : "")
    }
}
