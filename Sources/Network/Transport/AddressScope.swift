import Multiformats

/// Where an address leads: the one classification of addresses in agentd (spec/network.md,
/// "Addresses"). The dial rule for addresses a third party supplied is `AddressScopeRule`.
///
/// The ranges come from the IANA special-purpose address registries (RFC 6890 and its updates);
/// each case names the RFCs it covers.
public enum AddressScope: String, Hashable, Sendable, CaseIterable {
    /// `0.0.0.0`, `::`: "any address" for a listener, never a destination.
    case unspecified
    /// `127.0.0.0/8`, `::1` (RFC 1122, RFC 4291): this host.
    case loopback
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918) and unique local IPv6 `fc00::/7`
    /// (RFC 4193): a private network behind its router.
    case privateNetwork = "private"
    /// `100.64.0.0/10` (RFC 6598): the shared address space of carrier-grade NATs.
    case sharedAddressSpace = "cgnat"
    /// `169.254.0.0/16` (RFC 3927), `fe80::/10` (RFC 4291): one link only.
    case linkLocal = "link-local"
    /// Documentation (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`,
    /// `3fff::/20`), benchmarking (`198.18.0.0/15`, `2001:2::/48`), multicast, the IPv4 "this
    /// network" and future-use blocks, IETF protocol assignments, discard-only and every IPv6
    /// address outside global unicast `2000::/3`: not a host on the internet.
    case reserved
    /// Everything else: reachable across the internet.
    case publicInternet = "public"
    /// A `/dns`, `/dns4` or `/dns6` name: its scope is that of what it resolves to.
    case dns
    /// A `/p2p-circuit` address: reached through a relay.
    case relayed

    /// The scope of an IP address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4 already
    /// (`IPAddress`); NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) addresses are classified by the
    /// IPv4 address they carry, since a packet to them reaches that IPv4 host: `64:ff9b::a00:1` is as
    /// private as `10.0.0.1`.
    public static func of(_ ip: IPAddress) -> AddressScope {
        switch ip.family {
        case .v4: return ofIPv4(UInt32(truncatingIfNeeded: ip.low))
        case .v6: return ofIPv6(high: ip.high, low: ip.low)
        }
    }

    /// The scope of a multiaddr, from its first component (and `/p2p-circuit` anywhere in it);
    /// `nil` when it starts with neither an IP address nor a DNS name (e.g. `/tcp/1`, `/p2p/…`).
    public static func of(_ address: Multiaddr) -> AddressScope? {
        if address.components.contains(.p2pCircuit) { return .relayed }
        switch address.components.first {
        case .ip4(let ip)?: return ofIPv4(ip.value)
        case .ip6(let ip)?: return of(IPAddress(ip))
        case .dns?, .dns4?, .dns6?: return .dns
        default: return nil
        }
    }

    private static func ofIPv4(_ value: UInt32) -> AddressScope {
        func within(_ network: UInt32, _ prefix: Int) -> Bool {
            let mask: UInt32 = prefix == 0 ? 0 : ~(UInt32.max >> prefix)
            return value & mask == network
        }
        if value == 0 { return .unspecified }
        if within(0x7f00_0000, 8) { return .loopback }
        if within(0x0a00_0000, 8) || within(0xac10_0000, 12) || within(0xc0a8_0000, 16) { return .privateNetwork }
        if within(0x6440_0000, 10) { return .sharedAddressSpace }
        if within(0xa9fe_0000, 16) { return .linkLocal }
        // 0/8 "this network" (RFC 791), 192.0.0/24 IETF assignments (RFC 6890), the three
        // documentation nets (RFC 5737), 198.18/15 benchmarking (RFC 2544), 192.88.99/24 the
        // retired 6to4 relay anycast (RFC 7526), 224/4 multicast, 240/4 future use and broadcast.
        if within(0x0000_0000, 8) || within(0xc000_0000, 24) || within(0xc000_0200, 24)
            || within(0xc633_6400, 24) || within(0xcb00_7100, 24) || within(0xc612_0000, 15)
            || within(0xc058_6300, 24) || within(0xe000_0000, 4) || within(0xf000_0000, 4)
        {
            return .reserved
        }
        return .publicInternet
    }

    private static func ofIPv6(high: UInt64, low: UInt64) -> AddressScope {
        func within(_ network: UInt64, _ prefix: Int) -> Bool {
            high & ~(UInt64.max >> prefix) == network
        }
        if high == 0 {
            if low == 0 { return .unspecified }
            if low == 1 { return .loopback }
            // The rest of ::/64, IPv4-compatible addresses included (deprecated, RFC 4291 §2.5.5.1).
            return .reserved
        }
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the IPv4 host in the low 32 bits.
        if high == 0x0064_ff9b_0000_0000, low >> 32 == 0 { return ofIPv4(UInt32(truncatingIfNeeded: low)) }
        // 6to4 2002::/16 (RFC 3056): the IPv4 address in bits 16-47.
        if within(0x2002_0000_0000_0000, 16) { return ofIPv4(UInt32(truncatingIfNeeded: high >> 16)) }
        if within(0xfc00_0000_0000_0000, 7) { return .privateNetwork }
        if within(0xfe80_0000_0000_0000, 10) { return .linkLocal }
        // 2001::/23 IETF protocol assignments (Teredo, ORCHID, …; RFC 2928), 2001:db8::/32 and
        // 3fff::/20 documentation (RFC 3849, RFC 9637); 2001:2::/48 benchmarking falls in 2001::/23.
        if within(0x2001_0000_0000_0000, 23) || within(0x2001_0db8_0000_0000, 32) || within(0x3fff_0000_0000_0000, 20) {
            return .reserved
        }
        // Only global unicast 2000::/3 is routed on the internet; the rest (multicast ff00::/8,
        // discard-only 100::/64, unassigned space) is not a peer's address.
        if !within(0x2000_0000_0000_0000, 3) { return .reserved }
        return .publicInternet
    }
}

/// Who told us an address, which decides whether it is dialled (spec/network.md, "Addresses").
public enum AddressOrigin: Sendable {
    /// The user typed it (`--bootstrap`, `agentctl connect`, a control API target): always dialled.
    case user
    /// Anyone else: a kad answer, a record, identify of another peer. Dialled only when
    /// `AddressScopeRule.permits` says so.
    case thirdParty
}

/// The rule for addresses a third party supplied (issue #10, finding 10): a remote peer must not
/// be able to make this node dial its loopback services, its LAN or a link-local neighbour (a
/// port scan and request forgery by proxy). Such an address is dialled only when it is public,
/// or in a scope the node itself has an address in:
/// - loopback, when the node's own addresses are loopback only (a devnet on 127.0.0.x);
/// - a private, shared (CGNAT), link-local or reserved address inside one of the node's own
///   networks (a node at 192.168.1.5/24 dials 192.168.1.0/24, nothing else of 192.168/16);
/// - never an unspecified address, and never a DNS name: the TCP dial resolves names inside
///   NIO's connect, so what a name resolves to cannot be checked before the socket connects (and
///   a name resolves again later, DNS rebinding). Names from third parties are refused; a name
///   the user types is dialled.
/// Networks named with `--public-cidr` count as public (labs on 198.18.0.0/15).
///
/// A value: built from the node's addresses at one moment (`Host.addressScopeRule`), cheap to
/// test many addresses against.
public struct AddressScopeRule: Sendable, Hashable {
    /// Networks treated as public whatever their range (`--public-cidr`).
    public var publicNetworks: [IPNetwork]
    /// The networks the node has an address in (its interfaces' networks, at least a /24 or /64).
    public var localNetworks: [IPNetwork]
    /// Whether third-party loopback addresses are dialled: the node's addresses are loopback only.
    public var dialsLoopback: Bool

    public init(publicNetworks: [IPNetwork] = [], localNetworks: [IPNetwork] = [], dialsLoopback: Bool = false) {
        self.publicNetworks = publicNetworks
        self.localNetworks = localNetworks
        self.dialsLoopback = dialsLoopback
    }

    /// The rule for a node whose own (advertised) addresses are `ownAddresses`, on a host with
    /// `interfaces`: each own IP address contributes the network of the interface that holds it
    /// (widened to at least a /24 for IPv4, /64 for IPv6, so that a /32 point-to-point or VPN
    /// address still reaches its neighbours), or that /24 or /64 when no interface holds it (an
    /// announced address).
    public init(ownAddresses: [Multiaddr], interfaces: [LocalInterface], publicNetworks: [IPNetwork]) {
        var networks: [IPNetwork] = []
        var loopbackOnly = false
        var sawAny = false
        for address in ownAddresses {
            guard let ip = IPAddress(address) else { continue }
            let scope = AddressScope.of(ip)
            guard scope != .unspecified else { continue }
            if !sawAny { loopbackOnly = true }
            sawAny = true
            guard scope != .loopback else { continue }
            loopbackOnly = false
            let widest = ip.family == .v4 ? 24 : 64
            let prefix = min(interfaces.first { $0.address == ip }?.prefixLength ?? widest, widest)
            let network = IPNetwork(containing: ip, prefixLength: prefix)
            if !networks.contains(network) { networks.append(network) }
        }
        self.init(publicNetworks: publicNetworks, localNetworks: networks, dialsLoopback: loopbackOnly)
    }

    /// The scope of `ip` under this rule: `publicInternet` inside a `publicNetworks` entry (except
    /// the unspecified address, which is never a destination), else `AddressScope.of`.
    public func scope(of ip: IPAddress) -> AddressScope {
        let scope = AddressScope.of(ip)
        if scope != .unspecified, publicNetworks.contains(where: { $0.contains(ip) }) { return .publicInternet }
        return scope
    }

    /// Whether this node dials `address`, told by `origin`. Addresses the transport cannot dial
    /// (`isDialable`) are refused whoever named them.
    public func permits(_ address: Multiaddr, from origin: AddressOrigin) -> Bool {
        guard Self.isDialable(address) else { return false }
        // A circuit address is dialled when its relay's address is (the relay is who we connect to).
        if let relay = Self.relayPart(of: address) { return permits(relay, from: origin) }
        if origin == .user { return true }
        guard let ip = IPAddress(address) else { return false }  // a DNS name (see the type's comment)
        switch scope(of: ip) {
        case .publicInternet: return true
        case .loopback: return dialsLoopback
        case .unspecified, .dns, .relayed: return false
        case .privateNetwork, .sharedAddressSpace, .linkLocal, .reserved:
            return localNetworks.contains { $0.contains(ip) }
        }
    }

    /// The addresses of `addresses` this node dials, told by `origin`, in their order.
    public func dialable(_ addresses: [Multiaddr], from origin: AddressOrigin) -> [Multiaddr] {
        addresses.filter { permits($0, from: origin) }
    }

    /// The relay's address (ending in its `/p2p`) of a circuit address
    /// `…/p2p/RELAY/p2p-circuit[/p2p/PEER]`; nil for other addresses and malformed circuits.
    static func relayPart(of address: Multiaddr) -> Multiaddr? {
        let components = address.components
        guard let index = components.firstIndex(of: .p2pCircuit), index >= 3, case .p2p = components[index - 1]
        else { return nil }
        let rest = components[(index + 1)...]
        guard rest.isEmpty || (rest.count == 1 && { if case .p2p = rest.first! { true } else { false } }()) else {
            return nil
        }
        return Multiaddr(Array(components[..<index]))
    }

    /// Whether a transport can dial `address` at all: `/ip4|ip6|dns|dns4|dns6/…/tcp/PORT` or
    /// `/ip4|ip6/…/udp/PORT/quic-v1`, optionally `/p2p/…` after, with a specified IP (not `0.0.0.0`
    /// or `::`); or a circuit through a relay at such an address
    /// (`…/p2p/RELAY/p2p-circuit[/p2p/PEER]`).
    public static func isDialable(_ address: Multiaddr) -> Bool {
        if let relay = relayPart(of: address) { return isDialable(relay) }
        let components = address.components
        let transportLength: Int
        if components.count >= 3, case .udp = components[1], case .quicV1 = components[2] {
            // QUIC: an IP, never a DNS name (QUIC dials do not resolve names).
            switch components[0] {
            case .ip4, .ip6: transportLength = 3
            default: return false
            }
        } else if components.count >= 2, case .tcp = components[1] {
            transportLength = 2
        } else {
            return false
        }
        switch components[0] {
        case .ip4, .ip6:
            guard let ip = IPAddress(address), AddressScope.of(ip) != .unspecified else { return false }
        case .dns, .dns4, .dns6: break
        default: return false
        }
        return components.dropFirst(transportLength).allSatisfy {
            if case .p2p = $0 { return true }
            return false
        }
    }
}
