import Identity
import Multiformats
import NIOCore
import Testing

@testable import Network

/// `ReachabilityTracker` (the AutoNAT client) on a virtual clock: which answers count, the
/// confidence rule, no flip-flop, when it asks whom with which addresses.
@Suite("AutoNAT client: reachability verdict on a virtual clock")
struct AutoNATClientTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static func at(_ seconds: Int64) -> NIODeadline { start + .seconds(seconds) }
    static func peer() -> PeerID { PeerID(publicKey: Ed25519.PrivateKey().publicKey) }
    static func addr(_ text: String) -> Multiaddr { try! Multiaddr(text) }

    /// A tracker that listens on TCP 4001 and was told its public IP 203.0.113.7... which is a
    /// documentation range, so the lab rule makes it public (as `--public-cidr` would).
    static func tracker(_ configure: (inout ReachabilityTracker.Configuration) -> Void = { _ in })
        -> ReachabilityTracker
    {
        var configuration = ReachabilityTracker.Configuration()
        configuration.scopeRule = AddressScopeRule(publicNetworks: [try! IPNetwork("203.0.113.0/24")])
        configure(&configuration)
        var tracker = ReachabilityTracker(configuration: configuration)
        tracker.setAddresses(listen: [addr("/ip4/0.0.0.0/tcp/4001")], own: [addr("/ip4/192.168.1.5/tcp/4001")])
        tracker.observed(addr("/ip4/203.0.113.7/tcp/53211"))
        return tracker
    }

    static func asked(_ actions: [AutoNATClientAction]) -> [PeerID] {
        actions.compactMap { if case .ask(let peer, _) = $0 { peer } else { nil } }
    }

    static func ok() -> AutoNATDialResponse { .init(status: .ok, address: addr("/ip4/203.0.113.7/tcp/4001")) }
    static func dialError() -> AutoNATDialResponse { .init(status: .dialError, statusText: "no address answered") }

    @Test(
        "candidates: the observed public IP with each TCP listen port, public own addresses; never private or loopback")
    func candidates() {
        var tracker = Self.tracker()
        #expect(tracker.candidates == [Self.addr("/ip4/203.0.113.7/tcp/4001")])
        // A private observed IP (a LAN peer saw us) and a loopback one are not sent.
        tracker.observed(Self.addr("/ip4/10.0.0.9/tcp/1"))
        tracker.observed(Self.addr("/ip4/127.0.0.1/tcp/1"))
        #expect(tracker.candidates == [Self.addr("/ip4/203.0.113.7/tcp/4001")])
        // IPv6: combined with the IPv6 listener only; an announced public address comes first.
        tracker.setAddresses(
            listen: [Self.addr("/ip4/0.0.0.0/tcp/4001"), Self.addr("/ip6/::/tcp/4002")],
            own: [
                Self.addr("/ip4/198.51.100.20/tcp/4001"), Self.addr("/ip4/203.0.113.9/tcp/4444"),
                Self.addr("/ip4/192.168.1.5/tcp/4001"),
                // A circuit address through a relay on a public IP: reached through the relay, never a candidate.
                Self.addr("/ip4/203.0.113.1/tcp/4001/p2p/\(Self.peer())/p2p-circuit"),
            ])
        tracker.observed(Self.addr("/ip6/2001:4860::7/tcp/9"))
        #expect(
            tracker.candidates == [
                Self.addr("/ip4/203.0.113.9/tcp/4444"), Self.addr("/ip6/2001:4860::7/tcp/4002"),
                Self.addr("/ip4/203.0.113.7/tcp/4001"),
            ])
        // Nothing public known: nothing to ask about, nothing scheduled.
        var lan = ReachabilityTracker()
        lan.setAddresses(listen: [Self.addr("/ip4/127.0.0.1/tcp/4001")], own: [Self.addr("/ip4/127.0.0.1/tcp/4001")])
        lan.observed(Self.addr("/ip4/127.0.0.1/tcp/5555"))
        lan.serverAvailable(Self.peer())
        #expect(lan.candidates.isEmpty)
        #expect(lan.tick(now: Self.at(0)).isEmpty)
        #expect(lan.nextDeadline(now: Self.at(0)) == nil)
        // --public-cidr 127.0.0.0/8 makes loopback public (the tests' devnets).
        var devnet = ReachabilityTracker(
            configuration: {
                var configuration = ReachabilityTracker.Configuration()
                configuration.scopeRule = AddressScopeRule(publicNetworks: [try! IPNetwork("127.0.0.0/8")])
                return configuration
            }())
        devnet.setAddresses(listen: [Self.addr("/ip4/127.0.0.1/tcp/4001")], own: [Self.addr("/ip4/127.0.0.1/tcp/4001")])
        #expect(devnet.candidates == [Self.addr("/ip4/127.0.0.1/tcp/4001")])
    }

    @Test(
        "only OK and E_DIAL_ERROR are evidence; refusals, bad requests, internal errors and failures are recorded only")
    func whichAnswersCount() {
        var tracker = Self.tracker()
        let servers = (0..<6).map { _ in Self.peer() }
        for server in servers { tracker.serverAvailable(server) }
        let first = Self.asked(tracker.tick(now: Self.at(0)))
        #expect(first.count == 3)
        #expect(tracker.answered(by: first[0], response: .init(status: .dialRefused), now: Self.at(1)).isEmpty)
        #expect(tracker.answered(by: first[1], response: .init(status: .badRequest), now: Self.at(1)).isEmpty)
        #expect(tracker.answered(by: first[2], response: nil, failure: "stream reset", now: Self.at(1)).isEmpty)
        let second = Self.asked(tracker.tick(now: Self.at(61)))
        #expect(second.count == 3 && Set(second).isDisjoint(with: first))
        #expect(tracker.answered(by: second[0], response: .init(status: .internalError), now: Self.at(62)).isEmpty)
        #expect(tracker.reachability == .unknown && tracker.confidence == 0)
        #expect(tracker.answers.map(\.evidence) == [nil, nil, nil, nil])
        #expect(
            tracker.answered(by: second[1], response: Self.dialError(), now: Self.at(62)) == [
                .reachabilityChanged(.private, confidence: 1)
            ])
        #expect(
            tracker.answered(by: second[2], response: Self.ok(), now: Self.at(62)) == [
                .reachabilityChanged(.private, confidence: 0)
            ])
        #expect(tracker.reachability == .private, "a tie keeps the verdict")
        #expect(tracker.answers.last?.evidence == .public)
    }

    @Test("confidence is the lead of distinct servers, capped at 3; the same server repeating itself adds nothing")
    func confidenceFromDistinctServers() {
        var tracker = Self.tracker { $0.serversPerCheck = 1 }
        let one = Self.peer()
        tracker.serverAvailable(one)
        var now: Int64 = 0
        for round in 0..<4 {
            #expect(Self.asked(tracker.tick(now: Self.at(now))) == [one], "round \(round)")
            let changes = tracker.answered(by: one, response: Self.ok(), now: Self.at(now + 1))
            #expect(changes == (round == 0 ? [.reachabilityChanged(.public, confidence: 1)] : []))
            now += 90
        }
        #expect(tracker.confidence == 1)
        var more = Self.tracker()
        let servers = (0..<5).map { _ in Self.peer() }
        for server in servers { more.serverAvailable(server) }
        var changes: [AutoNATClientAction] = []
        for server in Self.asked(more.tick(now: Self.at(0))) {
            changes += more.answered(by: server, response: Self.ok(), now: Self.at(1))
        }
        for server in Self.asked(more.tick(now: Self.at(61))) {
            changes += more.answered(by: server, response: Self.ok(), now: Self.at(62))
        }
        #expect(
            changes == [
                .reachabilityChanged(.public, confidence: 1), .reachabilityChanged(.public, confidence: 2),
                .reachabilityChanged(.public, confidence: 3),
            ])
    }

    @Test("no flip-flop: one lying server among honest ones never moves the verdict; a majority does")
    func noFlipFlop() {
        var tracker = Self.tracker { $0.serversPerCheck = 1 }
        let honest = (0..<3).map { _ in Self.peer() }
        let liar = Self.peer()
        for server in honest { tracker.serverAvailable(server) }
        var now: Int64 = 0
        func round(_ answer: (PeerID) -> AutoNATDialResponse) -> [AutoNATClientAction] {
            let asked = Self.asked(tracker.tick(now: Self.at(now)))
            now += 100
            return asked.flatMap { tracker.answered(by: $0, response: answer($0), now: Self.at(now - 99)) }
        }
        for _ in 0..<3 { _ = round { _ in Self.dialError() } }
        #expect(tracker.reachability == .private && tracker.confidence == 3)
        tracker.serverAvailable(liar)
        var verdicts: Set<Reachability> = []
        for _ in 0..<20 {
            _ = round { $0 == liar ? Self.ok() : Self.dialError() }
            verdicts.insert(tracker.reachability)
        }
        #expect(verdicts == [.private])
        #expect(tracker.confidence == 2)
        // The network really changed (a port forward was added): as the honest servers change
        // their answers one by one, the verdict follows once they are the majority.
        var flips: [AutoNATClientAction] = []
        for _ in 0..<4 { flips += round { _ in Self.ok() } }
        #expect(flips.contains(.reachabilityChanged(.private, confidence: 0)), "a tie first: the verdict stays")
        #expect(flips.contains(.reachabilityChanged(.public, confidence: 2)))
        #expect(tracker.reachability == .public && tracker.confidence == 3)
    }

    @Test(
        "timing: at once when a server and an address exist, retries while unsure, refresh when sure, per-server throttle"
    )
    func timing() {
        var tracker = Self.tracker()
        #expect(tracker.tick(now: Self.at(0)).isEmpty, "no server yet")
        #expect(tracker.nextDeadline(now: Self.at(0)) == nil)
        let servers = (0..<4).map { _ in Self.peer() }
        for server in servers { tracker.serverAvailable(server) }
        #expect(tracker.nextDeadline(now: Self.at(5)) == Self.at(5))
        let first = Self.asked(tracker.tick(now: Self.at(5)))
        #expect(first.count == 3)
        #expect(Self.asked(tracker.tick(now: Self.at(6))).isEmpty, "the check is not due again")
        for server in first { _ = tracker.answered(by: server, response: Self.ok(), now: Self.at(6)) }
        #expect(tracker.confidence == 3)
        // Fully confident: the next check is the refresh, 15 min after the last.
        #expect(tracker.nextDeadline(now: Self.at(7)) == Self.at(5 + 900))
        #expect(tracker.tick(now: Self.at(5 + 899)).isEmpty)
        let refresh = Self.asked(tracker.tick(now: Self.at(5 + 900)))
        #expect(refresh.first == servers.first { !first.contains($0) }, "the server never asked goes first")
        // Unsure: retry after 60 s, but a server is not asked again within 90 s.
        var unsure = Self.tracker { $0.serversPerCheck = 1 }
        let only = Self.peer()
        unsure.serverAvailable(only)
        #expect(Self.asked(unsure.tick(now: Self.at(0))) == [only])
        _ = unsure.answered(by: only, response: .init(status: .dialRefused), now: Self.at(1))
        #expect(unsure.nextDeadline(now: Self.at(2)) == Self.at(90))
        #expect(unsure.tick(now: Self.at(60)).isEmpty)
        #expect(Self.asked(unsure.tick(now: Self.at(90))) == [only])
    }

    @Test("a server that leaves is not asked; a new observed IP starts a new check with the old votes dropped")
    func serversAndAddressChanges() {
        var tracker = Self.tracker { $0.serversPerCheck = 1 }
        let a = Self.peer()
        let b = Self.peer()
        tracker.serverAvailable(a)
        tracker.serverAvailable(b)
        tracker.serverGone(a)
        let asked = Self.asked(tracker.tick(now: Self.at(0)))
        #expect(asked == [b])
        #expect(
            tracker.answered(by: b, response: Self.ok(), now: Self.at(1)) == [
                .reachabilityChanged(.public, confidence: 1)
            ])
        tracker.serverAvailable(a)
        #expect(Self.asked(tracker.tick(now: Self.at(2))) == [a], "below full confidence a new server is asked at once")
        _ = tracker.answered(by: a, response: Self.ok(), now: Self.at(3))
        #expect(tracker.confidence == 2)
        // The ISP gave us a new address: a check is due at once (b and a are throttled until 90 s
        // after they were asked), with the new candidate first; the votes stand until replaced.
        tracker.observed(Self.addr("/ip4/203.0.113.99/tcp/40000"))
        #expect(tracker.nextDeadline(now: Self.at(4)) == Self.at(90))
        let actions = tracker.tick(now: Self.at(90))
        #expect(
            actions == [.ask(b, [Self.addr("/ip4/203.0.113.99/tcp/4001"), Self.addr("/ip4/203.0.113.7/tcp/4001")])])
        #expect(
            tracker.answered(by: b, response: Self.dialError(), now: Self.at(91)) == [
                .reachabilityChanged(.public, confidence: 0)
            ])
    }
}
