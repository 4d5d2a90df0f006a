import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// What happens to a host, for the parts of the node that react to it (the DHT, and next AutoNAT,
/// the relay client and hole punching) instead of polling the host.
public enum HostEvent: Sendable {
    /// A connection to `peer` is established and registered (authenticated, muxer running).
    case connected(PeerID, connection: Int, direction: ConnectionDirection, remoteAddress: Multiaddr?)
    /// Identify completed on a connection to `peer`: `info` is now in the peer store.
    case identified(PeerID, connection: Int, info: IdentifyInfo)
    /// A registered connection to `peer` closed; `remaining` connections to it are left.
    case disconnected(PeerID, connection: Int, remaining: Int)
    /// `peer` told us (in identify) the address it sees our connection come from. Hearsay: one
    /// peer's word, for whoever counts such reports (AutoNAT, address discovery).
    case observedAddress(Multiaddr, reportedBy: PeerID)
    /// The addresses the host listens on changed (a listener was added).
    case listenAddressesChanged([Multiaddr])
    /// AutoNAT's verdict on whether this node is reachable from outside, or its confidence,
    /// changed (`AutoNATService`; spec/network.md, "AutoNAT").
    case reachabilityChanged(Reachability, confidence: Int)
    /// A relay granted (or renewed) our reservation: `addresses` are our circuit addresses through
    /// it (`…/p2p/RELAY/p2p-circuit`), valid until `expires` (Unix seconds).
    case reservation(relay: PeerID, addresses: [Multiaddr], expires: UInt64)
    /// A reservation ended before we renewed it (the relay went away, refused a renewal).
    case reservationLost(relay: PeerID, reason: String)
    /// The addresses the node advertises (identify, records) changed: `Host.advertisedAddresses`.
    case advertisedAddressesChanged([Multiaddr])
    /// A hole punch (DCUtR) over the relayed connection to `peer` ended.
    case holePunch(PeerID, HolePunchOutcome)
}

/// How a hole punch ended.
public struct HolePunchOutcome: Sendable, Equatable {
    /// Whether a direct connection to the peer exists now.
    public var succeeded: Bool
    /// CONNECT/SYNC rounds made (at most 3).
    public var attempts: Int
    /// From the relayed connection being up to the direct one, or to giving up.
    public var duration: TimeAmount
    /// Why it failed; nil when it succeeded.
    public var reason: String?

    public init(succeeded: Bool, attempts: Int, duration: TimeAmount, reason: String?) {
        self.succeeded = succeeded
        self.attempts = attempts
        self.duration = duration
        self.reason = reason
    }
}

/// Hands every `HostEvent` to each subscriber's `AsyncStream`, in the order emitted.
///
/// Each subscriber has a bounded buffer: one that does not keep up loses the oldest events, never
/// the host's memory, and the loss is counted and logged (once per subscriber per 10 s), never
/// silent. Streams finish when the host shuts down.
final class HostEventBus: Sendable {
    private struct Subscriber {
        let continuation: AsyncStream<HostEvent>.Continuation
        let label: String
        var dropped = 0
        var lastWarning: NIODeadline?
    }

    private struct State {
        var subscribers: [Int: Subscriber] = [:]
        var nextID = 0
        var finished = false
    }

    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// A new stream of the events emitted from now on.
    /// - Parameters:
    ///   - label: names the subscriber in the log line about lost events.
    ///   - bufferSize: events kept for a subscriber that has not read them yet.
    func subscribe(label: String, bufferSize: Int) -> AsyncStream<HostEvent> {
        precondition(bufferSize > 0, "a host event subscription needs a buffer")
        let (stream, continuation) = AsyncStream.makeStream(of: HostEvent.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = state.withLockedValue { state -> Int? in
            guard !state.finished else { return nil }
            defer { state.nextID += 1 }
            state.subscribers[state.nextID] = Subscriber(continuation: continuation, label: label)
            return state.nextID
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Number of live subscriptions (tests).
    var subscriberCount: Int { state.withLockedValue { $0.subscribers.count } }

    /// Events a subscriber lost because its buffer was full, by label (tests, status).
    func droppedEvents(label: String) -> Int {
        state.withLockedValue { $0.subscribers.values.filter { $0.label == label }.reduce(0) { $0 + $1.dropped } }
    }

    func emit(_ event: HostEvent) {
        // Yield under the lock: two emitters then deliver in one order to every subscriber.
        // `yield` only enqueues (and resumes a waiting reader's continuation): it never runs the
        // subscriber's code here.
        let warnings = state.withLockedValue { state -> [(String, Int)] in
            var warnings: [(String, Int)] = []
            for id in Array(state.subscribers.keys) {
                guard case .dropped = state.subscribers[id]!.continuation.yield(event) else { continue }
                state.subscribers[id]!.dropped += 1
                let now = NIODeadline.now()
                if let last = state.subscribers[id]!.lastWarning, now - last < .seconds(10) { continue }
                state.subscribers[id]!.lastWarning = now
                warnings.append((state.subscribers[id]!.label, state.subscribers[id]!.dropped))
            }
            return warnings
        }
        for (label, dropped) in warnings {
            logger.warning(
                "host events: a subscriber does not keep up; oldest events dropped",
                metadata: ["subscriber": "\(label)", "dropped": "\(dropped)"])
        }
    }

    /// Ends every stream; later subscriptions end at once.
    func finish() {
        let continuations = state.withLockedValue { state -> [AsyncStream<HostEvent>.Continuation] in
            state.finished = true
            defer { state.subscribers.removeAll() }
            return state.subscribers.values.map(\.continuation)
        }
        for continuation in continuations { continuation.finish() }
    }
}
