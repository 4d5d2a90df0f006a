import Identity
import Multiformats

/// What a relay (the hop role) grants (spec/network.md, "Circuit relay: limits"). The defaults serve
/// agents' traffic (requests, answers, mailboxes) while a hole punch is tried, at a bounded cost
/// for a public node that relays for others.
public struct RelayLimits: Sendable, Equatable {
    /// How long a reservation lasts before the client must renew it (seconds).
    public var reservationTTL: UInt64 = 3600
    /// Reservations held at once, in total and per IP address (a peer holds at most one: a renewal
    /// replaces it).
    public var maximumReservations = 128
    public var maximumReservationsPerIP = 8
    /// Circuits at once in total, and per peer (as source or as target).
    public var maximumCircuits = 256
    public var maximumCircuitsPerPeer = 16
    /// One circuit's life: past `circuitDuration` seconds, or once `circuitBytes` went one way, the
    /// relay resets both of its streams (the spec's `Limit`; 0 would mean unlimited, never used).
    public var circuitDuration: UInt32 = 600
    public var circuitBytes: UInt64 = 64 << 20

    public init() {}
}

/// The relay's bookkeeping: reservations and circuits, with the limits applied. A pure state
/// machine: time comes in as Unix seconds, nothing here reads a clock, locks or spawns.
struct RelayReservationTable: Sendable {
    struct Reservation: Equatable, Sendable {
        /// Unix seconds.
        var expire: UInt64
        var ip: IPAddress?
        /// The connection the reservation was made over: it lasts while that connection does.
        var connection: Int
    }

    enum Refusal: Error, Equatable {
        case status(RelayStatus, String)
    }

    let limits: RelayLimits
    private(set) var reservations: [PeerID: Reservation] = [:]
    private(set) var circuitsByPeer: [PeerID: Int] = [:]
    private(set) var circuitCount = 0

    init(limits: RelayLimits) {
        self.limits = limits
    }

    /// A RESERVE from `peer` over a direct connection from `ip`: the expiry granted, or why not.
    mutating func reserve(peer: PeerID, ip: IPAddress?, connection: Int, now: UInt64) -> Result<UInt64, Refusal> {
        expire(now: now)
        let renewal = reservations[peer] != nil
        if !renewal {
            if reservations.count >= limits.maximumReservations {
                return .failure(.status(.reservationRefused, "\(reservations.count) reservations held"))
            }
            if let ip, reservations.values.count(where: { $0.ip == ip }) >= limits.maximumReservationsPerIP {
                return .failure(.status(.reservationRefused, "\(limits.maximumReservationsPerIP) reservations from \(ip)"))
            }
        }
        let expire = now + limits.reservationTTL
        reservations[peer] = Reservation(expire: expire, ip: ip, connection: connection)
        return .success(expire)
    }

    /// Whether `target` holds a live reservation.
    func hasReservation(_ target: PeerID, now: UInt64) -> Bool {
        guard let reservation = reservations[target] else { return false }
        return reservation.expire > now
    }

    /// A CONNECT from `source` to `target`: admitted (and counted; `circuitClosed` must follow),
    /// or why not.
    mutating func openCircuit(from source: PeerID, to target: PeerID, now: UInt64) -> Result<Void, Refusal> {
        guard source != target else {
            return .failure(.status(.permissionDenied, "a circuit from a peer to itself"))
        }
        guard hasReservation(target, now: now) else {
            return .failure(.status(.noReservation, "\(target) holds no reservation"))
        }
        if circuitCount >= limits.maximumCircuits {
            return .failure(.status(.resourceLimitExceeded, "\(circuitCount) circuits open"))
        }
        for peer in [source, target] where circuitsByPeer[peer, default: 0] >= limits.maximumCircuitsPerPeer {
            return .failure(.status(.resourceLimitExceeded, "\(limits.maximumCircuitsPerPeer) circuits of \(peer)"))
        }
        circuitCount += 1
        circuitsByPeer[source, default: 0] += 1
        circuitsByPeer[target, default: 0] += 1
        return .success(())
    }

    mutating func circuitClosed(from source: PeerID, to target: PeerID) {
        precondition(circuitCount > 0, "a circuit closed that was never opened")
        circuitCount -= 1
        for peer in [source, target] {
            circuitsByPeer[peer, default: 0] -= 1
            if circuitsByPeer[peer] == 0 { circuitsByPeer[peer] = nil }
        }
    }

    /// `peer`'s connection `connection` closed: a reservation made over it ends (spec: "If the peer
    /// disconnects, the reservation is no longer valid"). Whether one ended.
    @discardableResult
    mutating func connectionClosed(peer: PeerID, connection: Int) -> Bool {
        guard reservations[peer]?.connection == connection else { return false }
        reservations[peer] = nil
        return true
    }

    /// Ends every reservation (the relay stopped serving: no circuit can be opened through them);
    /// open circuits stay counted until they close. The peers whose reservation ended.
    mutating func removeAllReservations() -> [PeerID] {
        defer { reservations = [:] }
        return Array(reservations.keys)
    }

    /// Drops reservations past their expiry.
    mutating func expire(now: UInt64) {
        reservations = reservations.filter { $0.value.expire > now }
    }
}
