import Identity
import Multiformats
import NIOCore

/// Automatic relay choice (spec/network.md, "agentd and relays"), as a pure state machine: while
/// AutoNAT says private, hold reservations at up to `maximum` relays chosen among the candidates
/// (peers connected directly whose identify lists hop), lowest RTT first; renew each at three
/// quarters of its life (whatever the verdict: an expired circuit address must not stay
/// advertised); replace a lost one by the next best; skip a relay that refused for `refusalBackoff`.
///
/// Inputs are values (candidates with their RTT, the relays where a reservation is held, `now` in
/// Unix seconds); outputs are `reserve` actions whose outcome the caller reports with `granted` or
/// `failed`. Nothing here reads a clock, locks or spawns: `RelayChooser` runs it on a host.
public struct RelayChoice: Sendable {
    /// A peer that could be our relay.
    public struct Candidate: Sendable, Equatable {
        public var relay: PeerID
        /// Smoothed RTT of our direct connection to it; nil while unmeasured (ranked last).
        public var rtt: TimeAmount?
        /// Where to reserve: a direct address ending in `/p2p/RELAY`.
        public var address: Multiaddr

        public init(relay: PeerID, rtt: TimeAmount?, address: Multiaddr) {
            self.relay = relay
            self.rtt = rtt
            self.address = address
        }
    }

    public enum Action: Sendable, Hashable {
        /// Ask `relay` for a reservation (a new one, or the renewal of a held one) at `address`.
        case reserve(PeerID, at: Multiaddr)
    }

    /// How long a relay that refused (or failed) a reservation is skipped (seconds).
    public static let refusalBackoff: UInt64 = 60

    private struct Chosen: Sendable, Equatable {
        var address: Multiaddr
        /// Unix seconds.
        var renewAt: UInt64
    }

    /// Reservations to hold at once.
    public let maximum: Int
    public private(set) var reachability = Reachability.unknown
    /// Relays chosen here whose reservation is held.
    private var chosen: [PeerID: Chosen] = [:]
    /// Reservations asked for (new or renewals) whose outcome is not reported yet.
    private var pending: Set<PeerID> = []
    /// Relays whose last reservation failed, with when (Unix seconds).
    private var refused: [PeerID: UInt64] = [:]

    public init(maximum: Int) {
        precondition(maximum > 0, "a relay choice holds at least one reservation")
        self.maximum = maximum
    }

    /// Whether `relay` was chosen here: its reservation is held, being renewed, or being asked for
    /// (the client may already hold it: it announces a grant before `granted` is reported here).
    public func chose(_ relay: PeerID) -> Bool { chosen[relay] != nil || pending.contains(relay) }

    /// The relays chosen now, in no order.
    public var chosenRelays: Set<PeerID> { Set(chosen.keys) }

    /// AutoNAT's verdict changed.
    public mutating func reachabilityChanged(_ reachability: Reachability) {
        self.reachability = reachability
    }

    /// The reservations to ask for now.
    ///
    /// - Parameters:
    ///   - candidates: the relays we could choose, in any order.
    ///   - held: the relays where a reservation is held now (chosen here or configured); a chosen
    ///     relay missing from it lost its reservation and is replaced.
    ///   - now: Unix seconds.
    public mutating func poll(candidates: [Candidate], held: Set<PeerID>, now: UInt64) -> [Action] {
        // A chosen relay whose reservation is gone (the relay went away, refused a renewal, the
        // reservation expired) is no longer ours; the next best takes its place below.
        chosen = chosen.filter { held.contains($0.key) || pending.contains($0.key) }
        refused = refused.filter { now < $0.value + Self.refusalBackoff }
        var actions: [Action] = []
        for (relay, entry) in chosen.sorted(by: { Self.precedes($0.key, $1.key) })
        where now >= entry.renewAt && !pending.contains(relay) {
            pending.insert(relay)
            actions.append(.reserve(relay, at: entry.address))
        }
        guard reachability == .private else { return actions }
        var count = Set(chosen.keys).union(pending).count
        for candidate in Self.rank(candidates) where count < maximum {
            let relay = candidate.relay
            guard chosen[relay] == nil, !pending.contains(relay), !held.contains(relay), refused[relay] == nil else {
                continue
            }
            pending.insert(relay)
            actions.append(.reserve(relay, at: candidate.address))
            count += 1
        }
        return actions
    }

    /// `relay` granted the reservation asked for at `address`, until `expires` (Unix seconds).
    public mutating func granted(_ relay: PeerID, at address: Multiaddr, expires: UInt64, now: UInt64) {
        pending.remove(relay)
        refused[relay] = nil
        // Three quarters of the life, rounded up, without overflow (a relay may grant any expiry).
        let life = expires > now ? expires - now : 0
        let renewAt = now + max(life - life / 4, 1)
        chosen[relay] = Chosen(address: address, renewAt: renewAt)
    }

    /// The reservation asked for at `relay` failed (refused, unreachable): the relay is dropped and
    /// skipped for `refusalBackoff`.
    public mutating func failed(_ relay: PeerID, now: UInt64) {
        pending.remove(relay)
        chosen[relay] = nil
        refused[relay] = now
    }

    /// When `poll` has something new to do without any other input (a renewal due, a refusal's
    /// backoff ending), in Unix seconds; nil when nothing is scheduled.
    public var nextDeadline: UInt64? {
        let renewals = chosen.filter { !pending.contains($0.key) }.map(\.value.renewAt)
        let backoffs = reachability == .private ? refused.values.map { $0 + Self.refusalBackoff } : []
        return (renewals + backoffs).min()
    }

    /// Candidates best first: by RTT (unmeasured last), then by peer id; one entry per relay (its
    /// lowest RTT).
    static func rank(_ candidates: [Candidate]) -> [Candidate] {
        var best: [PeerID: Candidate] = [:]
        for candidate in candidates {
            if let existing = best[candidate.relay], !faster(candidate.rtt, than: existing.rtt) { continue }
            best[candidate.relay] = candidate
        }
        return best.values.sorted { a, b in
            if a.rtt != b.rtt { return faster(a.rtt, than: b.rtt) }
            return precedes(a.relay, b.relay)
        }
    }

    private static func faster(_ a: TimeAmount?, than b: TimeAmount?) -> Bool {
        switch (a, b) {
        case (let x?, let y?): x < y
        case (.some, .none): true
        case (.none, _): false
        }
    }

    private static func precedes(_ a: PeerID, _ b: PeerID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}
