import Identity
import Multiformats
import NIOCore

/// The AutoNAT client as a pure state machine: which servers to ask, when, with which addresses,
/// and the reachability verdict their answers support (spec/network.md, "AutoNAT"). No sockets,
/// no clock, no tasks: events and `now` in, `AutoNATClientAction`s out. `AutoNATService` runs it
/// on a host; tests run it on a virtual clock.
///
/// The verdict. Only two answers are evidence: `OK` (the server dialled us back: public) and
/// `E_DIAL_ERROR` (it tried and failed: private). `E_DIAL_REFUSED`, `E_BAD_REQUEST`,
/// `E_INTERNAL_ERROR`, a malformed answer or a failed stream say nothing about us and are only
/// recorded. Each server has one vote, its latest evidence (the newest `maximumVotes` servers are
/// kept). The verdict moves to the side that has strictly more votes; on a tie it stays where it
/// is, so a lying server among honest ones cannot make it flip-flop, and one changed answer
/// cannot undo several agreeing ones. `confidence` is the lead of the verdict's side over the
/// other, capped at `maximumConfidence`: reaching 3 takes 3 more distinct servers for it than
/// against it.
public struct ReachabilityTracker: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Servers asked at once in a check.
        public var serversPerCheck = 3
        /// Time between checks while the verdict is unknown or below full confidence
        /// (go-libp2p: 90 s).
        public var retryInterval: TimeAmount = .seconds(60)
        /// Time between checks at full confidence (go-libp2p: 15 min).
        public var refreshInterval: TimeAmount = .minutes(15)
        /// A server is asked at most once in this long (go-libp2p: 90 s).
        public var serverThrottle: TimeAmount = .seconds(90)
        public var maximumConfidence = 3
        /// Servers whose latest evidence is kept (the oldest vote is dropped first).
        public var maximumVotes = 8
        /// Distinct observed IPs kept (the most recently reported first), and addresses sent.
        public var maximumObservedIPs = 4
        public var maximumCandidates = 8
        /// The rule that decides which addresses are public (`--public-cidr`).
        public var scopeRule = AddressScopeRule()

        public init() {}
    }

    /// One answer (or failure) from a server, as recorded for `agentctl nat`.
    public struct Answer: Sendable, Hashable {
        public var server: PeerID
        public var at: NIODeadline
        /// The status, or nil when the request failed (stream, timeout, malformed answer).
        public var status: AutoNATStatus?
        /// The server's status text, or what went wrong.
        public var text: String
        /// With `OK`: where the server reached us.
        public var address: Multiaddr?
        /// Whether the answer counted as evidence.
        public var evidence: Reachability?
    }

    public let configuration: Configuration
    public private(set) var reachability: Reachability = .unknown
    public private(set) var confidence = 0
    /// Servers we may ask (connected peers that offer the protocol), with when each was last asked.
    public private(set) var servers: [PeerID: NIODeadline?] = [:]
    /// Servers asked whose answer has not come.
    public private(set) var inFlight: Set<PeerID> = []
    /// Each server's latest evidence, with when it came.
    public private(set) var votes: [PeerID: (reachability: Reachability, at: NIODeadline)] = [:]
    /// The newest answers, newest last (at most 16).
    public private(set) var answers: [Answer] = []
    /// IPs peers reported seeing us at (identify's observed address), the most recent first.
    public private(set) var observedIPs: [IPAddress] = []
    private var listenAddresses: [Multiaddr] = []
    private var ownAddresses: [Multiaddr] = []
    /// The addresses the last check sent, to notice when they change.
    private var lastSent: [Multiaddr] = []
    /// When the last check started (nil: none yet, or our addresses changed since: due at once).
    private var lastCheck: NIODeadline?

    static let maximumAnswers = 16

    public init(configuration: Configuration = Configuration()) {
        precondition(
            configuration.serversPerCheck > 0 && configuration.maximumConfidence > 0 && configuration.maximumVotes > 0)
        self.configuration = configuration
    }

    /// When the next check is due: `retryInterval` after the last while the verdict is unknown or
    /// below full confidence, `refreshInterval` after it at full confidence; nil: at once.
    private var nextCheck: NIODeadline? {
        guard let lastCheck else { return nil }
        return lastCheck + (isSettled ? configuration.refreshInterval : configuration.retryInterval)
    }

    // MARK: Inputs

    /// `peer` offers AutoNAT (identify listed the protocol) over a direct connection.
    public mutating func serverAvailable(_ peer: PeerID) {
        if servers[peer] == nil { servers[peer] = .some(nil) }
    }

    /// `peer` is gone (no connection left) or stopped offering the protocol. Its vote stays.
    public mutating func serverGone(_ peer: PeerID) {
        servers[peer] = nil
    }

    /// A peer reported seeing our connection come from `address` (identify's observed address).
    /// Only the IP is kept: the port is the one our outbound connection used, not a listener.
    public mutating func observed(_ address: Multiaddr) {
        guard let ip = IPAddress(address) else { return }
        observedIPs.removeAll { $0 == ip }
        observedIPs.insert(ip, at: 0)
        if observedIPs.count > configuration.maximumObservedIPs { observedIPs.removeLast() }
    }

    /// The host's listen addresses as bound, and its own advertised addresses (`--announce` and
    /// interface addresses; `Host.advertisedAddresses`).
    public mutating func setAddresses(listen: [Multiaddr], own: [Multiaddr]) {
        listenAddresses = listen
        ownAddresses = own
    }

    /// The addresses a check sends: our own addresses that are public, then each observed public IP
    /// with each TCP listen port of its family; TCP only, without duplicates, at most
    /// `maximumCandidates`. Loopback, private and other non-public addresses are never sent (a
    /// server would dial them on its own network), unless `--public-cidr` makes them public.
    public var candidates: [Multiaddr] {
        var result: [Multiaddr] = []
        func add(_ address: Multiaddr) {
            guard result.count < configuration.maximumCandidates, !result.contains(address) else { return }
            result.append(address)
        }
        for address in ownAddresses {
            var components = address.components
            if case .p2p? = components.last { components.removeLast() }
            guard components.count == 2, case .tcp = components[1] else { continue }
            let bare = Multiaddr(components)
            guard let ip = IPAddress(bare), configuration.scopeRule.scope(of: ip) == .publicInternet else { continue }
            add(bare)
        }
        for ip in observedIPs where configuration.scopeRule.scope(of: ip) == .publicInternet {
            for listen in listenAddresses {
                guard listen.components.count == 2, case .tcp(let port) = listen.components[1], port != 0,
                    let bound = IPAddress(listen), bound.family == ip.family
                else { continue }
                add(Multiaddr([ip.multiaddrComponent, .tcp(port)]))
            }
        }
        return result
    }

    /// Whether the verdict is known at full confidence (checks then come at the refresh interval,
    /// and a new server waits for the next check).
    private var isSettled: Bool { reachability != .unknown && confidence >= configuration.maximumConfidence }

    /// When `server` (idle, last asked at `asked`) may be asked next.
    private func askableAt(_ asked: NIODeadline?, due: NIODeadline, now: NIODeadline) -> NIODeadline {
        guard let asked else { return isSettled ? due : now }
        return max(due, asked + configuration.serverThrottle)
    }

    /// When `tick` next has something to do; nil when nothing is scheduled (no server or no address
    /// to ask about, or every server busy answering).
    public func nextDeadline(now: NIODeadline) -> NIODeadline? {
        guard !servers.isEmpty, !candidates.isEmpty, inFlight.count < configuration.serversPerCheck else { return nil }
        let due = nextCheck ?? now
        return servers.compactMap { peer, asked in inFlight.contains(peer) ? nil : askableAt(asked, due: due, now: now)
        }.min()
    }

    /// Asks servers when a check is due: up to `serversPerCheck` at once (those never asked first,
    /// then the longest unasked; never one asked within `serverThrottle` or still answering) to
    /// dial back `candidates`. Below full confidence a server never asked before is asked as soon
    /// as it is available, without waiting for the next check. A change of the addresses to send
    /// makes a check due at once (the votes stay: each server's next answer replaces its own).
    public mutating func tick(now: NIODeadline) -> [AutoNATClientAction] {
        let addresses = candidates
        guard !addresses.isEmpty else { return [] }
        if !lastSent.isEmpty, addresses != lastSent { lastCheck = nil }
        let due = nextCheck ?? now
        let slots = configuration.serversPerCheck - inFlight.count
        guard slots > 0 else { return [] }
        let chosen = servers.filter { peer, asked in
            !inFlight.contains(peer) && askableAt(asked, due: due, now: now) <= now
        }.sorted { left, right in
            switch (left.value, right.value) {
            case (nil, nil): return left.key.bytes.lexicographicallyPrecedes(right.key.bytes)
            case (nil, _): return true
            case (_, nil): return false
            case (let l?, let r?): return l != r ? l < r : left.key.bytes.lexicographicallyPrecedes(right.key.bytes)
            }
        }.prefix(slots).map(\.key)
        guard !chosen.isEmpty else { return [] }
        lastSent = addresses
        if now >= due { lastCheck = now }
        return chosen.map { peer in
            servers[peer] = .some(now)
            inFlight.insert(peer)
            return .ask(peer, addresses)
        }
    }

    /// The answer to an `.ask`: the server's response, or nil with `failure` when the request
    /// failed. Returns `.reachabilityChanged` when the verdict or its confidence moved.
    public mutating func answered(
        by server: PeerID, response: AutoNATDialResponse?, failure: String = "", now: NIODeadline
    ) -> [AutoNATClientAction] {
        guard inFlight.remove(server) != nil else {
            preconditionFailure("an AutoNAT answer from \(server), which was not asked")
        }
        let evidence: Reachability?
        switch response?.status {
        case .ok?: evidence = .public
        case .dialError?: evidence = .private
        default: evidence = nil
        }
        record(
            Answer(
                server: server, at: now, status: response?.status, text: response?.statusText ?? failure,
                address: response?.address, evidence: evidence))
        guard let evidence else { return [] }
        votes[server] = (evidence, now)
        if votes.count > configuration.maximumVotes, let oldest = votes.min(by: { $0.value.at < $1.value.at })?.key {
            votes[oldest] = nil
        }
        return recompute()
    }

    // MARK: Verdict

    /// Derives the verdict and confidence from the votes; the change, if any.
    private mutating func recompute() -> [AutoNATClientAction] {
        let before = (reachability, confidence)
        let publicVotes = votes.values.filter { $0.reachability == .public }.count
        let privateVotes = votes.count - publicVotes
        if publicVotes > privateVotes {
            reachability = .public
        } else if privateVotes > publicVotes {
            reachability = .private
        }
        confidence = min(configuration.maximumConfidence, abs(publicVotes - privateVotes))
        guard before != (reachability, confidence) else { return [] }
        return [.reachabilityChanged(reachability, confidence: confidence)]
    }

    private mutating func record(_ answer: Answer) {
        answers.append(answer)
        if answers.count > Self.maximumAnswers { answers.removeFirst() }
    }
}

/// What `ReachabilityTracker` asks its driver to do.
public enum AutoNATClientAction: Sendable, Hashable {
    /// Ask `server` to dial us back at these addresses (one DIAL on a new stream), then report the
    /// outcome with `answered`.
    case ask(PeerID, [Multiaddr])
    /// The verdict or its confidence changed (to be announced: host event, event line).
    case reachabilityChanged(Reachability, confidence: Int)
}
