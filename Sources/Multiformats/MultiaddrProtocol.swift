/// The multiaddr protocols agentd reads and writes, with their codes from the multicodec table
/// (multiformats/multicodec `table.csv`, tag `multiaddr`).
public enum MultiaddrProtocol: UInt64, Sendable, CaseIterable {
    case ip4 = 4
    case tcp = 6
    case udp = 273
    case dns = 53
    case dns4 = 54
    case dns6 = 55
    case ip6 = 41
    case quicV1 = 461
    case p2p = 421
    case p2pCircuit = 290

    /// The protocol's name in the text form.
    public var name: String {
        switch self {
        case .ip4: "ip4"
        case .tcp: "tcp"
        case .udp: "udp"
        case .dns: "dns"
        case .dns4: "dns4"
        case .dns6: "dns6"
        case .ip6: "ip6"
        case .quicV1: "quic-v1"
        case .p2p: "p2p"
        case .p2pCircuit: "p2p-circuit"
        }
    }

    /// Looks a protocol up by its text name. `ipfs` is the historical name of `p2p` and is accepted.
    public init?(name: Substring) {
        switch name {
        case "ip4": self = .ip4
        case "tcp": self = .tcp
        case "udp": self = .udp
        case "dns": self = .dns
        case "dns4": self = .dns4
        case "dns6": self = .dns6
        case "ip6": self = .ip6
        case "quic-v1": self = .quicV1
        case "p2p", "ipfs": self = .p2p
        case "p2p-circuit": self = .p2pCircuit
        default: return nil
        }
    }

    /// How the protocol's value is laid out in the binary form.
    enum ValueLayout {
        case none
        case fixed(Int)
        case lengthPrefixed
    }

    var valueLayout: ValueLayout {
        switch self {
        case .ip4: .fixed(4)
        case .ip6: .fixed(16)
        case .tcp, .udp: .fixed(2)
        case .dns, .dns4, .dns6, .p2p: .lengthPrefixed
        case .quicV1, .p2pCircuit: .none
        }
    }
}
