#if canImport(Glibc)
    import Glibc
#endif
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Session

/// A libp2p host over TCP: listens and dials, upgrades connections (Noise, yamux), keeps one
/// logical connection per peer, and routes inbound streams to protocol handlers by protocol id.
public final class Host: Sendable {
    public struct Configuration: Sendable {
        /// The resource manager's limits (spec/session.md §7): handshakes in flight and connections
        /// per node, per IP and per subnet; inbound streams per protocol per peer; memory per node,
        /// connection and stream. The per-connection and per-stream ones override the matching
        /// `yamux` settings.
        public var limits = ResourceLimits()
        /// Peers and networks refused at accept, after the handshake and at dial.
        public var denyList = DenyList()
        /// The whole upgrade (multistream, Noise, muxer) must finish within this time.
        public var handshakeTimeout: TimeAmount = .seconds(10)
        /// Dials give up after this long.
        public var dialTimeout: TimeAmount = .seconds(15)
        /// Opt-in: QUIC sends runs of datagrams with UDP GSO where the system has it (spec/network.md,
        /// "Connections and streams"); off (the default): one `sendmmsg` entry per datagram.
        /// agent-bench measures both. Off by default because QUIC through the NAT lab's routers
        /// failed intermittently with it (UDPHolePunchLabTests, cone NATs: 1 run of 4).
        public var quicSegmentationOffload = false
        /// Idle connections (see `streamQuietPeriod`) are closed after this long without stream
        /// traffic (nil: never), unless their peer is protected (`Host.protect`).
        public var idleTimeout: TimeAmount? = .seconds(300)
        /// A connection with open streams counts as idle, for trimming and `idleTimeout`, once none
        /// of its streams moved a frame for this long: a stream the peer opened and left silent
        /// does not keep a connection busy for ever.
        public var streamQuietPeriod: TimeAmount = .seconds(30)
        /// A connection on which identify has not completed this long after the upgrade is closed
        /// (a peer that speaks yamux but not libp2p cannot hold a connection slot).
        public var identifyTimeout: TimeAmount = .seconds(30)
        /// Our own identify exchange (stream, negotiation, response) gives up after this long.
        public var identifyStreamTimeout: TimeAmount = .seconds(10)
        /// A stream that has not agreed its protocol (multistream-select) this long after it
        /// opened is reset, inbound and outbound.
        public var streamNegotiationTimeout: TimeAmount = .seconds(10)
        /// Trimming (as go-libp2p's connection manager): once more than `connectionHighWater`
        /// connections are established, idle ones (see `streamQuietPeriod`; established at least
        /// `connectionGracePeriod` ago) are closed, the longest idle first, until
        /// `connectionLowWater` remain. A busy or protected connection is never trimmed. DHT lookups
        /// connect to many peers once; without trimming a busy node would hold them all until the
        /// idle timeout and reach the `system.connections` limit. Defaults 160 / 192 / 60 s, as go-libp2p.
        public var connectionLowWater = 160
        public var connectionHighWater = 192
        public var connectionGracePeriod: TimeAmount = .seconds(60)
        /// yamux settings; data frames are sized so that a frame with its header fills one Noise
        /// message (65519 bytes), which halves per-frame work on bulk streams compared with the
        /// state machine's conservative 16 KiB default.
        public var yamux: YamuxConfiguration = {
            var configuration = YamuxConfiguration()
            configuration.maximumFramePayload = NoiseCipherState.maximumPlaintextLength - YamuxFrame.headerSize
            return configuration
        }()
        /// identify's agent version.
        public var agentVersion = "agentd/0.1.0"
        /// Noise rekeying, announced in every handshake and used with peers that announce it too
        /// (spec/session.md §3.1); `nil` announces nothing. Default: every 1000 messages or 10 min.
        public var rekey: NoiseRekeyPolicy? = NoiseRekeyPolicy()
        /// Addresses this node is reachable at that it cannot see on its interfaces (a public
        /// address forwarded to it: `--announce`); advertised first, in identify and records.
        public var announcedAddresses: [Multiaddr] = []
        /// Networks treated as public by the dial rule for third-party addresses
        /// (`--public-cidr`; spec/network.md, "Addresses").
        public var publicNetworks: [IPNetwork] = []

        public init() {}
    }

    public let identity: Ed25519.PrivateKey
    public let peerID: PeerID
    let core: HostCore
    /// `addressScopeRule` as last computed, with the listen addresses and time it was computed for.
    private let scopeRuleCache = NIOLockedValueBox<(rule: AddressScopeRule, bound: [Multiaddr], at: NIODeadline)?>(nil)
    /// How long a computed `addressScopeRule` is used: reading the interfaces (getifaddrs) costs
    /// ~130 µs in a debug build, and the DHT asks for every answer; interface changes are seen
    /// within this time.
    static let scopeRuleLifetime: TimeAmount = .seconds(5)

    public init(
        identity: Ed25519.PrivateKey, group: EventLoopGroup, configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "agentd.host")
    ) {
        self.identity = identity
        self.peerID = PeerID(publicKey: identity.publicKey)
        self.core = HostCore(identity: identity, group: group, configuration: configuration, logger: logger)
        Identify.register(on: self)
        Ping.register(on: self)
    }

    /// Listens on a `/ip4|ip6/…/tcp/PORT` address (`/tcp/0` picks a port) and returns the bound
    /// address.
    public func listen(on address: Multiaddr) async throws -> Multiaddr {
        try await core.listen(on: address)
    }

    /// The addresses we listen on, as bound.
    public var listenAddresses: [Multiaddr] { core.listenAddresses }

    /// The addresses others can dial: the announced addresses, then the listen addresses with an
    /// unspecified IP (`0.0.0.0`, `::`) replaced by the addresses of this host's interfaces of that
    /// family (link-local IPv6 left out; loopback only when there is nothing else; see
    /// `LocalInterface.advertisedAddresses`). What identify, our DHT records and the ready line
    /// announce.
    public var advertisedAddresses: [Multiaddr] { core.advertisedAddresses }

    /// The dial rule for addresses a third party supplied (spec/network.md, "Addresses"), from this
    /// node's addresses and interfaces (as read at most `scopeRuleLifetime` ago, and again whenever
    /// the listen addresses change) and `Configuration.publicNetworks`.
    public var addressScopeRule: AddressScopeRule {
        let now = NIODeadline.now()
        let bound = core.listenAddresses
        if let cached = scopeRuleCache.withLockedValue({ $0 }), cached.bound == bound,
            now - cached.at < Self.scopeRuleLifetime
        {
            return cached.rule
        }
        let interfaces = LocalInterface.current()
        let own = LocalInterface.advertisedAddresses(
            bound: bound, announced: core.configuration.announcedAddresses, interfaces: interfaces)
        let rule = AddressScopeRule(
            ownAddresses: own, interfaces: interfaces, publicNetworks: core.configuration.publicNetworks)
        scopeRuleCache.withLockedValue { $0 = (rule, bound, now) }
        return rule
    }

    /// Registers `handler` for inbound streams that negotiate `protocolID`.
    public func handle(_ protocolID: String, _ handler: @escaping @Sendable (MuxedStream) async -> Void) {
        core.setHandler(protocolID, handler)
    }

    /// Stops serving `protocolID` (new streams for it are refused); connected peers are told with
    /// an identify push.
    public func unhandle(_ protocolID: String) {
        core.removeHandler(protocolID)
    }

    /// The protocol ids we serve.
    public var protocols: [String] { core.protocolIDs }

    /// What ``connect(to:reuse:)`` does when a connection to the address's peer is already live.
    public enum ConnectionReuse: Sendable {
        /// Any live connection to the peer is used; `address` is dialled only without one.
        case anyToPeer
        /// A live connection is used only if it was dialled to `address` itself; otherwise
        /// `address` is dialled, so an unreachable address or another peer's address fails even
        /// while the peer is connected (addresses a user typed: `agentctl connect`, ping, perf).
        case sameAddress
    }

    /// Connects to `address`, which must end in `/p2p/<peer id>`; `reuse` says when a live
    /// connection to that peer answers instead of a dial. Fails if the peer that answers is not
    /// that peer (`SessionError` `peer_id_mismatch`).
    public func connect(to address: Multiaddr, reuse: ConnectionReuse = .anyToPeer) async throws -> Connection {
        try await core.connect(to: address, reuse: reuse)
    }

    /// Dials `address` (ending in `/p2p/<peer id>`) on a fresh TCP connection, whatever connections
    /// to that peer exist, and closes it as soon as the Noise handshake authenticated the peer,
    /// before the handshake completes: proof that the peer is reachable at that address (the DHT's
    /// dial-back), leaving no connection on either side.
    /// A host task: refused once `shutdown()` began, which cancels it (closing its socket) and waits.
    public func probe(_ address: Multiaddr) async throws {
        try await core.runTracked("probe of \(address)") { [core] in try await AddressProbe.probe(address, core: core) }
    }

    /// Opens a stream to `peer` (which must be connected) and agrees one of `protocols`.
    /// - Parameter priority: the stream's share of the connection when several streams send at
    ///   once (weighted fair queueing over four levels, see `YamuxPriority`).
    public func newStream(to peer: PeerID, protocols: [String], priority: YamuxPriority = .normal) async throws
        -> MuxedStream
    {
        guard let connection = core.connection(to: peer) else {
            throw NetworkError(.connectionFailed, "not connected to \(peer)")
        }
        return try await newStream(on: connection, protocols: protocols, priority: priority)
    }

    /// Opens a stream on `connection` and agrees one of `protocols`.
    public func newStream(
        on connection: Connection, protocols: [String], priority: YamuxPriority = .normal
    ) async throws -> MuxedStream {
        try await core.newStream(on: connection, protocols: protocols, priority: priority)
    }

    /// Opens a stream on `connection` for `protocolID` and sends `initial` right behind the
    /// proposal, without waiting for the peer to agree (multistream-select's lazy dialer): one
    /// round trip less for request/response protocols. The agreement is checked on the first read;
    /// a peer that does not speak the protocol makes it fail.
    public func newStream(
        on connection: Connection, lazyProtocol protocolID: String, initial: ByteBuffer,
        priority: YamuxPriority = .normal
    ) async throws -> MuxedStream {
        let raw = try await connection.eventLoop.flatSubmit { connection.openStream(priority: priority) }.get()
        do {
            return try await raw.negotiateOutboundLazy(
                protocolID: protocolID, initial: initial, timeout: core.configuration.streamNegotiationTimeout)
        } catch {
            raw.reset()
            throw error
        }
    }

    /// The resource manager: limits, usage, refusals, the deny list.
    public var resources: ResourceManager { core.resources }

    /// Adds `entry` to the deny list and closes the connections it now covers (the peer's, or those
    /// from an address in the network). The caller persists the list.
    /// - Throws: `NetworkError.resourceLimit` when the list is full.
    @discardableResult
    public func block(_ entry: DenyList.Entry) async throws(NetworkError) -> Bool {
        try await core.block(entry)
    }

    /// Removes `entry` from the deny list; false if it was not there.
    @discardableResult
    public func unblock(_ entry: DenyList.Entry) -> Bool { core.resources.allow(entry) }

    /// The live connection to `peer`, if any.
    public func connection(to peer: PeerID) -> Connection? { core.connection(to: peer) }

    /// Sends our identify to every connected peer (`/ipfs/id/push/1.0.0`). The host does this by
    /// itself when it starts listening on an address or serving a protocol; call it after other
    /// changes peers should know of.
    public func pushIdentify() { Identify.pushToAll(core: core) }

    /// The host's events from now on (`HostEvent`): connections established and closed, identify
    /// results, observed addresses, listen address changes. Each call is a new subscription with
    /// its own buffer of `bufferSize` events; a subscriber that falls further behind loses the
    /// oldest ones (counted and logged under `label`). The stream finishes when the host shuts
    /// down; dropping it (or cancelling its reader) ends the subscription.
    public func events(label: String, bufferSize: Int = 1024) -> AsyncStream<HostEvent> {
        core.events.subscribe(label: label, bufferSize: bufferSize)
    }

    /// Runs `body` as a task of the host: `shutdown()` cancels it and waits for it (at most 10 s,
    /// then reports it), so a service's background work ends with the host instead of outliving it.
    /// Refused (not run) once shutdown began.
    public func spawn(_ label: String, _ body: @escaping @Sendable () async -> Void) {
        core.spawn(label, body)
    }

    /// Snapshots of all established connections.
    public func connections() async -> [ConnectionInfo] { await core.connectionInfos() }

    /// What identify told us about `peer`, while it is connected (the peer store keeps connected
    /// peers only).
    public func peerInfo(_ peer: PeerID) -> IdentifyInfo? { core.peerInfo(peer) }

    /// Protects `peer`'s connections under `tag`: while any tag holds, they are never trimmed nor
    /// closed by the idle timeout (go-libp2p's connection manager `Protect`). For a part of the node
    /// that needs the connection kept although it may carry no traffic for a while (a relay
    /// reservation, a conversation waiting for a response, a mailbox transfer). The protection
    /// belongs to the peer and lasts until `unprotect`, across reconnections.
    public func protect(_ peer: PeerID, tag: String) { core.protect(peer, tag: tag) }

    /// Removes `tag` from `peer`'s protection; returns whether another tag still protects it.
    @discardableResult
    public func unprotect(_ peer: PeerID, tag: String) -> Bool { core.unprotect(peer, tag: tag) }

    /// Whether `peer` is protected under `tag`, or under any tag when `tag` is nil.
    public func isProtected(_ peer: PeerID, tag: String? = nil) -> Bool { core.isProtected(peer, tag: tag) }

    /// Closes listeners and connections (GoAway on each).
    public func shutdown() async {
        await core.shutdown()
    }

    /// Stops at once, like a killed process: sockets are closed without GoAway, then the host
    /// shuts down. For tests of abrupt departures and for fatal errors.
    public func abort() async {
        core.abortConnections()
        await core.shutdown()
    }
}
