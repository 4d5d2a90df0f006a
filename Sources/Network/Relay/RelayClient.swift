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
        return max((expires - now) * 3 / 4, 1)
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
    }
    private let state = NIOLockedValueBox(State())

    static let protectionTag = "relay-client"

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
        host.spawn("relay client: connection events") { [self] in
            for await event in events {
                guard case .disconnected(let peer, _, let remaining) = event, remaining == 0 else { continue }
                lose(peer, reason: "disconnected from the relay")
            }
        }
    }

    /// The reservations held now.
    public var reservations: [RelayReservationInfo] {
        state.withLockedValue { Array($0.reservations.values) }.sorted { $0.relay.bytes.lexicographicallyPrecedes($1.relay.bytes) }
    }

    private func lose(_ relay: PeerID, reason: String) {
        let (lost, alarm) = state.withLockedValue { state in
            (state.reservations.removeValue(forKey: relay) != nil, state.kept[relay])
        }
        guard lost else { return }
        transport.setReservation(at: relay, held: false)
        host.core.setCircuitAddresses([], through: relay)
        _ = host.core.unprotect(relay, tag: Self.protectionTag)
        logger.info("reservation lost: \(reason)", metadata: ["relay": "\(relay)"])
        host.core.events.emit(.reservationLost(relay: relay, reason: reason))
        alarm?.signal()
    }

    /// Makes one reservation at the relay `address` (which ends in `/p2p/RELAY`) and starts using
    /// it: circuit addresses advertised, circuits from the relay accepted.
    @discardableResult
    public func reserve(at address: Multiaddr) async throws -> RelayReservationInfo {
        guard let hash = address.peerIDMultihash, let relay = try? PeerID(multihash: hash) else {
            throw NetworkError(.invalidAddress, "\(address) has no /p2p/<relay id>")
        }
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
        state.withLockedValue { $0.reservations[relay] = info }
        host.core.protect(relay, tag: Self.protectionTag)
        transport.setReservation(at: relay, held: true)
        host.core.setCircuitAddresses(info.addresses, through: relay)
        logger.info("reservation granted", metadata: ["relay": "\(relay)", "expires": "\(info.expires)"])
        host.core.events.emit(.reservation(relay: relay, addresses: info.addresses, expires: info.expires))
        return info
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
                do {
                    let info = try await reserve(at: address)
                    delay = schedule.granted(expires: info.expires, now: now())
                } catch {
                    if Task.isCancelled { break }
                    delay = schedule.failed()
                    logger.info(
                        "reservation failed: \(error); retrying in \(delay) s", metadata: ["relay": "\(relay)"])
                    let hadOne = state.withLockedValue { $0.reservations[relay] != nil }
                    if hadOne { lose(relay, reason: "renewal failed: \(error)") }
                }
                await alarm.wait(timeout: .seconds(Int64(delay)), on: host.core.group.next())
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
