import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Owns the node's limits (`ResourceLimits`) and the usage counted against them, scope by scope:
/// system → ip / subnet → protocol_peer → connection → stream (go-libp2p's resource manager is the
/// model). Every admission asks it first; every refusal is counted and logged, rate-limited.
///
/// What it counts here: handshakes in flight and established inbound connections (system, per IP,
/// per subnet), inbound streams per protocol per peer, and memory reserved by connections from the
/// node's budget. The per-connection and per-stream limits are enforced inside each connection's
/// yamux session (see `yamuxConfiguration(base:)`), which reserves node memory through
/// `reserveMemory(_:)` in granules so that the shared lock is not on the per-frame path.
///
/// The deny list (`DenyList`) is consulted at accept (address), after the handshake (peer id) and at
/// dial (both).
///
/// `@unchecked Sendable`: every mutable property is read and written only under `lock`; `limits`
/// and `logger` are immutable.
public final class ResourceManager: @unchecked Sendable {
    /// Granule in which connections reserve node memory: 1 MiB, so a connection touches the shared
    /// counter about once per MiB of windows or queue it takes or gives back.
    public static let memoryGranule = 1 << 20
    /// At most one refusal log line per scope and resource in this interval; the rest are counted
    /// and summarised in the next line (a flood of refused sockets must not flood the log).
    public static let refusalLogInterval: TimeAmount = .seconds(10)

    /// The keys of one remote address: its host (/32, /64) and its subnet (/24, /48).
    public struct AddressKeys: Hashable, Sendable {
        public let host: IPNetwork
        public let subnet: IPNetwork

        public init(_ address: IPAddress) {
            let lengths = IPNetwork.subnetPrefixLengths(address.family)
            host = IPNetwork(containing: address, prefixLength: lengths.host)
            subnet = IPNetwork(containing: address, prefixLength: lengths.site)
        }
    }

    /// A refused admission: which limit, and a message for the log or the caller.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        /// The limit that refused; `nil` for the deny list.
        public let entry: ResourceLimits.Entry?
        public let message: String
        public var description: String { message }
    }

    /// One row of `agentctl limits`: a scope's resource, its usage (for the per-address and
    /// per-peer scopes: the highest of any member), its limit, and how many admissions it refused.
    public struct Usage: Hashable, Sendable {
        public let scope: String
        public let resource: String
        public let used: Int
        public let limit: Int
        public let refused: Int
    }

    public let limits: ResourceLimits
    let logger: Logger
    private let now: @Sendable () -> NIODeadline

    private let lock = NIOLock()
    private var pendingTotal = 0
    private var pendingByHost: [IPNetwork: Int] = [:]
    private var pendingBySubnet: [IPNetwork: Int] = [:]
    private var connectionsTotal = 0
    private var connectionsByHost: [IPNetwork: Int] = [:]
    private var connectionsBySubnet: [IPNetwork: Int] = [:]
    private var inboundStreams: [ProtocolPeer: Int] = [:]
    private var memoryReserved = 0
    private var refusedCounts: [ResourceLimits.Entry: Int] = [:]
    private var deniedCount = 0
    private var logState: [ResourceLimits.Entry?: (since: NIODeadline, suppressed: Int)] = [:]
    private var denyList: DenyList
    /// Peak usage of the per-connection scopes, reported by connections as they change.
    private var connectionPeaks: [ResourceLimits.Entry: Int] = [:]

    struct ProtocolPeer: Hashable {
        let peer: PeerID
        let protocolID: String
    }

    /// - Parameter now: the clock for log rate-limiting (tests pass a virtual one).
    public init(
        limits: ResourceLimits = ResourceLimits(), denyList: DenyList = DenyList(), logger: Logger,
        now: @escaping @Sendable () -> NIODeadline = { .now() }
    ) {
        self.limits = limits
        self.denyList = denyList
        self.logger = logger
        self.now = now
    }

    // MARK: Handshakes and connections

    /// Admits an inbound TCP connection into the handshake phase, or refuses it (deny list, or the
    /// system, per-IP or per-subnet pending-handshake limit). Release with `handshakeEnded(_:)`.
    public func admitHandshake(from address: IPAddress?) -> Result<AddressKeys?, Refusal> {
        let keys = address.map(AddressKeys.init)
        let refusal = lock.withLock { () -> Refusal? in
            if let address, let network = denyList.network(containing: address) {
                deniedCount += 1
                return Refusal(entry: nil, message: "\(address) is blocked (\(network))")
            }
            if pendingTotal >= limits.systemPendingHandshakes {
                return refuse(.systemPendingHandshakes, "\(pendingTotal) handshakes in flight")
            }
            // An address (or subnet) already at its connection limit would be refused after the
            // handshake: refused now, before the handshake's work.
            if connectionsTotal >= limits.systemConnections {
                return refuse(.systemConnections, "\(connectionsTotal) connections established")
            }
            if let keys {
                if connectionsByHost[keys.host, default: 0] >= limits.ipConnections {
                    return refuse(.ipConnections, "\(limits.ipConnections) connections from \(keys.host.address)")
                }
                if connectionsBySubnet[keys.subnet, default: 0] >= limits.subnetConnections {
                    return refuse(.subnetConnections, "\(limits.subnetConnections) connections from \(keys.subnet)")
                }
                if pendingByHost[keys.host, default: 0] >= limits.ipPendingHandshakes {
                    return refuse(
                        .ipPendingHandshakes,
                        "\(limits.ipPendingHandshakes) handshakes in flight from \(keys.host.address)")
                }
                if pendingBySubnet[keys.subnet, default: 0] >= limits.subnetPendingHandshakes {
                    return refuse(
                        .subnetPendingHandshakes,
                        "\(limits.subnetPendingHandshakes) handshakes in flight from \(keys.subnet)")
                }
                pendingByHost[keys.host, default: 0] += 1
                pendingBySubnet[keys.subnet, default: 0] += 1
            }
            pendingTotal += 1
            return nil
        }
        if let refusal {
            logRefusal(refusal, what: "inbound connection")
            return .failure(refusal)
        }
        return .success(keys)
    }

    /// The handshake admitted with `keys` ended (established or failed).
    public func handshakeEnded(_ keys: AddressKeys?) {
        lock.withLock {
            pendingTotal -= 1
            if let keys {
                Self.decrement(&pendingByHost, keys.host)
                Self.decrement(&pendingBySubnet, keys.subnet)
            }
        }
    }

    /// Admits an established connection of `peer` (inbound ones count in their address's scopes
    /// too), or refuses it (deny list, or a connection limit). Release with `connectionClosed`.
    public func admitConnection(peer: PeerID, inboundFrom keys: AddressKeys?) -> Refusal? {
        let refusal = lock.withLock { () -> Refusal? in
            if denyList.contains(peer) {
                deniedCount += 1
                return Refusal(entry: nil, message: "peer \(peer) is blocked")
            }
            if connectionsTotal >= limits.systemConnections {
                return refuse(.systemConnections, "\(connectionsTotal) connections established")
            }
            if let keys {
                if connectionsByHost[keys.host, default: 0] >= limits.ipConnections {
                    return refuse(.ipConnections, "\(limits.ipConnections) connections from \(keys.host.address)")
                }
                if connectionsBySubnet[keys.subnet, default: 0] >= limits.subnetConnections {
                    return refuse(.subnetConnections, "\(limits.subnetConnections) connections from \(keys.subnet)")
                }
                connectionsByHost[keys.host, default: 0] += 1
                connectionsBySubnet[keys.subnet, default: 0] += 1
            }
            connectionsTotal += 1
            return nil
        }
        if let refusal { logRefusal(refusal, what: "connection of \(peer)") }
        return refusal
    }

    /// A connection admitted by `admitConnection` closed.
    public func connectionClosed(inboundFrom keys: AddressKeys?) {
        lock.withLock {
            connectionsTotal -= 1
            if let keys {
                Self.decrement(&connectionsByHost, keys.host)
                Self.decrement(&connectionsBySubnet, keys.subnet)
            }
        }
    }

    // MARK: Streams

    /// Admits an inbound stream of `protocolID` from `peer`, or refuses it at the per-protocol
    /// per-peer limit. Release with `inboundStreamEnded`.
    public func admitInboundStream(peer: PeerID, protocolID: String) -> Refusal? {
        let key = ProtocolPeer(peer: peer, protocolID: protocolID)
        let refusal = lock.withLock { () -> Refusal? in
            guard inboundStreams[key, default: 0] < limits.protocolPeerInboundStreams else {
                return refuse(
                    .protocolPeerInboundStreams,
                    "\(limits.protocolPeerInboundStreams) inbound \(protocolID) streams of \(peer)")
            }
            inboundStreams[key, default: 0] += 1
            return nil
        }
        if let refusal { logRefusal(refusal, what: "inbound stream") }
        return refusal
    }

    public func inboundStreamEnded(peer: PeerID, protocolID: String) {
        lock.withLock { Self.decrement(&inboundStreams, ProtocolPeer(peer: peer, protocolID: protocolID)) }
    }

    // MARK: Memory

    /// Reserves `bytes` of the node's memory budget for a connection; false (and counted) when the
    /// budget cannot hold them.
    public func reserveMemory(_ bytes: Int) -> Bool {
        precondition(bytes >= 0, "reserveMemory of a negative amount")
        let refusal = lock.withLock { () -> Refusal? in
            guard memoryReserved + bytes <= limits.systemMemory else {
                return refuse(.systemMemory, "\(memoryReserved) of \(limits.systemMemory) bytes reserved")
            }
            memoryReserved += bytes
            return nil
        }
        if let refusal { logRefusal(refusal, what: "memory reservation") }
        return refusal == nil
    }

    /// Gives back `bytes` reserved with `reserveMemory`.
    public func releaseMemory(_ bytes: Int) {
        lock.withLock {
            memoryReserved -= bytes
            precondition(memoryReserved >= 0, "released more memory than was reserved")
        }
    }

    /// A connection's session refused something at one of its own limits (a SYN beyond the stream
    /// or window budget): counted and logged like the node's refusals.
    public func connectionRefused(_ entry: ResourceLimits.Entry, _ message: String) {
        let refusal = lock.withLock { refuse(entry, message) }
        logRefusal(refusal, what: "stream")
    }

    /// A connection reports its usage of a per-connection resource; the highest is kept for
    /// `usage()` (a peak: per-connection usage is not summed anywhere).
    public func reportConnectionUsage(_ entry: ResourceLimits.Entry, _ used: Int) {
        lock.withLock { connectionPeaks[entry] = max(connectionPeaks[entry] ?? 0, used) }
    }

    // MARK: Deny list

    /// Whether `peer` is on the deny list.
    public func isDenied(_ peer: PeerID) -> Bool { lock.withLock { denyList.contains(peer) } }

    /// The deny-list network that holds `address`, if any.
    public func deniedNetwork(containing address: IPAddress) -> IPNetwork? {
        lock.withLock { denyList.network(containing: address) }
    }

    /// The deny list now.
    public var deniedEntries: DenyList { lock.withLock { denyList } }

    /// Adds `entry` to the deny list; false if it was there.
    /// - Throws: `NetworkError.resourceLimit` when the list is full.
    public func deny(_ entry: DenyList.Entry) throws(NetworkError) -> Bool {
        let result = lock.withLock { Result { () throws(NetworkError) -> Bool in try denyList.insert(entry) } }
        return try result.get()
    }

    /// Removes `entry` from the deny list; false if it was not there.
    public func allow(_ entry: DenyList.Entry) -> Bool { lock.withLock { denyList.remove(entry) } }

    // MARK: Usage

    /// Every limit with its usage and refusals, in scope order.
    public func usage() -> [Usage] {
        lock.withLock {
            ResourceLimits.Entry.allCases.map { entry in
                let used: Int
                switch entry {
                case .systemPendingHandshakes: used = pendingTotal
                case .systemConnections: used = connectionsTotal
                case .systemMemory: used = memoryReserved
                case .ipPendingHandshakes: used = pendingByHost.values.max() ?? 0
                case .ipConnections: used = connectionsByHost.values.max() ?? 0
                case .subnetPendingHandshakes: used = pendingBySubnet.values.max() ?? 0
                case .subnetConnections: used = connectionsBySubnet.values.max() ?? 0
                case .protocolPeerInboundStreams: used = inboundStreams.values.max() ?? 0
                case .connectionStreams, .connectionReceiveWindowMemory, .connectionSendQueueMemory,
                    .streamSendQueueBytes:
                    used = connectionPeaks[entry] ?? 0
                }
                return Usage(
                    scope: entry.scope, resource: entry.resource, used: used, limit: limits[entry],
                    refused: refusedCounts[entry] ?? 0)
            }
        }
    }

    /// Admissions refused by the deny list.
    public var deniedAdmissions: Int { lock.withLock { deniedCount } }

    /// Refusals counted for `entry` so far.
    public func refusals(_ entry: ResourceLimits.Entry) -> Int { lock.withLock { refusedCounts[entry] ?? 0 } }

    // MARK: Helpers

    /// Counts a refusal; call under `lock`.
    private func refuse(_ entry: ResourceLimits.Entry, _ detail: String) -> Refusal {
        refusedCounts[entry, default: 0] += 1
        return Refusal(entry: entry, message: "\(entry.rawValue) limit (\(limits[entry])) reached: \(detail)")
    }

    /// Logs a refusal, at most once per `refusalLogInterval` per limit; the ones in between are
    /// summed up in the next line.
    private func logRefusal(_ refusal: Refusal, what: String) {
        let time = now()
        let suppressed = lock.withLock { () -> Int? in
            if let state = logState[refusal.entry], time - state.since < Self.refusalLogInterval {
                logState[refusal.entry] = (state.since, state.suppressed + 1)
                return nil
            }
            let suppressed = logState[refusal.entry]?.suppressed ?? 0
            logState[refusal.entry] = (time, 0)
            return suppressed
        }
        guard let suppressed else { return }
        var metadata: Logger.Metadata = ["limit": "\(refusal.entry?.rawValue ?? "deny_list")"]
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        logger.warning("refused \(what): \(refusal.message)", metadata: metadata)
    }

    private static func decrement<Key: Hashable>(_ counts: inout [Key: Int], _ key: Key) {
        guard let count = counts[key] else { preconditionFailure("resource manager: released \(key) twice") }
        counts[key] = count > 1 ? count - 1 : nil
    }
}
