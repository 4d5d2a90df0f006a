import Multiformats
import NIOCore

/// The DCUtR exchange (libp2p/specs relay/DCUtR.md) as pure state machines, one per role; the
/// driver (`HolePunchService`) does the I/O and passes time in. Roles are fixed by the relayed
/// connection: the peer that accepted it (B) initiates, and after the exchange B is the TCP
/// server (multistream listener, Noise responder, yamux server), the other peer (A) the client.
enum HolePunchExchange {
    /// What the driver must do.
    enum Action: Equatable {
        /// Send CONNECT with our observed addresses.
        case sendConnect
        /// Send SYNC.
        case sendSync
        /// Dial these addresses of the peer from our listen port, after `delay`.
        case dial([Multiaddr], after: TimeAmount)
        /// A direct connection exists: done after `attempts` attempts.
        case succeeded(attempts: Int)
        /// Given up after `attempts` attempts.
        case failed(attempts: Int, reason: String)
    }

    /// At most this many attempts (the spec: B retries twice).
    static let maximumAttempts = 3
    /// B waits half the RTT before dialling; never longer than this (py-libp2p caps it at 2 s
    /// too), so a relay that held CONNECT back cannot push our dial past A's.
    static let maximumSyncDelay: TimeAmount = .seconds(2)

    /// B: opens the stream, measures the RTT, sends SYNC, dials after RTT/2; retries with a new
    /// CONNECT/SYNC exchange (the spec's FAQ: a fresh RTT each time).
    struct Initiator {
        private(set) var attempts = 0
        private var connectSentAt: NIODeadline?
        private(set) var finished = false

        init() {}

        /// Starts the first attempt.
        mutating func start(now: NIODeadline) -> [Action] {
            precondition(attempts == 0, "start once")
            return newAttempt(now: now)
        }

        private mutating func newAttempt(now: NIODeadline) -> [Action] {
            attempts += 1
            connectSentAt = now
            return [.sendConnect]
        }

        /// A's CONNECT arrived with its addresses (already filtered to those we may dial).
        mutating func receivedConnect(addresses: [Multiaddr], now: NIODeadline) -> [Action] {
            guard !finished, let sentAt = connectSentAt else {
                return finish(.failed(attempts: attempts, reason: "CONNECT arrived out of turn"))
            }
            connectSentAt = nil
            guard !addresses.isEmpty else {
                return finish(.failed(attempts: attempts, reason: "the peer sent no address we may dial"))
            }
            let rtt = now - sentAt
            let delay = min(TimeAmount.nanoseconds(rtt.nanoseconds / 2), Self.maximumSyncDelay)
            return [.sendSync, .dial(addresses, after: delay)]
        }

        /// The dials of the current attempt ended: `connected` if a direct connection to the peer
        /// now exists (ours, or the peer's that our listener accepted).
        mutating func dialsEnded(connected: Bool, now: NIODeadline) -> [Action] {
            guard !finished else { return [] }
            if connected { return finish(.succeeded(attempts: attempts)) }
            if attempts >= HolePunchExchange.maximumAttempts {
                return finish(.failed(attempts: attempts, reason: "no direct connection after \(attempts) attempts"))
            }
            return newAttempt(now: now)
        }

        /// The stream failed or ended early.
        mutating func streamFailed(_ reason: String) -> [Action] {
            guard !finished else { return [] }
            return finish(.failed(attempts: attempts, reason: reason))
        }

        private mutating func finish(_ action: Action) -> [Action] {
            finished = true
            return [action]
        }

        static var maximumSyncDelay: TimeAmount { HolePunchExchange.maximumSyncDelay }
    }

    /// A: answers CONNECT with its own, dials at once when SYNC arrives; any number of rounds
    /// (B decides when to stop), each CONNECT before its SYNC.
    struct Responder {
        private var peerAddresses: [Multiaddr]?
        private(set) var rounds = 0

        init() {}

        mutating func receivedConnect(addresses: [Multiaddr]) -> [Action] {
            peerAddresses = addresses
            return [.sendConnect]
        }

        /// - Returns: nil when SYNC came without a CONNECT before it (a protocol violation).
        mutating func receivedSync() -> [Action]? {
            guard let addresses = peerAddresses else { return nil }
            peerAddresses = nil
            rounds += 1
            return addresses.isEmpty ? [] : [.dial(addresses, after: .zero)]
        }
    }
}
