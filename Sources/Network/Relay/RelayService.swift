import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// The relay role of circuit relay v2 (`/libp2p/circuit/relay/0.2.0/hop`): grants reservations and
/// joins circuits between a peer that dials and a peer that holds a reservation, within
/// `RelayLimits`. Circuits are streams on the two peers' connections, so they count against the
/// resource manager under those two peers, never under the relay's own IP.
public final class RelayService: Sendable {
    public let limits: RelayLimits
    let host: Host
    private let table: NIOLockedValueBox<RelayReservationTable>
    /// Unix seconds now; tests pass a virtual clock.
    private let now: @Sendable () -> UInt64
    private let logger: Logger

    /// Counters for `agentctl nat` (relay service usage).
    public struct Usage: Sendable, Equatable {
        public var reservations: Int
        public var circuits: Int
        public var reservationsRefused: Int
        public var circuitsRefused: Int
        public var circuitsRelayed: Int
        public var bytesRelayed: UInt64
    }
    private let counters = NIOLockedValueBox(Usage(
        reservations: 0, circuits: 0, reservationsRefused: 0, circuitsRefused: 0, circuitsRelayed: 0, bytesRelayed: 0))

    /// Serves hop on `host`: from now on, or, with `followsReachability`, from the first `public`
    /// verdict of AutoNAT (`HostEvent.reachabilityChanged`) until a `private` one, and so on
    /// (agentd's `--relay-service auto`).
    public init(
        host: Host, limits: RelayLimits = RelayLimits(), followsReachability: Bool = false,
        now: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }
    ) {
        self.host = host
        self.limits = limits
        self.table = NIOLockedValueBox(RelayReservationTable(limits: limits))
        self.now = now
        var logger = host.core.logger
        logger[metadataKey: "service"] = "relay"
        self.logger = logger
        if !followsReachability { start() }
        // Subscribed here: no verdict emitted after init is missed.
        let events = host.events(label: "relay service")
        host.spawn("relay service: host events") { [self] in
            for await event in events {
                switch event {
                case .disconnected(let peer, let connection, _):
                    let ended = self.table.withLockedValue { $0.connectionClosed(peer: peer, connection: connection) }
                    if ended {
                        _ = host.core.unprotect(peer, tag: Self.protectionTag)
                        self.logger.debug("reservation ended with its connection", metadata: ["peer": "\(peer)"])
                    }
                case .reachabilityChanged(.public, _) where followsReachability && !isServing:
                    start()
                    self.logger.info("relay service on: AutoNAT says public")
                case .reachabilityChanged(.private, _) where followsReachability && isServing:
                    stop()
                    self.logger.info("relay service off: AutoNAT says private")
                default:
                    break
                }
            }
        }
    }

    static let protectionTag = "relay-reservation"

    /// Whether hop is served now (`stop()` / `start()`; agentd's `--relay-service auto` follows
    /// AutoNAT with them).
    public var isServing: Bool { host.protocols.contains(CircuitRelay.hopProtocolID) }

    /// Serves hop again after `stop()` (peers learn it by identify push).
    public func start() {
        host.handle(CircuitRelay.hopProtocolID) { [self] stream in await self.serve(stream) }
    }

    /// Stops serving hop: new reservations and circuits are refused at protocol negotiation, so
    /// the reservations granted before are ended too (no circuit can be opened through them; their
    /// holders see hop gone from our identify push and withdraw their circuit addresses); circuits
    /// open now run to their end.
    public func stop() {
        // Ended before the identify push goes out, so a holder that reacts to the push finds them
        // gone; and again after, for a RESERVE that was being answered meanwhile.
        endReservations()
        host.unhandle(CircuitRelay.hopProtocolID)
        endReservations()
    }

    private func endReservations() {
        let ended = table.withLockedValue { $0.removeAllReservations() }
        for peer in ended { _ = host.core.unprotect(peer, tag: Self.protectionTag) }
    }

    /// Current usage.
    public var usage: Usage {
        var usage = counters.withLockedValue { $0 }
        let (reservations, circuits) = table.withLockedValue { table in
            table.expire(now: now())
            return (table.reservations.count, table.circuitCount)
        }
        usage.reservations = reservations
        usage.circuits = circuits
        return usage
    }

    private func serve(_ stream: MuxedStream) async {
        let message: RelayHopMessage
        do {
            guard let read = try await stream.raw.withDeadline(.seconds(10), "hop request", {
                try await stream.readRelayMessage(RelayHopMessage.self)
            }) else { return }
            message = read
        } catch {
            logger.debug("bad hop request: \(error)", metadata: ["peer": "\(stream.remotePeer)"])
            await answer(stream, .malformedMessage)
            return
        }
        // spec: implementations should not accept reservations or connections over relayed
        // connections (a relay chain would multiply every limit).
        if stream.connection.path.isRelayed {
            await answer(stream, .permissionDenied)
            return
        }
        switch message.type {
        case .reserve:
            await reserve(stream)
        case .connect:
            await connect(stream, message)
        default:
            await answer(stream, .unexpectedMessage)
        }
    }

    private func answer(_ stream: MuxedStream, _ status: RelayStatus) async {
        var reply = RelayHopMessage()
        reply.type = .status
        reply.status = status
        try? await stream.writeRelayMessage(reply)
        try? await stream.closeWrite()
    }

    private func limitMessage() -> RelayLimit {
        var limit = RelayLimit()
        limit.duration = limits.circuitDuration
        limit.data = limits.circuitBytes
        return limit
    }

    private func reserve(_ stream: MuxedStream) async {
        let peer = stream.remotePeer
        let connection = stream.connection
        let ip = connection.remoteAddress.flatMap(IPAddress.init)
        let now = now()
        let outcome = table.withLockedValue { $0.reserve(peer: peer, ip: ip, connection: connection.id, now: now) }
        let expire: UInt64
        switch outcome {
        case .success(let granted):
            expire = granted
        case .failure(.status(let status, let why)):
            counters.withLockedValue { $0.reservationsRefused += 1 }
            logger.info("reservation refused: \(why)", metadata: ["peer": "\(peer)"])
            await answer(stream, status)
            return
        }
        // Kept for the reservation's life (spec: "tag it to prevent accidental termination").
        host.core.protect(peer, tag: Self.protectionTag)
        var reservation = RelayReservation()
        reservation.expire = expire
        // Our own public addresses with /p2p/<relay>, at most 8 (the message stays below 4 KiB).
        reservation.addrs = host.advertisedAddresses
            .filter { AddressScope.of($0) != .loopback || connection.remoteAddress.map { AddressScope.of($0) == .loopback } == true }
            .prefix(8)
            .map { Data($0.appending(.p2p(host.peerID.multihash)).bytes) }
        do {
            reservation.voucher = Data(
                try ReservationVoucher(relay: host.peerID, peer: peer, expiration: expire).sealed(by: host.identity))
        } catch {
            logger.warning("cannot seal a reservation voucher: \(error)")
        }
        var reply = RelayHopMessage()
        reply.type = .status
        reply.status = .ok
        reply.reservation = reservation
        reply.limit = limitMessage()
        do {
            try await stream.writeRelayMessage(reply)
            try await stream.closeWrite()
            logger.info("reservation granted", metadata: ["peer": "\(peer)", "expire": "\(expire)"])
        } catch {
            logger.debug("reservation reply failed: \(error)", metadata: ["peer": "\(peer)"])
        }
    }

    private func connect(_ stream: MuxedStream, _ message: RelayHopMessage) async {
        let source = stream.remotePeer
        guard message.hasPeer, let target = try? PeerID(bytes: Array(message.peer.id)) else {
            await answer(stream, .malformedMessage)
            return
        }
        let now = now()
        let admitted = table.withLockedValue { $0.openCircuit(from: source, to: target, now: now) }
        if case .failure(.status(let status, let why)) = admitted {
            counters.withLockedValue { $0.circuitsRefused += 1 }
            logger.debug("circuit refused: \(why)", metadata: ["peer": "\(source)", "target": "\(target)"])
            await answer(stream, status)
            return
        }
        defer { table.withLockedValue { $0.circuitClosed(from: source, to: target) } }
        // The STOP stream to the target, over its direct connection.
        guard let targetConnection = host.core.connection(to: target), !targetConnection.path.isRelayed else {
            await answer(stream, .noReservation)
            return
        }
        let stop: MuxedStream
        do {
            stop = try await host.core.newStream(on: targetConnection, protocols: [CircuitRelay.stopProtocolID])
        } catch {
            logger.debug("cannot open STOP to the target: \(error)", metadata: ["target": "\(target)"])
            await answer(stream, .connectionFailed)
            return
        }
        do {
            var request = RelayStopMessage()
            request.type = .connect
            var peer = RelayPeer()
            peer.id = Data(source.bytes)
            request.peer = peer
            request.limit = limitMessage()
            try await stop.writeRelayMessage(request)
            let reply = try await stop.raw.withDeadline(.seconds(10), "STOP answer") {
                try await stop.readRelayMessage(RelayStopMessage.self)
            }
            guard let reply, reply.type == .status, reply.status == .ok else {
                logger.debug(
                    "target refused the circuit: \(reply.map { $0.status.text } ?? "no answer")", metadata: ["target": "\(target)"])
                stop.reset()
                await answer(stream, .connectionFailed)
                return
            }
        } catch {
            stop.reset()
            await answer(stream, .connectionFailed)
            return
        }
        var ok = RelayHopMessage()
        ok.type = .status
        ok.status = .ok
        ok.limit = limitMessage()
        do {
            try await stream.writeRelayMessage(ok)
        } catch {
            stop.reset()
            stream.reset()
            return
        }
        counters.withLockedValue { $0.circuitsRelayed += 1 }
        logger.debug("circuit open", metadata: ["peer": "\(source)", "target": "\(target)"])
        let bytes = await Self.splice(
            stream, stop, maximumBytes: limits.circuitBytes, duration: .seconds(Int64(limits.circuitDuration)))
        counters.withLockedValue { $0.bytesRelayed += bytes }
    }

    /// Copies both ways between `a` and `b` until both directions ended; past `maximumBytes` in
    /// one direction or after `duration`, resets both (spec: "the relay should reset the stream
    /// to the source and the stream to the destination"). Returns the bytes copied.
    static func splice(_ a: MuxedStream, _ b: MuxedStream, maximumBytes: UInt64, duration: TimeAmount) async -> UInt64 {
        let total = NIOLockedValueBox<UInt64>(0)
        @Sendable func copy(_ from: MuxedStream, _ to: MuxedStream) async throws {
            var moved: UInt64 = 0
            while let chunk = try await from.read() {
                moved += UInt64(chunk.readableBytes)
                total.withLockedValue { $0 += UInt64(chunk.readableBytes) }
                if moved > maximumBytes { throw NetworkError(.resourceLimit, "circuit data limit") }
                try await to.write(chunk)
            }
            try await to.closeWrite()
        }
        enum End: Sendable {
            case copied
            case failed
            case timeUp
            case cancelled
        }
        await withTaskGroup(of: End.self) { group in
            group.addTask {
                do { try await copy(a, b) } catch { return .failed }
                return .copied
            }
            group.addTask {
                do { try await copy(b, a) } catch { return .failed }
                return .copied
            }
            group.addTask {
                do { try await Task.sleep(nanoseconds: UInt64(duration.nanoseconds)) } catch { return .cancelled }
                return .timeUp
            }
            var directionsEnded = 0
            while let end = await group.next() {
                switch end {
                case .copied:
                    directionsEnded += 1
                case .failed:
                    directionsEnded += 1
                    a.reset()
                    b.reset()
                case .timeUp:
                    a.reset()
                    b.reset()
                case .cancelled:
                    break
                }
                if directionsEnded == 2 { group.cancelAll() }
            }
        }
        a.close()
        b.close()
        return total.withLockedValue { $0 }
    }
}
