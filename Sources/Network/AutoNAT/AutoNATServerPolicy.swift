import Identity
import Multiformats
import NIOCore

/// The AutoNAT server's rules as a pure value: which requests it serves and which addresses it
/// dials back, with the rate limits (spec/network.md, "AutoNAT"). No sockets, no clock: `now` is
/// passed in. `AutoNATServer` performs what it decides.
public struct AutoNATServerPolicy: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Requests served per peer in `window` (go-libp2p v1: 3 per minute).
        public var requestsPerPeer = 3
        /// Requests served by this node in `window`, all peers together (go-libp2p v1: 30).
        public var requestsTotal = 30
        public var window: TimeAmount = .seconds(60)
        /// The rule that decides whether the requester's observed IP is public (`--public-cidr`
        /// makes a lab's range public). Only public IPs are dialled back: a peer that reached us
        /// over a LAN or loopback learns nothing about its reachability from outside.
        public var scopeRule = AddressScopeRule()

        public init() {}
    }

    /// What to do with one request.
    public enum Decision: Hashable, Sendable {
        /// Answer at once with this response, dialling nothing.
        case respond(AutoNATDialResponse)
        /// Dial these addresses (each ending in the requester's `/p2p/…`) on fresh connections;
        /// answer `OK` with the first that authenticates the requester, else `E_DIAL_ERROR`.
        case dial([Multiaddr])
    }

    public let configuration: Configuration
    /// When each admitted request arrived, all peers, oldest first (at most `requestsTotal`).
    private var admitted: [NIODeadline] = []
    /// When each peer's admitted requests arrived, oldest first (at most `requestsPerPeer` each;
    /// peers appear only through admitted requests, so at most `requestsTotal` peers).
    private var admittedByPeer: [PeerID: [NIODeadline]] = [:]

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Decides a request from `requester` (the connection's authenticated peer) that arrived at
    /// `now` over a connection from `observedAddress` (its remote address; nil when unknown).
    /// `request` is the decoded DIAL, or the decoding error. Every request that reaches the rate
    /// limits counts against them, malformed ones included.
    public mutating func decide(
        _ request: Result<AutoNATDialRequest, NetworkError>, from requester: PeerID, observedAddress: Multiaddr?,
        relayed: Bool, now: NIODeadline
    ) -> Decision {
        // autonat-v1.md: "a server MUST NOT dial addresses learned over a relayed connection":
        // the relay's IP, not the requester's, is what such a connection shows.
        if relayed {
            return .respond(.init(status: .dialRefused, statusText: "requests over relayed connections are refused"))
        }
        if let refusal = admit(requester, now: now) { return .respond(refusal) }
        let dial: AutoNATDialRequest
        switch request {
        case .failure(let error): return .respond(.init(status: .badRequest, statusText: error.message))
        case .success(let decoded): dial = decoded
        }
        // Attack prevented: a peer asking us to dial another peer id (at its own IP) would learn
        // whether that peer runs there; go and the spec require the requester's own id.
        guard dial.peer == requester else {
            return .respond(.init(status: .badRequest, statusText: "dial.peer.id is not the requesting peer"))
        }
        guard let observedAddress, let observed = IPAddress(observedAddress) else {
            return .respond(.init(status: .dialRefused, statusText: "the connection's remote IP is unknown"))
        }
        guard configuration.scopeRule.scope(of: observed) == .publicInternet else {
            return .respond(
                .init(status: .dialRefused, statusText: "you reached us from a non-public IP (\(observed))"))
        }
        let targets = Self.dialTargets(dial.addresses, observed: observed, peer: requester)
        guard !targets.isEmpty else {
            return .respond(.init(status: .dialRefused, statusText: "no TCP address on your observed IP \(observed)"))
        }
        return .dial(targets)
    }

    /// The addresses of `addresses` that are `/ip4|ip6/IP/tcp/PORT` (optionally `/p2p/<peer>`)
    /// with exactly the `observed` IP, first `AutoNAT.maximumDialedAddresses`, each with
    /// `/p2p/<peer>`. Attack prevented (autonat-v1.md, "Security Considerations"): dialling any
    /// other IP would make us a traffic amplifier against a third party; a DNS name could resolve
    /// anywhere, so none is dialled.
    static func dialTargets(_ addresses: [Multiaddr], observed: IPAddress, peer: PeerID) -> [Multiaddr] {
        var targets: [Multiaddr] = []
        for address in addresses {
            var components = address.components
            if case .p2p(let multihash)? = components.last {
                guard multihash == peer.multihash else { continue }
                components.removeLast()
            }
            guard components.count == 2, case .tcp(let port) = components[1], port != 0 else { continue }
            let bare = Multiaddr(components)
            guard IPAddress(bare) == observed else { continue }
            let target = bare.appending(.p2p(peer.multihash))
            guard !targets.contains(target) else { continue }
            targets.append(target)
            if targets.count == AutoNAT.maximumDialedAddresses { break }
        }
        return targets
    }

    /// Admits a request under the rate limits (sliding windows), or returns the refusal.
    private mutating func admit(_ peer: PeerID, now: NIODeadline) -> AutoNATDialResponse? {
        let horizon = now - configuration.window
        admitted.removeAll { $0 <= horizon }
        for (key, times) in admittedByPeer {
            let kept = times.filter { $0 > horizon }
            admittedByPeer[key] = kept.isEmpty ? nil : kept
        }
        guard admitted.count < configuration.requestsTotal else {
            return .init(status: .dialRefused, statusText: "too many AutoNAT requests; try again later")
        }
        guard admittedByPeer[peer, default: []].count < configuration.requestsPerPeer else {
            return .init(status: .dialRefused, statusText: "too many AutoNAT requests from you; try again later")
        }
        admitted.append(now)
        admittedByPeer[peer, default: []].append(now)
        return nil
    }
}
