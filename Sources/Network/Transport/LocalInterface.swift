import Multiformats
import NIOCore
import NIOPosix

/// One IP address of this host's network interfaces, with its network's prefix length.
public struct LocalInterface: Hashable, Sendable {
    public let address: IPAddress
    public let prefixLength: Int

    public init(address: IPAddress, prefixLength: Int) {
        precondition((0...address.family.bitCount).contains(prefixLength), "prefix length out of range")
        self.address = address
        self.prefixLength = prefixLength
    }

    /// The host's interface addresses now (getifaddrs through NIO); empty when they cannot be read.
    public static func current() -> [LocalInterface] {
        let devices: [NIONetworkDevice]
        do {
            devices = try System.enumerateDevices()
        } catch {
            // Without the list, unspecified listen addresses expand to nothing: the node advertises
            // what it bound explicitly and announced, and dials only public third-party addresses.
            return []
        }
        var result: [LocalInterface] = []
        for device in devices {
            guard let socketAddress = device.address, let address = IPAddress(socketAddress) else { continue }
            let bits = address.family.bitCount
            let prefix = device.netmask.flatMap(IPAddress.init).map(\.leadingOneBits) ?? bits
            let interface = LocalInterface(address: address, prefixLength: min(prefix, bits))
            if !result.contains(interface) { result.append(interface) }
        }
        return result
    }

    /// The addresses this node tells others to dial it at (identify, records, the ready line):
    /// `announced` first (`--announce`), then `bound` with each unspecified IP (`0.0.0.0`, `::`)
    /// replaced by the interface addresses of its family. Interface addresses that cannot be dialled
    /// from elsewhere are left out: link-local IPv6 (it needs a zone), and loopback unless the
    /// host has no other address (a remote peer that dials 127.0.0.1 reaches itself; and a node
    /// with a LAN address must not count as loopback-only, see `AddressScopeRule`). Explicitly
    /// bound addresses stay as bound. No duplicates.
    public static func advertisedAddresses(
        bound: [Multiaddr], announced: [Multiaddr], interfaces: [LocalInterface]
    ) -> [Multiaddr] {
        var result: [Multiaddr] = []
        func add(_ address: Multiaddr) { if !result.contains(address) { result.append(address) } }
        announced.forEach(add)
        var expanded: [Multiaddr] = []
        var loopback: [Multiaddr] = []
        for address in bound {
            guard let ip = IPAddress(address), AddressScope.of(ip) == .unspecified else {
                add(address)
                continue
            }
            let rest = address.components.dropFirst()
            for interface in interfaces where interface.address.family == ip.family {
                switch AddressScope.of(interface.address) {
                case .unspecified: continue
                case .linkLocal where interface.address.family == .v6: continue
                case .loopback: loopback.append(Multiaddr([interface.address.multiaddrComponent] + rest))
                default: expanded.append(Multiaddr([interface.address.multiaddrComponent] + rest))
                }
            }
        }
        expanded.forEach(add)
        let hasOther = result.contains { address in
            IPAddress(address).map { AddressScope.of($0) != .loopback } ?? true
        }
        if !hasOther { loopback.forEach(add) }
        return result
    }
}

extension IPAddress {
    /// The number of leading one bits (a netmask's prefix length).
    var leadingOneBits: Int {
        switch family {
        case .v4: return (~UInt32(truncatingIfNeeded: low)).leadingZeroBitCount
        case .v6: return high == .max ? 64 + (~low).leadingZeroBitCount : (~high).leadingZeroBitCount
        }
    }

    /// `/ip4/…` or `/ip6/…`.
    public var multiaddrComponent: Multiaddr.Component {
        switch family {
        case .v4:
            return .ip4(IPv4Address(UInt32(truncatingIfNeeded: low)))
        case .v6:
            var bytes = [UInt8](repeating: 0, count: 16)
            for index in 0..<8 {
                bytes[index] = UInt8(truncatingIfNeeded: high >> (56 - 8 * index))
                bytes[8 + index] = UInt8(truncatingIfNeeded: low >> (56 - 8 * index))
            }
            return .ip6(IPv6Address(bytes: bytes))
        }
    }
}
