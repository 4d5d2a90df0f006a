import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// libp2p mDNS discovery on the local links (libp2p/specs `discovery/mdns.md`; spec/network.md,
/// "mDNS"): one UDP socket on port 5353 joined to 224.0.0.251 on every IPv4 interface that is not
/// loopback. It asks for `_p2p._udp.local` at start and every `queryInterval`, answers others'
/// queries with our addresses on the link the query came from, and keeps what others announce in a
/// per-link table: only addresses inside that link's subnet, until their TTL passes. Peers found
/// are dialled; the table is never handed to remote peers (nothing reads it but `addresses(of:)`
/// and the dial). The socket lives as long as the host (a host task closes it at shutdown).
///
/// `@unchecked Sendable`: the mutable state is behind `state` (a lock); the rest is immutable.
public final class MDNSService: @unchecked Sendable {
    public static let group = try! SocketAddress(ipAddress: "224.0.0.251", port: 5353)

    public struct Configuration: Sendable {
        public var queryInterval: TimeAmount = .seconds(10)
        /// The TTL of our records (RFC 6762 §10: 120 s for host records).
        public var ttl: UInt32 = 120
        public var port = 5353
        public init() {}
    }

    /// A local IPv4 link: the interface's device, its address and subnet.
    struct Link: Sendable {
        let device: NIONetworkDevice
        let address: IPAddress
        let interface: LocalInterface

        func contains(_ ip: IPAddress) -> Bool {
            IPNetwork(containing: ip, prefixLength: interface.prefixLength)
                == IPNetwork(containing: address, prefixLength: interface.prefixLength)
        }
    }

    struct Entry {
        var addresses: [Multiaddr]
        var expires: NIODeadline
    }

    let host: Host
    let configuration: Configuration
    let logger: Logger
    let links: [Link]
    let peerName: String
    /// Told of each peer found and connected (the node seeds its DHT with it).
    let onPeerFound: @Sendable (PeerID, [Multiaddr]) async -> Void
    private let channel: Channel
    /// Link name → peer → what it announced there.
    private let state = NIOLockedValueBox<[String: [PeerID: Entry]]>([:])

    private init(
        host: Host, configuration: Configuration, logger: Logger, links: [Link], channel: Channel,
        onPeerFound: @escaping @Sendable (PeerID, [Multiaddr]) async -> Void
    ) {
        self.host = host
        self.onPeerFound = onPeerFound
        self.configuration = configuration
        self.logger = logger
        self.links = links
        self.channel = channel
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        self.peerName = String((0..<32).map { _ in alphabet[Int(random.next() % 32)] })
    }

    /// The IPv4 links mDNS runs on: up, multicast-capable, not loopback.
    /// - Throws: `NetworkError.invalidConfiguration` when the interfaces cannot be listed.
    static func currentLinks() throws(NetworkError) -> [Link] {
        let devices: [NIONetworkDevice]
        do {
            devices = try System.enumerateDevices()
        } catch {
            throw NetworkError(.invalidConfiguration, "mDNS cannot list the network interfaces: \(error)")
        }
        return devices.compactMap { device in
            guard let socketAddress = device.address, socketAddress.protocol == .inet,
                let address = IPAddress(socketAddress), AddressScope.of(address) != .loopback,
                AddressScope.of(address) != .unspecified
            else { return nil }
            let prefix = device.netmask.flatMap(IPAddress.init).map(\.leadingOneBits) ?? 32
            return Link(device: device, address: address, interface: LocalInterface(address: address, prefixLength: prefix))
        }
    }

    /// Starts mDNS for `host`; `onPeerFound` is told of each peer found and connected, with the
    /// addresses it announced on the link (each ending in `/p2p/<peer>`).
    /// - Throws: `NetworkError.invalidConfiguration` on a node without a non-loopback IPv4
    ///   interface (mDNS never runs on a loopback-only node), or when the socket cannot be set up.
    public static func start(
        host: Host, configuration: Configuration = Configuration(), logger: Logger,
        onPeerFound: @escaping @Sendable (PeerID, [Multiaddr]) async -> Void = { _, _ in }
    ) async throws -> MDNSService {
        let links = try currentLinks()
        guard !links.isEmpty else {
            throw NetworkError(.invalidConfiguration, "mDNS needs an IPv4 interface other than loopback; this node has none")
        }
        var logger = logger
        logger[metadataKey: "service"] = "mdns"
        let handler = Handler()
        let channel: Channel
        do {
            channel = try await DatagramBootstrap(group: host.core.group)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                }
                .bind(host: "0.0.0.0", port: configuration.port).get()
            let options = channel as! SocketOptionProvider
            try await options.setIPMulticastLoop(0).get()
            try await options.setIPMulticastTTL(255).get()
            let multicast = channel as! MulticastChannel
            for link in links { try await multicast.joinGroup(group, device: link.device).get() }
        } catch {
            throw NetworkError(.invalidConfiguration, "cannot set up mDNS on UDP 5353: \(error)")
        }
        let service = MDNSService(
            host: host, configuration: configuration, logger: logger, links: links, channel: channel,
            onPeerFound: onPeerFound)
        handler.service.withLockedValue { $0 = service }
        host.spawn("mDNS") {
            defer { channel.close(promise: nil) }
            while !Task.isCancelled {
                for link in links { await service.send(MDNSDiscovery.query(), on: link) }
                try? await Task.sleep(nanoseconds: UInt64(configuration.queryInterval.nanoseconds))
            }
        }
        logger.info("mDNS discovery on \(links.map(\.device.name).joined(separator: ", "))")
        return service
    }

    /// What peers announced on our links for `peer`, unexpired (used for dialling, never sent on).
    public func addresses(of peer: PeerID) -> [Multiaddr] {
        let now = NIODeadline.now()
        return state.withLockedValue { table in
            table.values.flatMap { peers -> [Multiaddr] in
                guard let entry = peers[peer], entry.expires > now else { return [] }
                return entry.addresses
            }
        }
    }

    /// The peers known on each link (tests, status).
    public func peersByLink() -> [String: [PeerID]] {
        let now = NIODeadline.now()
        return state.withLockedValue { table in
            table.mapValues { peers in peers.filter { $0.value.expires > now }.map(\.key) }
        }
    }

    // MARK: I/O

    private func send(_ message: DNSMessage, on link: Link) async {
        guard link.address.family == .v4 else { return }
        do {
            // The interface to send the group datagram out of (IP_MULTICAST_IF takes its address,
            // an in_addr in network order).
            let address = in_addr(s_addr: UInt32(truncatingIfNeeded: link.address.low).bigEndian)
            try await (channel as! SocketOptionProvider).setIPMulticastIF(address).get()
            try await channel.writeAndFlush(
                AddressedEnvelope(remoteAddress: Self.group, data: ByteBuffer(bytes: message.serialized())))
        } catch {
            logger.debug("mDNS send on \(link.device.name) failed: \(error)")
        }
    }

    fileprivate func received(_ bytes: [UInt8], from source: SocketAddress) {
        guard let ip = IPAddress(source), let link = links.first(where: { $0.contains(ip) }) else { return }
        let message: DNSMessage
        do {
            message = try DNSMessage.parse(bytes)
        } catch {
            logger.debug("mDNS: malformed message from \(source): \(error)")
            return
        }
        if MDNSDiscovery.isQuery(message) {
            let response = MDNSDiscovery.response(
                peerName: peerName, peer: host.peerID, addresses: addresses(on: link), ttl: configuration.ttl)
            host.spawn("mDNS answer") { [self] in await send(response, on: link) }
            return
        }
        let expires = NIODeadline.now() + .seconds(Int64(configuration.ttl))
        for (peer, announced) in MDNSDiscovery.peers(in: message) where peer != host.peerID {
            // Only addresses on the link it was heard on: a LAN peer cannot make us dial elsewhere.
            let onLink = announced.filter { IPAddress($0).map(link.contains) ?? false }
            guard !onLink.isEmpty else { continue }
            let isNew = state.withLockedValue { table -> Bool in
                let known = table[link.device.name]?[peer].map { $0.expires > .now() } ?? false
                table[link.device.name, default: [:]][peer] = Entry(addresses: onLink, expires: expires)
                return !known
            }
            if isNew {
                logger.info("mDNS found \(peer) on \(link.device.name)", metadata: ["addrs": "\(onLink)"])
                host.spawn("mDNS dial \(peer)") { [self] in
                    do {
                        _ = try await host.connect(to: peer, addresses: onLink)
                    } catch {
                        logger.debug("mDNS: cannot connect to \(peer): \(error)")
                        return
                    }
                    await onPeerFound(peer, onLink)
                }
            }
        }
    }

    /// Our addresses on `link`: listen addresses on its IP, or on the unspecified IP with its IP
    /// put in.
    func addresses(on link: Link) -> [Multiaddr] {
        host.listenAddresses.compactMap { bound -> Multiaddr? in
            guard let ip = IPAddress(bound), ip.family == link.address.family else { return nil }
            if ip == link.address { return bound }
            guard AddressScope.of(ip) == .unspecified else { return nil }
            return Multiaddr([link.address.multiaddrComponent] + bound.components.dropFirst())
        }
    }

    /// The socket's handler: hands each datagram to the service.
    private final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let service = NIOLockedValueBox<MDNSService?>(nil)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard envelope.data.readableBytes <= DNSMessage.maximumSize,
                let service = service.withLockedValue({ $0 })
            else { return }
            service.received(Array(envelope.data.readableBytesView), from: envelope.remoteAddress)
        }
    }
}
