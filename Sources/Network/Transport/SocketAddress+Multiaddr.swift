import Multiformats
import NIOCore

/// Conversions between multiaddrs and socket addresses for the TCP transport.
public enum TCPAddress {
    /// The host and port a `/ip4|ip6|dns|dns4|dns6/…/tcp/PORT[/p2p/…]` address names.
    /// - Throws: `NetworkError.invalidAddress` for anything else (e.g. `/udp`, `/p2p-circuit`).
    public static func hostAndPort(of address: Multiaddr) throws(NetworkError) -> (host: String, port: Int) {
        var components = address.components[...]
        if case .p2p? = components.last { components = components.dropLast() }
        guard components.count == 2, case .tcp(let port) = components.last! else {
            throw NetworkError(.invalidAddress, "\(address) is not a TCP address (/ip4|ip6|dns*/HOST/tcp/PORT)")
        }
        switch components.first! {
        case .ip4(let ip): return (ip.description, Int(port))
        case .ip6(let ip): return (ip.description, Int(port))
        case .dns(let name), .dns4(let name), .dns6(let name): return (name, Int(port))
        default:
            throw NetworkError(.invalidAddress, "\(address) does not start with /ip4, /ip6 or /dns*")
        }
    }

    /// The multiaddr of a socket address, e.g. `/ip4/127.0.0.1/tcp/4001`.
    public static func multiaddr(of socketAddress: SocketAddress) -> Multiaddr? {
        guard let port = socketAddress.port, let ip = socketAddress.ipAddress else { return nil }
        switch socketAddress {
        case .v4:
            guard let address = try? IPv4Address(ip[...]) else { return nil }
            return Multiaddr([.ip4(address), .tcp(UInt16(port))])
        case .v6:
            guard let address = try? IPv6Address(ip[...]) else { return nil }
            return Multiaddr([.ip6(address), .tcp(UInt16(port))])
        default:
            return nil
        }
    }
}
