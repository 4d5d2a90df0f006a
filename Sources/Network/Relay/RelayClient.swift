import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// A reservation this node holds at a relay.
public struct RelayReservationInfo: Sendable, Equatable {
    public var relay: PeerID
    /// Our circuit addresses through the relay, `…/p2p/RELAY/p2p-circuit` (others append our /p2p).
    public var addresses: [Multiaddr]
    /// Unix seconds.
    public var expires: UInt64
    /// The relay's limits on each circuit (seconds, bytes; 0 = none), if it sent them.
    public var limitDuration: UInt32?
    public var limitBytes: UInt64?
    /// Whether the relay's voucher checked out (signed by the relay, for us, with the same expiry).
    /// Vouchers are advisory: a reservation without one is used all the same.
    public var voucherVerified: Bool
}

/// When to renew reservations and retry refused ones. A pure schedule: time in Unix seconds.
struct ReservationSchedule: Sendable, Equatable {
    /// Consecutive failures so far.
    private(set) var failures = 0

    /// After a reservation until `expires` granted at `now`: renew after three quarters of its
    /// remaining life (at least 1 s), so a renewal has a quarter of the life to be retried in.
    mutating func granted(expires: UInt64, now: UInt64) -> UInt64 {
        failures = 0
        guard expires > now else { return 1 }
        // Three quarters, rounded up, without overflow (a relay may grant any expiry).
        let life = expires - now
        return max(life - life / 4, 1)
    }

    /// After a failed attempt: 1, 2, 4 … 64 s, then every 64 s.
    mutating func failed() -> UInt64 {
        defer { failures += 1 }
        return UInt64(1) << UInt64(min(failures, 6))
    }
}

/// The client side of circuit relay v2: the circuit transport (dial `/p2p-circuit` addresses,
/// accept circuits from our relays) and the reservations that make this node reachable through
/// relays while it is not reachable directly.
public final class RelayClient: Sendable {
    let host: Host
    let transport: CircuitTransport
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    private struct State {
        var reservations: [PeerID: RelayReservationInfo] = [:]
        /// Relays whose reservation is kept (renewed, retried), with their wake-up alarms.
        var kept: [PeerID: Alarm] = [:]
        /// Kept relays whose last attempt failed, waiting to retry.
        var retrying: Set<PeerID> = []
        /// Per held reservation, the timer that ends it at its expiry unless renewed first.
        var expiries: [PeerID: Scheduled<Void>] = [:]
    }
    private let state = NIOLockedValueBox(State())

    static let protectionTag = "relay-client"

    /// A wait of `seconds`, at most a day: a relay may grant any expiry (`UInt64.max` would
    /// overflow a `TimeAmount`); a timer that fires early looks again.
    static func timeout(seconds: UInt64) -> TimeAmount { .seconds(Int64(min(seconds, 86_400))) }

    /// Adds the circuit transport to `host` and accepts circuits (STOP) from relays where a
    /// reservation is held.
    public init(host: Host, now: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }) {
        self.host = host
        self.now = now
        self.transport = CircuitTransport(core: host.core)
        var logger = host.core.logger
        logger[metadataKey: "service"] = "relay-client"
        self.logger = logger
        host.core.add(transport: transport)
        host.handle(CircuitRelay.stopProtocolID) { [transport] stream in await transport.serveStop(stream) }
        let events = host.events(label: "relay client")
        host.spawn("relay client: host events") { [self] in
            for await event in events {
                switch event {
                case .disconnected(let peer, _, let remaining) where remaining == 0:
                    lose(peer, reason: "disconnected from the relay")
                case .identified(let peer, _, let info):
                    relayIdentified(peer, servesHop: info.protocols.contains(CircuitRelay.hopProtocolID))
                default:
                    break
                }
            }
            // The host shut down: no reservation timer outlives it.
            let timers = state.withLockedValue { state in
                defer { state.expiries = [:] }
                return Array(state.expiries.values)
            }
            for timer in timers { timer.cancel() }
        }
    }

    /// A relay's identify (or identify push) arrived. A relay that stopped serving hop (its
    /// `--relay-service auto` went private, or it was switched off) can open no more circuits to
    /// us: the reservation is lost now, not at its expiry. A kept relay that serves hop again is
    /// retried at once instead of at the end of its backoff.
    private func relayIdentified(_ relay: PeerID, servesHop: Bool) {
        let (held, alarm) = state.withLockedValue { state in
            (state.reservations[relay] != nil, state.retrying.contains(relay) ? state.kept[relay] : nil)
        }
        if held && !servesHop {
            lose(relay, reason: "the relay stopped serving hop")
        } else if servesHop, let alarm {
            alarm.signal()
        }
    }

    /// The reservations held now.
    public var reservations: [RelayReservationInfo] {
        state.withLockedValue { Array($0.reservations.values) }.sorted { $0.relay.bytes.lexicographicallyPrecedes($1.relay.bytes) }
    }

    /// Ends the reservation at `relay`, if one is held: its circuit addresses withdrawn
    /// (`advertisedAddressesChanged`), circuits from the relay refused, event `reservationLost`.
    private func lose(_ relay: PeerID, reason: String) {
        let (lost, alarm, timer) = state.withLockedValue { state in
            (
                state.reservations.removeValue(forKey: relay) != nil, state.kept[relay],
                state.expiries.removeValue(forKey: relay)
            )
        }
        timer?.cancel()
        guard lost else { return }
        transport.setReservation(at: relay, held: false)
        host.core.setCircuitAddresses([], through: relay)
        _ = host.core.unprotect(relay, tag: Self.protectionTag)
        logger.info("reservation lost: \(reason)", metadata: ["relay": "\(relay)"])
        host.core.events.emit(.reservationLost(relay: relay, reason: reason))
        alarm?.signal()
    }

    /// Makes one reservation at the relay `address` (which ends in `/p2p/RELAY`) and starts using
    /// it: circuit addresses advertised, circuits from the relay accepted, and withdrawn again at
    /// its expiry unless renewed. A renewal that fails (the relay refused it, or could not be
    /// asked) ends the reservation held there: its addresses are withdrawn and `reservationLost`
    /// says why.
    @discardableResult
    public func reserve(at address: Multiaddr) async throws -> RelayReservationInfo {
        guard let hash = address.peerIDMultihash, let relay = try? PeerID(multihash: hash) else {
            throw NetworkError(.invalidAddress, "\(address) has no /p2p/<relay id>")
        }
        do {
            return try await request(at: address, relay: relay)
        } catch {
            lose(relay, reason: "renewal failed: \(error)")
            throw error
        }
    }

    private func request(at address: Multiaddr, relay: PeerID) async throws -> RelayReservationInfo {
        guard CircuitTransport.parse(address) == nil else {
            throw NetworkError(.invalidAddress, "\(address): a reservation through a relayed address is not possible")
        }
        let connection = try await host.core.connect(to: address)
        guard !connection.path.isRelayed else {
            throw NetworkError(.connectionFailed, "relay \(relay) is only reachable through another relay")
        }
        let stream = try await host.core.newStream(on: connection, protocols: [CircuitRelay.hopProtocolID])
        let reply: RelayHopMessage
        do {
            var request = RelayHopMessage()
            request.type = .reserve
            try await stream.writeRelayMessage(request)
            let answer = try await stream.raw.withDeadline(host.core.configuration.dialTimeout, "relay RESERVE answer") {
                try await stream.readRelayMessage(RelayHopMessage.self)
            }
            // Done with the stream (py's relay waits for more messages on it otherwise, quirk 1).
            stream.close()
            guard let answer else {
                throw NetworkError(.connectionFailed, "relay \(relay) closed the stream without answering RESERVE")
            }
            reply = answer
        } catch {
            stream.reset()
            throw error
        }
        guard reply.type == .status else {
            throw NetworkError(.protocolViolation, "relay \(relay) answered RESERVE with \(reply.type), not STATUS")
        }
        guard reply.status == .ok else { throw CircuitRelay.refusal(reply.status, from: relay, doing: "reservation") }
        let now = now()
        guard reply.hasReservation, reply.reservation.expire > now else {
            throw NetworkError(.protocolViolation, "relay \(relay) granted a reservation without a future expiry")
        }
        let info = RelayReservationInfo(
            relay: relay, addresses: Self.circuitAddresses(dialled: address, granted: reply.reservation.addrs, relay: relay),
            expires: reply.reservation.expire,
            limitDuration: reply.hasLimit ? reply.limit.duration : nil, limitBytes: reply.hasLimit ? reply.limit.data : nil,
            voucherVerified: verifyVoucher(reply.reservation, relay: relay))
        let timer = host.core.group.next().scheduleTask(in: Self.timeout(seconds: info.expires - now)) { [self] in
            expire(relay, at: info.expires)
        }
        let replaced = state.withLockedValue { state in
            state.reservations[relay] = info
            return state.expiries.updateValue(timer, forKey: relay)
        }
        replaced?.cancel()
        host.core.protect(relay, tag: Self.protectionTag)
        transport.setReservation(at: relay, held: true)
        host.core.setCircuitAddresses(info.addresses, through: relay)
        logger.info("reservation granted", metadata: ["relay": "\(relay)", "expires": "\(info.expires)"])
        host.core.events.emit(.reservation(relay: relay, addresses: info.addresses, expires: info.expires))
        return info
    }

    /// The timer of the reservation at `relay` until `expires` fired: unless it was renewed
    /// meanwhile, it ends now (its circuit addresses must not outlive it).
    private func expire(_ relay: PeerID, at expires: UInt64) {
        let now = now()
        let due = state.withLockedValue { $0.reservations[relay]?.expires == expires }
        guard due else { return }
        guard now >= expires else {
            // The wall clock lags the event loop's: check again when it says so.
            let timer = host.core.group.next().scheduleTask(in: Self.timeout(seconds: expires - now)) { [self] in
                expire(relay, at: expires)
            }
            let replaced = state.withLockedValue { state in
                guard state.reservations[relay]?.expires == expires else { return Optional(timer) }
                return state.expiries.updateValue(timer, forKey: relay)
            }
            replaced?.cancel()
            return
        }
        lose(relay, reason: "expired without renewal")
    }

    private func verifyVoucher(_ reservation: RelayReservation, relay: PeerID) -> Bool {
        guard reservation.hasVoucher else { return false }
        do {
            let voucher = try ReservationVoucher(envelope: Array(reservation.voucher))
            guard voucher.relay == relay, voucher.peer == host.peerID, voucher.expiration == reservation.expire else {
                logger.info("relay voucher names another relay, peer or expiry; ignored", metadata: ["relay": "\(relay)"])
                return false
            }
            return true
        } catch {
            logger.info("relay voucher does not verify: \(error); ignored", metadata: ["relay": "\(relay)"])
            return false
        }
    }

    /// Our circuit addresses through `relay`: the address we reached it at first, then the ones it
    /// granted (each must be the relay's: ends in its /p2p, or gets it), at most 4, no duplicates.
    static func circuitAddresses(dialled: Multiaddr, granted: [Data], relay: PeerID) -> [Multiaddr] {
        var relayAddresses = [dialled]
        for bytes in granted {
            guard var address = try? Multiaddr(bytes: Array(bytes)), CircuitTransport.parse(address) == nil else { continue }
            if case .p2p(let hash)? = address.components.last {
                guard hash == relay.multihash else { continue }
            } else {
                address = address.appending(.p2p(relay.multihash))
            }
            if !relayAddresses.contains(address) { relayAddresses.append(address) }
        }
        return relayAddresses.prefix(4).map { $0.appending(.p2pCircuit) }
    }

    /// Keeps a reservation at the relay `address`: reserves, renews before expiry, and retries
    /// (1 s … 64 s apart) after a refusal or when the relay goes away, until the host shuts down.
    public func keep(_ address: Multiaddr) throws {
        guard let hash = address.peerIDMultihash, let relay = try? PeerID(multihash: hash) else {
            throw NetworkError(.invalidAddress, "\(address) has no /p2p/<relay id>")
        }
        let alarm = Alarm()
        let isNew = state.withLockedValue { state -> Bool in
            guard state.kept[relay] == nil else { return false }
            state.kept[relay] = alarm
            return true
        }
        guard isNew else { return }
        host.spawn("relay reservation at \(relay)") { [self] in
            var schedule = ReservationSchedule()
            while !Task.isCancelled {
                let delay: UInt64
                let failed: Bool
                do {
                    let info = try await reserve(at: address)
                    delay = schedule.granted(expires: info.expires, now: now())
                    failed = false
                } catch {
                    if Task.isCancelled { break }
                    delay = schedule.failed()
                    failed = true
                    logger.info(
                        "reservation failed: \(error); retrying in \(delay) s", metadata: ["relay": "\(relay)"])
                }
                state.withLockedValue { state in
                    if failed { state.retrying.insert(relay) } else { state.retrying.remove(relay) }
                }
                await alarm.wait(timeout: Self.timeout(seconds: delay), on: host.core.group.next())
            }
        }
    }
}

/// A wake-up that a timer or a `signal()` ends, whichever comes first; a signal with nobody
/// waiting is kept for the next wait. Cancelling the waiting task ends the wait too.
final class Alarm: Sendable {
    private struct State {
        var waiter: CheckedContinuation<Void, Never>?
        var timer: Scheduled<Void>?
        var pending = false
    }
    private let state = NIOLockedValueBox(State())

    func wait(timeout: TimeAmount, on eventLoop: EventLoop) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let signalled = state.withLockedValue { state -> Bool in
                    // A signal that came first, or a cancellation whose handler found no waiter.
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if signalled {
                    continuation.resume()
                    return
                }
                let timer = eventLoop.scheduleTask(in: timeout) { [self] in wake() }
                let late = state.withLockedValue { state -> Bool in
                    guard state.waiter != nil else { return true }
                    state.timer = timer
                    return false
                }
                if late { timer.cancel() }
            }
        } onCancel: {
            wake()
        }
    }

    func signal() { wake(keepIfNobodyWaits: true) }

    private func wake(keepIfNobodyWaits: Bool = false) {
        let (waiter, timer) = state.withLockedValue { state in
            defer {
                state.waiter = nil
                state.timer = nil
            }
            if state.waiter == nil && keepIfNobodyWaits { state.pending = true }
            return (state.waiter, state.timer)
        }
        timer?.cancel()
        waiter?.resume()
    }
}
