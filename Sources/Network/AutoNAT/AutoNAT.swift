import NIOCore

/// AutoNAT v1 (libp2p/specs `autonat/autonat-v1.md`): a node asks peers to dial it back at the
/// addresses it believes public, and learns from their answers whether it is reachable from
/// outside. The wire types are in `AutoNATMessage.swift`, the server's rules in
/// `AutoNATServerPolicy.swift`, the client's verdict in `ReachabilityTracker.swift`; the stream
/// glue in `AutoNATServer.swift` and `AutoNATService.swift`. What agentd adds to the spec (limits,
/// the confidence rule) is in spec/network.md, "AutoNAT".
public enum AutoNAT {
    /// autonat-v1.md: "The AutoNAT protocol ID is `/libp2p/autonat/1.0.0`".
    public static let protocolID = "/libp2p/autonat/1.0.0"
    /// Largest request or response read: a DIAL with a peer id and a handful of addresses is a few
    /// hundred bytes (go caps at 4 KiB too; py at 64 KiB). Checked before the body is read.
    public static let maximumMessageLength = 4096
    /// Most addresses of a request the server dials back (those on the requester's observed IP;
    /// the rest are never dialled at all).
    public static let maximumDialedAddresses = 4
    /// Longest `statusText` we send or keep from a server.
    public static let maximumStatusTextLength = 256
}

/// Whether this node is reachable from outside, as AutoNAT concluded.
public enum Reachability: String, Hashable, Sendable {
    /// Not known yet (no evidence), or no address believed public to test.
    case unknown
    /// A server dialled us back at an address we believe public.
    case `public`
    /// Servers could not dial us back: we are behind a NAT or firewall.
    case `private`
}

/// `DialResponse.status` (autonat-v1.md, "Protocol").
public enum AutoNATStatus: Int, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case dialError = 100
    case dialRefused = 101
    case badRequest = 200
    case internalError = 300

    /// The spec's name, as in the protobuf enum (`OK`, `E_DIAL_ERROR`, …).
    public var description: String {
        switch self {
        case .ok: "OK"
        case .dialError: "E_DIAL_ERROR"
        case .dialRefused: "E_DIAL_REFUSED"
        case .badRequest: "E_BAD_REQUEST"
        case .internalError: "E_INTERNAL_ERROR"
        }
    }
}
