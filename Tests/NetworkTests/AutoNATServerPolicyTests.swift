import Identity
import Multiformats
import NIOCore
import Testing

@testable import Network

/// The AutoNAT server's decisions without sockets, on a virtual clock: relayed requests, the
/// requester's id, third-party IPs, rate limits.
@Suite("AutoNAT server policy")
struct AutoNATServerPolicyTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static func addr(_ text: String) -> Multiaddr { try! Multiaddr(text) }
    static func peer() -> PeerID { PeerID(publicKey: Ed25519.PrivateKey().publicKey) }
    static let observed = addr("/ip4/198.51.100.7/tcp/53000")

    static func policy(_ configure: (inout AutoNATServerPolicy.Configuration) -> Void = { _ in }) -> AutoNATServerPolicy
    {
        var configuration = AutoNATServerPolicy.Configuration()
        configuration.scopeRule = AddressScopeRule(publicNetworks: [try! IPNetwork("198.51.100.0/24")])
        configure(&configuration)
        return AutoNATServerPolicy(configuration: configuration)
    }

    static func status(_ decision: AutoNATServerPolicy.Decision) -> AutoNATStatus? {
        if case .respond(let response) = decision { response.status } else { nil }
    }

    @Test("only TCP addresses on the requester's observed IP are dialled, with its /p2p; at most 4")
    func targets() {
        var policy = Self.policy()
        let requester = Self.peer()
        let other = Self.peer()
        let request = AutoNATDialRequest(
            peer: requester,
            addresses: [
                Self.addr("/ip4/198.51.100.7/tcp/4001"), Self.addr("/ip4/198.51.100.8/tcp/4001"),  // third party
                Self.addr("/dns4/example.com/tcp/4001"), Self.addr("/ip4/198.51.100.7/udp/4001/quic-v1"),
                Self.addr("/ip4/198.51.100.7/tcp/4002/p2p/\(other)"),
                Self.addr("/ip4/198.51.100.7/tcp/4003/p2p/\(requester)"),
                Self.addr("/ip4/198.51.100.7/tcp/0"), Self.addr("/ip6/::ffff:198.51.100.7/tcp/4004"),
                Self.addr("/ip4/198.51.100.7/tcp/4005"), Self.addr("/ip4/198.51.100.7/tcp/4006"),
            ])
        let decision = policy.decide(
            .success(request), from: requester, observedAddress: Self.observed, relayed: false, now: Self.start)
        let p2p = "/p2p/\(requester)"
        #expect(
            decision
                == .dial([
                    Self.addr("/ip4/198.51.100.7/tcp/4001\(p2p)"), Self.addr("/ip4/198.51.100.7/tcp/4003\(p2p)"),
                    Self.addr("/ip6/::ffff:198.51.100.7/tcp/4004\(p2p)"), Self.addr("/ip4/198.51.100.7/tcp/4005\(p2p)"),
                ]))
    }

    @Test("refusals: relayed connection, another peer's id, malformed, third-party IPs only, non-public requester")
    func refusals() {
        let requester = Self.peer()
        let own = AutoNATDialRequest(peer: requester, addresses: [Self.addr("/ip4/198.51.100.7/tcp/4001")])
        var policy = Self.policy { $0.requestsPerPeer = 100 }
        func decide(
            _ request: Result<AutoNATDialRequest, NetworkError>, observed: Multiaddr? = Self.observed,
            relayed: Bool = false
        ) -> AutoNATStatus? {
            Self.status(
                policy.decide(request, from: requester, observedAddress: observed, relayed: relayed, now: Self.start))
        }
        #expect(decide(.success(own), relayed: true) == .dialRefused)
        #expect(decide(.success(AutoNATDialRequest(peer: Self.peer(), addresses: own.addresses))) == .badRequest)
        #expect(decide(.failure(NetworkError(.protocolViolation, "AutoNAT message without a type"))) == .badRequest)
        #expect(
            decide(.success(AutoNATDialRequest(peer: requester, addresses: [Self.addr("/ip4/203.0.113.1/tcp/4001")])))
                == .dialRefused)
        #expect(decide(.success(AutoNATDialRequest(peer: requester, addresses: []))) == .dialRefused)
        #expect(decide(.success(own), observed: nil) == .dialRefused)
        // A requester that reached us from a private or loopback IP learns nothing about the internet.
        let lan = AutoNATDialRequest(peer: requester, addresses: [Self.addr("/ip4/192.168.1.5/tcp/4001")])
        #expect(decide(.success(lan), observed: Self.addr("/ip4/192.168.1.5/tcp/5000")) == .dialRefused)
        #expect(decide(.success(own)) == nil, "the same request, well formed, is dialled")
    }

    @Test("rate limits: 3 per peer and 30 in total per minute (sliding), malformed requests count too")
    func rateLimits() {
        var policy = Self.policy()
        let requester = Self.peer()
        let request = AutoNATDialRequest(peer: requester, addresses: [Self.addr("/ip4/198.51.100.7/tcp/4001")])
        func decide(_ peer: PeerID, _ seconds: Int64, _ request: Result<AutoNATDialRequest, NetworkError>)
            -> AutoNATStatus?
        {
            Self.status(
                policy.decide(
                    request, from: peer, observedAddress: Self.observed, relayed: false,
                    now: Self.start + .seconds(seconds)))
        }
        #expect(decide(requester, 0, .failure(NetworkError(.protocolViolation, "garbage"))) == .badRequest)
        #expect(decide(requester, 10, .success(request)) == nil)
        #expect(decide(requester, 20, .success(request)) == nil)
        #expect(decide(requester, 30, .success(request)) == .dialRefused, "fourth in a minute")
        #expect(decide(requester, 60, .success(request)) == nil, "the first has left the window")
        // Globally: 29 more peers fill the window; the 31st request in it is refused.
        var results: [AutoNATStatus?] = []
        for _ in 0..<30 {
            let peer = Self.peer()
            results.append(decide(peer, 61, .success(AutoNATDialRequest(peer: peer, addresses: request.addresses))))
        }
        #expect(results.filter { $0 == nil }.count == 27, "3 of the requester's are still in the window")
        #expect(results.suffix(3).allSatisfy { $0 == .dialRefused })
        // Relayed requests are refused before they count.
        var fresh = Self.policy { $0.requestsPerPeer = 1 }
        _ = fresh.decide(
            .success(request), from: requester, observedAddress: Self.observed, relayed: true, now: Self.start)
        #expect(
            fresh.decide(
                .success(request), from: requester, observedAddress: Self.observed, relayed: false, now: Self.start)
                == .dial([Self.addr("/ip4/198.51.100.7/tcp/4001/p2p/\(requester)")]))
    }
}
