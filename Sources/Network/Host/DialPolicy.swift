import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

extension Multiaddr {
    /// This address with `/p2p/<peer>` at its end, unless it already ends in a `/p2p` component.
    /// A circuit address `…/p2p/RELAY/p2p-circuit` gets the peer appended: its `/p2p` names the
    /// relay, not the peer.
    public func ending(in peer: PeerID) -> Multiaddr {
        if case .p2p? = components.last { return self }
        return appending(.p2p(peer.multihash))
    }
}

/// The dial policy (spec/network.md, "Dial policy"): which of a peer's addresses are dialled when.
/// A pure state machine: time comes in as `NIODeadline`s, the outputs are the addresses to start
/// dialling now and when to be asked again; it never reads a clock, locks or spawns.
///
/// Direct addresses are ranked (public, then private and other local scopes, then loopback; DNS
/// names count as public) and raced: the first starts at once, each next one `stagger` after the
/// previous start or at once when a dial failed, at most `maximumConcurrentDirect` at a time.
/// Relayed (circuit) addresses start once every direct dial failed, or `relayedHeadStart` after
/// the first dial, whichever comes first (an unreachable direct address never holds the relayed
/// path back longer), `stagger` apart. The first dial that succeeds wins.
public struct DialSchedule: Sendable {
    public struct Configuration: Sendable, Equatable {
        public var stagger: TimeAmount = .milliseconds(250)
        public var maximumConcurrentDirect = 4
        public var relayedHeadStart: TimeAmount = .seconds(1)

        public init() {}
    }

    public let configuration: Configuration
    /// Ranked direct addresses, then relayed ones.
    public let direct: [Multiaddr]
    public let relayed: [Multiaddr]
    private var nextDirect = 0
    private var nextRelayed = 0
    private var runningDirect = 0
    private var failedDirect = 0
    private var failedRelayed = 0
    private var began: NIODeadline?
    private var lastDirectStart: NIODeadline?
    private var lastRelayedStart: NIODeadline?

    /// `addresses` split into direct and relayed ones, the direct ones ranked by `scope` (stable:
    /// equal ranks keep their order); duplicates dropped.
    public init(
        addresses: [Multiaddr], configuration: Configuration = Configuration(),
        scope: (IPAddress) -> AddressScope = AddressScope.of
    ) {
        self.configuration = configuration
        var seen = Set<Multiaddr>()
        let unique = addresses.filter { seen.insert($0).inserted }
        relayed = unique.filter { $0.components.contains(.p2pCircuit) }
        func rank(_ address: Multiaddr) -> Int {
            guard let ip = IPAddress(address) else { return 0 }  // a DNS name: as public
            switch scope(ip) {
            case .publicInternet: return 0
            case .loopback: return 2
            default: return 1
            }
        }
        // Within a scope QUIC addresses go first: the next address (TCP) starts `stagger` later
        // unless the QUIC dial failed, which is QUIC's head start (spec/network.md, "Dial policy").
        func transportRank(_ address: Multiaddr) -> Int { QUICAddress.isQUIC(address) ? 0 : 1 }
        direct = unique.filter { !$0.components.contains(.p2pCircuit) }.enumerated()
            .sorted {
                (rank($0.element), transportRank($0.element), $0.offset)
                    < (rank($1.element), transportRank($1.element), $1.offset)
            }.map(\.element)
    }

    /// Every address started, and every dial failed.
    public var isExhausted: Bool {
        failedDirect == direct.count && failedRelayed == relayed.count
    }

    /// The first dials.
    public mutating func begin(now: NIODeadline) -> [Multiaddr] {
        began = now
        return due(now: now)
    }

    /// A dial of `address` failed: what to start now.
    public mutating func failed(_ address: Multiaddr, now: NIODeadline) -> [Multiaddr] {
        if address.components.contains(.p2pCircuit) {
            failedRelayed += 1
            // The next relayed address need not wait for its stagger.
            lastRelayedStart = nil
        } else {
            failedDirect += 1
            runningDirect -= 1
            lastDirectStart = nil
        }
        return due(now: now)
    }

    /// What to start at `now` (call at `nextWakeup`).
    public mutating func tick(now: NIODeadline) -> [Multiaddr] { due(now: now) }

    /// When `tick` has something to start next; nil: only a failure can start more.
    public var nextWakeup: NIODeadline? {
        guard let began else { return nil }
        var wakeups: [NIODeadline] = []
        if nextDirect < direct.count, runningDirect < configuration.maximumConcurrentDirect, let last = lastDirectStart {
            wakeups.append(last + configuration.stagger)
        }
        if nextRelayed < relayed.count {
            if nextRelayed == 0 {
                wakeups.append(began + configuration.relayedHeadStart)
            } else if let last = lastRelayedStart {
                wakeups.append(last + configuration.stagger)
            }
        }
        return wakeups.min()
    }

    private mutating func due(now: NIODeadline) -> [Multiaddr] {
        guard let began else { return [] }
        var start: [Multiaddr] = []
        if nextDirect < direct.count, runningDirect < configuration.maximumConcurrentDirect,
            lastDirectStart.map({ now >= $0 + configuration.stagger }) ?? true
        {
            start.append(direct[nextDirect])
            nextDirect += 1
            runningDirect += 1
            lastDirectStart = now
        }
        let directDone = failedDirect == direct.count
        if nextRelayed < relayed.count, directDone || now >= began + configuration.relayedHeadStart,
            lastRelayedStart.map({ now >= $0 + configuration.stagger }) ?? true
        {
            start.append(relayed[nextRelayed])
            nextRelayed += 1
            lastRelayedStart = now
        }
        return start
    }
}

extension Host {
    /// Connects to `peer` at one of `addresses` by the dial policy (`DialSchedule`): a live
    /// connection to the peer answers at once; else the addresses (each completed with
    /// `/p2p/<peer>`; with `origin`, only those the scope rule permits) are raced, direct ones
    /// ranked first and relayed ones after them or after a head start, and the first connection
    /// wins. Each dial is its own (`reuse: .sameAddress`), so two addresses are never joined into
    /// one pending dial. Dials still running when one won go on as host tasks (a second connection
    /// they make is settled by the one-connection-per-path rule).
    /// - Throws: `NetworkError.connectionFailed` naming each address and its failure, or
    ///   `.invalidAddress` when no address is left to dial.
    public func connect(
        to peer: PeerID, addresses: [Multiaddr], origin: AddressOrigin? = nil,
        schedule configuration: DialSchedule.Configuration = DialSchedule.Configuration()
    ) async throws -> Connection {
        if let existing = core.connection(to: peer), !existing.isClosing { return existing }
        // A dial to the peer already under way (another lookup's) is joined rather than repeated:
        // the DHT asks many peers at once, and two concurrent requests to one new peer would
        // otherwise each pay a handshake and then close one of the two connections.
        if let pending = core.pendingDial(to: peer), let joined = try? await pending.get(), !joined.isClosing {
            return joined
        }
        let rule = addressScopeRule
        let permitted = origin.map { origin in addresses.filter { rule.permits($0, from: origin) } } ?? addresses
        let schedule = DialSchedule(
            addresses: permitted.map { $0.ending(in: peer) }, configuration: configuration, scope: rule.scope(of:))
        guard !schedule.isExhausted else {
            throw NetworkError(.invalidAddress, "no dialable address for \(peer) among \(addresses.count)")
        }
        // One address: nothing to race, and the dial is shared with concurrent callers.
        let ordered = permitted.map { $0.ending(in: peer) }
        if ordered.count == 1 { return try await core.connect(to: ordered[0], reuse: .anyToPeer) }
        let race = DialRace(core: core, schedule: schedule)
        return try await race.run()
    }
}

/// Runs a `DialSchedule` against the host: dials as host tasks, a timer for the next wake-up, the
/// first success (or the last failure) resumes the caller once.
private final class DialRace: Sendable {
    private struct State {
        var schedule: DialSchedule
        var continuation: CheckedContinuation<Connection, any Error>?
        var timer: Scheduled<Void>?
        var failures: [String] = []
        var finished = false
    }
    private let core: HostCore
    private let eventLoop: EventLoop
    private let state: NIOLockedValueBox<State>

    init(core: HostCore, schedule: DialSchedule) {
        self.core = core
        self.eventLoop = core.group.next()
        self.state = NIOLockedValueBox(State(schedule: schedule))
    }

    func run() async throws -> Connection {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Connection, any Error>) in
                let start = state.withLockedValue { state -> [Multiaddr]? in
                    // Cancelled before we got here: `finish` found no continuation to resume.
                    guard !state.finished else { return nil }
                    state.continuation = continuation
                    return state.schedule.begin(now: .now())
                }
                guard let start else {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                launch(start)
                rescheduleTimer()
            }
        } onCancel: {
            finish(.failure(CancellationError()))
        }
    }

    private func launch(_ addresses: [Multiaddr]) {
        for address in addresses {
            let started = core.spawn("dial \(address)") { [self] in
                do {
                    let connection = try await core.connect(to: address, reuse: .sameAddress)
                    finish(.success(connection))
                } catch {
                    failed(address, error)
                }
            }
            if !started { failed(address, NetworkError(.shutdown, "the host is shut down")) }
        }
    }

    private func failed(_ address: Multiaddr, _ error: any Error) {
        let (next, exhausted, failures) = state.withLockedValue { state -> ([Multiaddr], Bool, [String]) in
            state.failures.append("\(address): \(error)")
            guard !state.finished else { return ([], false, []) }
            let next = state.schedule.failed(address, now: .now())
            return (next, state.schedule.isExhausted, state.failures)
        }
        if exhausted {
            finish(.failure(NetworkError(.connectionFailed, failures.joined(separator: "; "))))
            return
        }
        launch(next)
        rescheduleTimer()
    }

    private func rescheduleTimer() {
        let (old, wakeup) = state.withLockedValue { state -> (Scheduled<Void>?, NIODeadline?) in
            defer { state.timer = nil }
            return (state.timer, state.finished ? nil : state.schedule.nextWakeup)
        }
        old?.cancel()
        guard let wakeup else { return }
        let timer = eventLoop.scheduleTask(deadline: wakeup) { [self] in
            let next = state.withLockedValue { state -> [Multiaddr] in
                state.finished ? [] : state.schedule.tick(now: .now())
            }
            launch(next)
            rescheduleTimer()
        }
        let stale = state.withLockedValue { state -> Scheduled<Void>? in
            // Another reschedule may have set one meanwhile: keep the newest, cancel the other.
            let previous = state.timer
            state.timer = state.finished ? nil : timer
            return state.finished ? timer : previous
        }
        stale?.cancel()
    }

    private func finish(_ result: Result<Connection, any Error>) {
        let (continuation, timer) = state.withLockedValue { state -> (CheckedContinuation<Connection, any Error>?, Scheduled<Void>?) in
            guard !state.finished else { return (nil, nil) }
            state.finished = true
            defer {
                state.continuation = nil
                state.timer = nil
            }
            return (state.continuation, state.timer)
        }
        timer?.cancel()
        continuation?.resume(with: result)
    }
}
