import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// libp2p mDNS discovery on the local links (libp2p/specs `discovery/mdns.md`, RFC 6762;
/// spec/network.md, "mDNS"): one UDP socket on port 5353 joined to 224.0.0.251 on every IPv4
/// interface that is not loopback, and per interface with an IPv6 prefix (a unique-local or global
/// address) one more socket bound to [ff02::fb%interface]:5353 and joined to that group there. It
/// asks for `_p2p._udp.local` at start and every `queryInterval`, answers others' queries with our
/// addresses of the family on the link the query came from, and keeps what others announce in a
/// per-link table: only addresses inside that link's subnets (IPv6: never link-local), until their
/// TTL passes. Peers found are dialled; the table is never handed to remote peers (nothing reads it
/// but `addresses(of:)` and the dial). The sockets live as long as the host (a host task closes
/// them at shutdown).
///
/// `@unchecked Sendable`: the mutable state is behind `state` (a lock); the rest is immutable.
public final class MDNSService: @unchecked Sendable {
    public static let group = try! SocketAddress(ipAddress: "224.0.0.251", port: 5353)
    /// The IPv6 group, ff02::fb (link scope: it needs an interface, see `group6(on:port:)`).
    static let group6Address = try! SocketAddress(ipAddress: "ff02::fb", port: 5353)

    /// [ff02::fb%interfaceIndex]:port: the link-scoped group on one interface. Bound to, it ties the
    /// socket to that interface (Linux sets the bound device from a link-scope address's scope id)
    /// and lets in only datagrams to the group; sent to, it leaves through that interface.
    static func group6(interfaceIndex: Int, port: Int) -> SocketAddress {
        guard case .v6(let group) = group6Address else { preconditionFailure("ff02::fb is IPv6") }
        var address = group.address
        address.sin6_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin6_scope_id = UInt32(truncatingIfNeeded: interfaceIndex)
        return SocketAddress(address, host: "ff02::fb")
    }

    public struct Configuration: Sendable {
        public var queryInterval: TimeAmount = .seconds(10)
        /// The TTL of our records (RFC 6762 §10: 120 s for host records).
        public var ttl: UInt32 = 120
        public var port = 5353
        public init() {}
    }

    /// A local link of one family. IPv4: an interface address and its subnet (one link per
    /// address). IPv6: an interface with its unique-local and global addresses and their prefixes
    /// (link-local addresses are never announced nor accepted: a multiaddr carries no zone, so a
    /// `fe80::` address means nothing to the peer that reads it).
    struct Link: Sendable {
        /// IPv4: the device entry of `interfaces[0]`; IPv6: one of the interface's IPv6 entries
        /// (its name and index are what count).
        let device: NIONetworkDevice
        let family: IPAddress.Family
        /// IPv4: one address; IPv6: at least one, none link-local.
        let interfaces: [LocalInterface]

        /// The per-link table's key: the interface's name, and ` ipv6` for its IPv6 link.
        var name: String { family == .v4 ? device.name : "\(device.name) ipv6" }

        /// Whether `ip` is on this link: inside one of its subnets (IPv6: and not link-local).
        func contains(_ ip: IPAddress) -> Bool {
            guard ip.family == family, family == .v4 || AddressScope.of(ip) != .linkLocal else { return false }
            return interfaces.contains { IPNetwork(containing: $0.address, prefixLength: $0.prefixLength).contains(ip) }
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
    /// The IPv4 socket (`nil` without an IPv4 link).
    private let channel: Channel?
    /// The IPv6 sockets by interface index.
    private let channels6: [Int: Channel]
    /// Link name → peer → what it announced there.
    private let state = NIOLockedValueBox<[String: [PeerID: Entry]]>([:])

    private init(
        host: Host, configuration: Configuration, logger: Logger, links: [Link], channel: Channel?,
        channels6: [Int: Channel], onPeerFound: @escaping @Sendable (PeerID, [Multiaddr]) async -> Void
    ) {
        self.host = host
        self.onPeerFound = onPeerFound
        self.configuration = configuration
        self.logger = logger
        self.links = links
        self.channel = channel
        self.channels6 = channels6
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        self.peerName = String((0..<32).map { _ in alphabet[Int(random.next() % 32)] })
    }

    /// The links mDNS runs on, from the interfaces that are up and not loopback.
    /// - Throws: `NetworkError.invalidConfiguration` when the interfaces cannot be listed.
    static func currentLinks() throws(NetworkError) -> [Link] {
        let devices: [NIONetworkDevice]
        do {
            devices = try System.enumerateDevices()
        } catch {
            throw NetworkError(.invalidConfiguration, "mDNS cannot list the network interfaces: \(error)")
        }
        return links(of: devices)
    }

    /// The links of `devices` (one entry per interface address, as getifaddrs lists them): an IPv4
    /// link per IPv4 address that is neither loopback nor unspecified; an IPv6 link per
    /// multicast-capable interface with a unique-local or global IPv6 address, holding all of them.
    static func links(of devices: [NIONetworkDevice]) -> [Link] {
        var links: [Link] = []
        var order: [Int] = []
        var six: [Int: (device: NIONetworkDevice, interfaces: [LocalInterface])] = [:]
        for device in devices {
            guard let socketAddress = device.address, let address = IPAddress(socketAddress) else { continue }
            let scope = AddressScope.of(address)
            guard scope != .loopback, scope != .unspecified else { continue }
            let prefix = min(
                device.netmask.flatMap(IPAddress.init).map(\.leadingOneBits) ?? address.family.bitCount,
                address.family.bitCount)
            let interface = LocalInterface(address: address, prefixLength: prefix)
            switch address.family {
            case .v4:
                links.append(Link(device: device, family: .v4, interfaces: [interface]))
            case .v6:
                guard device.multicastSupported, scope != .linkLocal else { continue }
                if six[device.interfaceIndex] == nil {
                    order.append(device.interfaceIndex)
                    six[device.interfaceIndex] = (device, [])
                }
                six[device.interfaceIndex]!.interfaces.append(interface)
            }
        }
        for index in order {
            let (device, interfaces) = six[index]!
            links.append(Link(device: device, family: .v6, interfaces: interfaces))
        }
        return links
    }

    /// Starts mDNS for `host`; `onPeerFound` is told of each peer found and connected, with the
    /// addresses it announced on the link (each ending in `/p2p/<peer>`).
    /// - Throws: `NetworkError.invalidConfiguration` on a node without an interface other than
    ///   loopback that has an IPv4 address or a unique-local or global IPv6 address (mDNS never
    ///   runs on a loopback-only node), or when a socket cannot be set up.
    public static func start(
        host: Host, configuration: Configuration = Configuration(), logger: Logger,
        onPeerFound: @escaping @Sendable (PeerID, [Multiaddr]) async -> Void = { _, _ in }
    ) async throws -> MDNSService {
        let links = try currentLinks()
        guard !links.isEmpty else {
            throw NetworkError(
                .invalidConfiguration,
                "mDNS needs an interface other than loopback with an IPv4 address or a unique-local or global IPv6 address; this node has none"
            )
        }
        var logger = logger
        logger[metadataKey: "service"] = "mdns"
        let handler = Handler(link: nil)
        var handlers6: [Handler] = []
        var channel: Channel?
        var channels6: [Int: Channel] = [:]
        func closeAll() {
            channel?.close(promise: nil)
            for open in channels6.values { open.close(promise: nil) }
        }
        do {
            if links.contains(where: { $0.family == .v4 }) {
                let opened = try await DatagramBootstrap(group: host.core.group)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                    }
                    .bind(host: "0.0.0.0", port: configuration.port).get()
                channel = opened
                let options = opened as! SocketOptionProvider
                try await options.setIPMulticastLoop(0).get()
                try await options.setIPMulticastTTL(255).get()
                let multicast = opened as! MulticastChannel
                for link in links where link.family == .v4 { try await multicast.joinGroup(group, device: link.device).get() }
            }
            for link in links where link.family == .v6 {
                let index = link.device.interfaceIndex
                let linkHandler = Handler(link: link)
                handlers6.append(linkHandler)
                let opened = try await DatagramBootstrap(group: host.core.group)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(linkHandler)
                        }
                    }
                    .bind(to: group6(interfaceIndex: index, port: configuration.port)).get()
                channels6[index] = opened
                let options = opened as! SocketOptionProvider
                try await options.setIPv6MulticastLoop(0).get()
                try await options.setIPv6MulticastHops(255).get()
                try await options.setIPv6MulticastIF(CUnsignedInt(index)).get()
                try await (opened as! MulticastChannel).joinGroup(
                    group6(interfaceIndex: index, port: configuration.port), device: link.device
                ).get()
            }
        } catch {
            closeAll()
            throw NetworkError(.invalidConfiguration, "cannot set up mDNS on UDP \(configuration.port): \(error)")
        }
        let service = MDNSService(
            host: host, configuration: configuration, logger: logger, links: links, channel: channel,
            channels6: channels6, onPeerFound: onPeerFound)
        for each in [handler] + handlers6 { each.service.withLockedValue { $0 = service } }
        let opened = [channel].compactMap { $0 } + Array(channels6.values)
        host.spawn("mDNS") {
            defer { for open in opened { open.close(promise: nil) } }
            while !Task.isCancelled {
                for link in links { await service.send(MDNSDiscovery.query(), on: link) }
                try? await Task.sleep(nanoseconds: UInt64(configuration.queryInterval.nanoseconds))
            }
        }
        logger.info("mDNS discovery on \(links.map(\.name).joined(separator: ", "))")
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
        let data = ByteBuffer(bytes: message.serialized())
        do {
            switch link.family {
            case .v4:
                guard let channel else { return }
                // The interface to send the group datagram out of (IP_MULTICAST_IF takes its
                // address, an in_addr in network order).
                let address = in_addr(s_addr: UInt32(truncatingIfNeeded: link.interfaces[0].address.low).bigEndian)
                try await (channel as! SocketOptionProvider).setIPMulticastIF(address).get()
                try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: Self.group, data: data))
            case .v6:
                // The socket is bound to its interface; the group's scope id names it again.
                let index = link.device.interfaceIndex
                guard let channel = channels6[index] else { return }
                let group = Self.group6(interfaceIndex: index, port: configuration.port)
                try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: group, data: data))
            }
        } catch {
            logger.debug("mDNS send on \(link.name) failed: \(error)")
        }
    }

    /// A datagram from `source`: on the IPv6 socket of `link6`'s interface, else on the IPv4
    /// socket (its link is the one whose subnet holds the source).
    fileprivate func received(_ bytes: [UInt8], from source: SocketAddress, on link6: Link?) {
        let link: Link
        if let link6 {
            link = link6
        } else {
            guard let ip = IPAddress(source), let found = links.first(where: { $0.family == .v4 && $0.contains(ip) })
            else { return }
            link = found
        }
        let message: DNSMessage
        do {
            message = try DNSMessage.parse(bytes)
        } catch {
            logger.debug("mDNS: malformed message from \(source): \(error)")
            return
        }
        if MDNSDiscovery.isQuery(message) {
            // Nothing to announce on this link (no listen address of its family): no answer.
            let ours = addresses(on: link)
            guard !ours.isEmpty else { return }
            let response = MDNSDiscovery.response(
                peerName: peerName, peer: host.peerID, addresses: ours, ttl: configuration.ttl)
            host.spawn("mDNS answer") { [self] in await send(response, on: link) }
            return
        }
        let expires = NIODeadline.now() + .seconds(Int64(configuration.ttl))
        for (peer, announced) in MDNSDiscovery.peers(in: message) where peer != host.peerID {
            // Only addresses on the link it was heard on (IPv6: inside its prefixes, never
            // link-local): a LAN peer cannot make us dial elsewhere.
            let onLink = announced.filter { IPAddress($0).map(link.contains) ?? false }
            guard !onLink.isEmpty else { continue }
            let isNew = state.withLockedValue { table -> Bool in
                let known = table[link.name]?[peer].map { $0.expires > .now() } ?? false
                table[link.name, default: [:]][peer] = Entry(addresses: onLink, expires: expires)
                return !known
            }
            if isNew {
                logger.info("mDNS found \(peer) on \(link.name)", metadata: ["addrs": "\(onLink)"])
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

    /// Our addresses on `link`: listen addresses of its family on one of its IPs, or on the
    /// unspecified IP with each of its IPs put in.
    func addresses(on link: Link) -> [Multiaddr] {
        var result: [Multiaddr] = []
        for bound in host.listenAddresses {
            guard let ip = IPAddress(bound), ip.family == link.family else { continue }
            let candidates: [Multiaddr]
            if link.interfaces.contains(where: { $0.address == ip }) {
                candidates = [bound]
            } else if AddressScope.of(ip) == .unspecified {
                candidates = link.interfaces.map { Multiaddr([$0.address.multiaddrComponent] + bound.components.dropFirst()) }
            } else {
                candidates = []
            }
            for candidate in candidates where !result.contains(candidate) { result.append(candidate) }
        }
        return result
    }

    /// A socket's handler: hands each datagram to the service, with the link of an IPv6 socket.
    private final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let service = NIOLockedValueBox<MDNSService?>(nil)
        let link: Link?

        init(link: Link?) {
            self.link = link
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard envelope.data.readableBytes <= DNSMessage.maximumSize,
                let service = service.withLockedValue({ $0 })
            else { return }
            service.received(Array(envelope.data.readableBytesView), from: envelope.remoteAddress, on: link)
        }
    }
}
