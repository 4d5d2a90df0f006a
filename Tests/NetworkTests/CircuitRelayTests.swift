import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// Three hosts on loopback: R relays, B holds a reservation at R, A dials B through R.
struct RelayTrio {
    typealias Host = Network.Host
    let group: MultiThreadedEventLoopGroup
    let relay: Host
    let relayService: RelayService
    let relayAddress: Multiaddr
    let a: Host
    let aClient: RelayClient
    let b: Host
    let bClient: RelayClient

    /// - Parameter dialerConfiguration: A's configuration.
    static func start(
        limits: RelayLimits = RelayLimits(), relayIdentity: Ed25519.PrivateKey = Ed25519.PrivateKey(),
        dialerConfiguration: Host.Configuration = .init()
    ) async throws -> RelayTrio {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let relay = Host(identity: relayIdentity, group: group)
        let service = RelayService(host: relay, limits: limits)
        let bound = try await relay.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let a = Host(identity: Ed25519.PrivateKey(), group: group, configuration: dialerConfiguration)
        let b = Host(identity: Ed25519.PrivateKey(), group: group)
        return RelayTrio(
            group: group, relay: relay, relayService: service, relayAddress: bound.appending(.p2p(relay.peerID.multihash)),
            a: a, aClient: RelayClient(host: a), b: b, bClient: RelayClient(host: b))
    }

    /// B's circuit address through R, with B's /p2p.
    var circuitToB: Multiaddr {
        relayAddress.appending(.p2pCircuit).appending(.p2p(b.peerID.multihash))
    }

    func shutdown() async throws {
        await a.shutdown()
        await b.shutdown()
        await relay.shutdown()
        try await group.shutdownGracefully()
    }
}

/// Waits until `condition` holds, checking every 10 ms for at most 10 s; whether it held. For state
/// that changes without an event to wait for (a relay's counters after its streams ended).
func eventually(_ condition: @Sendable () -> Bool) async -> Bool {
    for _ in 0..<1000 {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

/// Sums what arrives on a stream and answers with the byte count and a checksum when it ends.
enum SinkProtocol {
    static let id = "/agentd-test/sink/1.0.0"

    static func register(on host: Network.Host) {
        host.handle(id) { stream in
            var count: UInt64 = 0
            var sum: UInt64 = 0
            do {
                while let chunk = try await stream.read() {
                    count += UInt64(chunk.readableBytes)
                    for byte in chunk.readableBytesView { sum = sum &* 31 &+ UInt64(byte) }
                }
                var answer = ByteBuffer()
                answer.writeInteger(count)
                answer.writeInteger(sum)
                try await stream.write(answer)
                try await stream.closeWrite()
            } catch {
                stream.reset()
            }
        }
    }

    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        bytes.reduce(UInt64(0)) { $0 &* 31 &+ UInt64($1) }
    }
}

@Suite("Circuit relay v2 over loopback: reservations, relayed connections, limits, refusals", .timeLimit(.minutes(2)))
struct CircuitRelayTests {
    @Test("B reserves at R; A dials B's circuit address; ping and a 3 MiB stream run over the relayed connection; both sides see path relayed")
    func relayedConnection() async throws {
        let trio = try await RelayTrio.start()
        var bEvents = trio.b.events(label: "test").makeAsyncIterator()
        let reservation = try await trio.bClient.reserve(at: trio.relayAddress)
        #expect(reservation.relay == trio.relay.peerID)
        #expect(reservation.voucherVerified)
        #expect(reservation.addresses.first == trio.relayAddress.appending(.p2pCircuit))
        #expect(trio.b.advertisedAddresses.contains(trio.relayAddress.appending(.p2pCircuit)))
        var sawReservation = false
        while let event = await bEvents.next() {
            if case .reservation(let relay, let addresses, let expires) = event {
                #expect(relay == trio.relay.peerID && addresses == reservation.addresses && expires == reservation.expires)
                sawReservation = true
                break
            }
        }
        #expect(sawReservation)
        #expect(trio.relayService.usage.reservations == 1)

        SinkProtocol.register(on: trio.b)
        let connection = try await trio.a.connect(to: trio.circuitToB)
        #expect(connection.path == .relayed(relay: trio.relay.peerID))
        #expect(connection.remotePeer == trio.b.peerID)
        #expect(connection.remoteAddress == trio.relayAddress.appending(.p2pCircuit))
        let rtts = try await Ping.ping(trio.a, peer: trio.b.peerID, count: 3)
        #expect(rtts.count == 3)

        let stream = try await trio.a.newStream(to: trio.b.peerID, protocols: [SinkProtocol.id])
        #expect(stream.connection === connection)
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        for start in stride(from: 0, to: payload.count, by: 100_000) {
            try await stream.write(ByteBuffer(bytes: payload[start..<min(start + 100_000, payload.count)]))
        }
        try await stream.closeWrite()
        var answer = try await stream.readExactly(16)
        #expect(answer.readInteger(as: UInt64.self) == UInt64(payload.count))
        #expect(answer.readInteger(as: UInt64.self) == SinkProtocol.checksum(payload))

        let bSide = await trio.b.connections().filter { $0.remotePeer == trio.a.peerID }
        #expect(bSide.count == 1)
        #expect(bSide.first?.path == .relayed(relay: trio.relay.peerID))
        #expect(bSide.first?.direction == .inbound)
        #expect(trio.relayService.usage.circuits == 1)
        try await trio.shutdown()
    }
}

extension CircuitRelayTests {
    @Test("A CONNECT to a peer without a reservation fails with NO_RESERVATION; the relay counts no circuit")
    func noReservation() async throws {
        let trio = try await RelayTrio.start()
        _ = try await trio.b.connect(to: trio.relayAddress)
        await #expect(throws: NetworkError.self) { _ = try await trio.a.connect(to: trio.circuitToB) }
        do {
            _ = try await trio.a.connect(to: trio.circuitToB)
        } catch let error as NetworkError {
            #expect(error.message.contains("NO_RESERVATION"), "\(error)")
        }
        #expect(trio.relayService.usage.circuits == 0)
        #expect(trio.relayService.usage.circuitsRefused == 2)
        try await trio.shutdown()
    }

    @Test("a STOP from a peer where B holds no reservation is answered PERMISSION_DENIED and starts no connection")
    func stopWithoutReservation() async throws {
        let trio = try await RelayTrio.start()
        let boundB = try await trio.b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        // The relay R has no reservation of B and plays a rogue relay by hand.
        let connection = try await trio.relay.connect(to: boundB.appending(.p2p(trio.b.peerID.multihash)))
        let stream = try await trio.relay.newStream(on: connection, protocols: [CircuitRelay.stopProtocolID])
        var request = RelayStopMessage()
        request.type = .connect
        var peer = RelayPeer()
        peer.id = Data(trio.a.peerID.bytes)
        request.peer = peer
        try await stream.writeRelayMessage(request)
        let reply = try await stream.readRelayMessage(RelayStopMessage.self)
        #expect(reply?.type == .status && reply?.status == .permissionDenied)
        #expect(await trio.b.connections().allSatisfy { !$0.path.isRelayed })
        try await trio.shutdown()
    }

    @Test("hostile hop input: garbage, an oversized frame, a STATUS as request, CONNECT without peer: each gets its status, the relay stays up")
    func hostileHop() async throws {
        let trio = try await RelayTrio.start()
        let connection = try await trio.a.connect(to: trio.relayAddress)
        func exchange(_ bytes: [UInt8]) async throws -> RelayHopMessage? {
            let stream = try await trio.a.newStream(on: connection, protocols: [CircuitRelay.hopProtocolID])
            try await stream.write(ByteBuffer(bytes: bytes))
            return try? await stream.readRelayMessage(RelayHopMessage.self)
        }
        // Not a protobuf: field 1 wire type 7.
        #expect(try await exchange([3, 0x0f, 0xff, 0xff])?.status == .malformedMessage)
        // A frame over 4 KiB.
        var oversized = ByteBuffer()
        oversized.writeUVarint(5000)
        oversized.writeBytes([UInt8](repeating: 0, count: 5000))
        #expect(try await exchange(Array(oversized.readableBytesView))?.status == .malformedMessage)
        // STATUS as a request.
        var status = RelayHopMessage()
        status.type = .status
        let statusBytes: [UInt8] = try status.serializedBytes()
        #expect(try await exchange([UInt8(statusBytes.count)] + statusBytes)?.status == .unexpectedMessage)
        // CONNECT without a peer.
        var connect = RelayHopMessage()
        connect.type = .connect
        let connectBytes: [UInt8] = try connect.serializedBytes()
        #expect(try await exchange([UInt8(connectBytes.count)] + connectBytes)?.status == .malformedMessage)
        // CONNECT with a peer id that is not one.
        connect.peer.id = Data([1, 2, 3])
        let badPeer: [UInt8] = try connect.serializedBytes()
        #expect(try await exchange([UInt8(badPeer.count)] + badPeer)?.status == .malformedMessage)
        // Still serving: a reservation works.
        _ = try await trio.aClient.reserve(at: trio.relayAddress)
        try await trio.shutdown()
    }

    @Test("a circuit past its data limit is reset at the relay: the relayed connection ends, the relay counts no open circuit")
    func dataLimit() async throws {
        var limits = RelayLimits()
        limits.circuitBytes = 256 * 1024
        let trio = try await RelayTrio.start(limits: limits)
        var aEvents = trio.a.events(label: "test").makeAsyncIterator()
        _ = try await trio.bClient.reserve(at: trio.relayAddress)
        SinkProtocol.register(on: trio.b)
        let connection = try await trio.a.connect(to: trio.circuitToB)
        let stream = try await trio.a.newStream(on: connection, protocols: [SinkProtocol.id])
        await #expect(throws: (any Error).self) {
            for _ in 0..<64 { try await stream.write(ByteBuffer(repeating: 7, count: 16 * 1024)) }
            try await stream.closeWrite()
            _ = try await stream.readExactly(16)
        }
        // The relayed connection to B goes away (its socket pair is closed with the circuit).
        while let event = await aEvents.next() {
            if case .disconnected(trio.b.peerID, connection.id, _) = event { break }
        }
        #expect(connection.isClosing)
        // The relay's side ends on its own schedule: wait for it (bounded), then check.
        #expect(await eventually { trio.relayService.usage.circuits == 0 })
        #expect(trio.relayService.usage.circuitsRelayed == 1)
        try await trio.shutdown()
    }

    @Test("when the relay goes away B loses the reservation (event, addresses withdrawn); kept, it reserves again at the restarted relay")
    func relayRestart() async throws {
        let identity = Ed25519.PrivateKey()
        let trio = try await RelayTrio.start(relayIdentity: identity)
        var bEvents = trio.b.events(label: "test").makeAsyncIterator()
        try trio.bClient.keep(trio.relayAddress)
        let first = await HostEventsTests.read(&bEvents) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(_, let addresses, _)? = first.last else {
            Issue.record("no reservation: \(first)")
            return
        }
        #expect(trio.b.advertisedAddresses.contains(addresses[0]))
        await trio.relay.shutdown()
        let lost = await HostEventsTests.read(&bEvents) { if case .reservationLost = $0 { true } else { false } }
        guard case .reservationLost(trio.relay.peerID, _)? = lost.last else {
            Issue.record("no loss: \(lost)")
            return
        }
        #expect(!trio.b.advertisedAddresses.contains(addresses[0]))
        #expect(trio.bClient.reservations.isEmpty)
        // The same relay comes back on the same port.
        let again = Host(identity: identity, group: trio.group)
        _ = RelayService(host: again)
        _ = try await again.listen(on: Multiaddr(Array(trio.relayAddress.components.dropLast())))
        let renewed = await HostEventsTests.read(&bEvents) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(trio.relay.peerID, _, _)? = renewed.last else {
            Issue.record("no new reservation: \(renewed)")
            return
        }
        #expect(trio.b.advertisedAddresses.contains(addresses[0]))
        await again.shutdown()
        try await trio.shutdown()
    }
}

@Suite("Circuit relay v2 without sockets: the relay's table on a virtual clock, vouchers, addresses, schedule")
struct CircuitRelayStateTests {
    func opened(_ result: Result<Void, RelayReservationTable.Refusal>) -> Bool {
        if case .success = result { return true }
        return false
    }

    let peers = (0..<20).map { _ in PeerID(publicKey: Ed25519.PrivateKey().publicKey) }

    @Test("reservations: TTL, renewal keeps one per peer, total and per-IP limits, end with their connection, expiry")
    func reservations() throws {
        var limits = RelayLimits()
        limits.maximumReservations = 4
        limits.maximumReservationsPerIP = 2
        limits.reservationTTL = 100
        var table = RelayReservationTable(limits: limits)
        let ip1 = try IPAddress("198.51.100.1")
        let ip2 = try IPAddress("198.51.100.2")
        #expect(table.reserve(peer: peers[0], ip: ip1, connection: 1, now: 1000) == .success(1100))
        #expect(table.reserve(peer: peers[1], ip: ip1, connection: 2, now: 1000) == .success(1100))
        guard case .failure(.status(.reservationRefused, _)) = table.reserve(peer: peers[2], ip: ip1, connection: 3, now: 1000) else {
            Issue.record("a third reservation from one IP was granted")
            return
        }
        // A renewal is not a new reservation.
        #expect(table.reserve(peer: peers[0], ip: ip1, connection: 1, now: 1050) == .success(1150))
        #expect(table.reserve(peer: peers[2], ip: ip2, connection: 3, now: 1050) == .success(1150))
        #expect(table.reserve(peer: peers[3], ip: nil, connection: 4, now: 1050) == .success(1150))
        guard case .failure(.status(.reservationRefused, _)) = table.reserve(peer: peers[4], ip: nil, connection: 5, now: 1050) else {
            Issue.record("a fifth reservation was granted")
            return
        }
        // peers[1]'s expires at 1100: at 1100 a new peer fits.
        #expect(table.hasReservation(peers[1], now: 1099))
        #expect(!table.hasReservation(peers[1], now: 1100))
        #expect(table.reserve(peer: peers[4], ip: nil, connection: 5, now: 1100) == .success(1200))
        // A closed connection ends the reservation made over it, not one made over another.
        let otherConnection = table.connectionClosed(peer: peers[4], connection: 99)
        #expect(!otherConnection)
        let itsConnection = table.connectionClosed(peer: peers[4], connection: 5)
        #expect(itsConnection)
        #expect(!table.hasReservation(peers[4], now: 1100))
    }

    @Test("circuits: need the target's live reservation; per-peer and total limits; closing frees them")
    func circuits() {
        var limits = RelayLimits()
        limits.maximumCircuitsPerPeer = 2
        limits.maximumCircuits = 3
        var table = RelayReservationTable(limits: limits)
        guard case .failure(.status(.noReservation, _)) = table.openCircuit(from: peers[0], to: peers[1], now: 0) else {
            Issue.record("a circuit to a peer without reservation")
            return
        }
        _ = table.reserve(peer: peers[1], ip: nil, connection: 1, now: 0)
        _ = table.reserve(peer: peers[2], ip: nil, connection: 2, now: 0)
        guard case .failure(.status(.permissionDenied, _)) = table.openCircuit(from: peers[1], to: peers[1], now: 0) else {
            Issue.record("a circuit to oneself")
            return
        }
        #expect(opened(table.openCircuit(from: peers[0], to: peers[1], now: 0)))
        #expect(opened(table.openCircuit(from: peers[3], to: peers[1], now: 0)))
        guard case .failure(.status(.resourceLimitExceeded, _)) = table.openCircuit(from: peers[4], to: peers[1], now: 0) else {
            Issue.record("a third circuit to one peer")
            return
        }
        #expect(opened(table.openCircuit(from: peers[4], to: peers[2], now: 0)))
        guard case .failure(.status(.resourceLimitExceeded, _)) = table.openCircuit(from: peers[5], to: peers[2], now: 0) else {
            Issue.record("a fourth circuit in total")
            return
        }
        table.circuitClosed(from: peers[0], to: peers[1])
        #expect(table.circuitCount == 2)
        #expect(opened(table.openCircuit(from: peers[5], to: peers[2], now: 0)))
        // Past the reservation's expiry no new circuit.
        guard case .failure(.status(.noReservation, _)) = table.openCircuit(from: peers[6], to: peers[2], now: 3600) else {
            Issue.record("a circuit to an expired reservation")
            return
        }
    }

    @Test("vouchers: sealed ones open and name relay, peer and expiry; a flipped byte, another signer or another type is refused")
    func vouchers() throws {
        let relayKey = Ed25519.PrivateKey()
        let relay = PeerID(publicKey: relayKey.publicKey)
        let voucher = ReservationVoucher(relay: relay, peer: peers[0], expiration: 1_900_000_000)
        let sealed = try voucher.sealed(by: relayKey)
        #expect(try ReservationVoucher(envelope: sealed) == voucher)
        #expect(sealed.count < 300)
        for index in [sealed.count - 1, sealed.count - 70, sealed.count / 2] {
            var forged = sealed
            forged[index] ^= 0x01
            #expect(throws: NetworkError.self) { _ = try ReservationVoucher(envelope: forged) }
        }
        // Signed by another key than the relay's named in it.
        #expect(throws: NetworkError.self) { _ = try ReservationVoucher(envelope: try voucher.sealed(by: Ed25519.PrivateKey())) }
        #expect(throws: NetworkError.self) { _ = try ReservationVoucher(envelope: [0xff, 0xff, 0xff]) }
        #expect(throws: NetworkError.self) { _ = try ReservationVoucher(envelope: []) }
    }

    @Test("circuit addresses parse only as …/p2p/RELAY/p2p-circuit[/p2p/PEER]")
    func parse() throws {
        let relay = peers[0]
        let target = peers[1]
        let good = try Multiaddr("/ip4/198.51.100.1/tcp/4001/p2p/\(relay)/p2p-circuit/p2p/\(target)")
        #expect(CircuitTransport.parse(good) == .init(
            relayAddress: try Multiaddr("/ip4/198.51.100.1/tcp/4001/p2p/\(relay)"), relay: relay, target: target))
        #expect(CircuitTransport.parse(try Multiaddr("/p2p/\(relay)/p2p-circuit"))?.target == nil)
        for bad in [
            "/ip4/198.51.100.1/tcp/4001/p2p-circuit/p2p/\(target)",
            "/p2p-circuit/p2p/\(target)",
            "/ip4/198.51.100.1/tcp/4001/p2p/\(relay)",
            "/p2p/\(relay)/p2p-circuit/p2p/\(target)/p2p-circuit/p2p/\(relay)",
            "/p2p/\(relay)/p2p-circuit/ip4/1.2.3.4",
        ] {
            #expect(CircuitTransport.parse(try Multiaddr(bad)) == nil, "\(bad)")
        }
    }

    @Test("granted relay addresses: the dialled one first, foreign /p2p dropped, garbage skipped, at most 4")
    func grantedAddresses() throws {
        let relay = peers[0]
        let dialled = try Multiaddr("/ip4/198.51.100.1/tcp/4001/p2p/\(relay)")
        let granted: [Data] = [
            Data(try Multiaddr("/ip4/198.51.100.1/tcp/4001/p2p/\(relay)").bytes),
            Data(try Multiaddr("/ip6/2001:db8::1/tcp/4001").bytes),
            Data(try Multiaddr("/ip4/203.0.113.9/tcp/4001/p2p/\(peers[1])").bytes),
            Data([0xff, 0x01]),
            Data(try Multiaddr("/ip4/203.0.113.1/tcp/1").bytes),
            Data(try Multiaddr("/ip4/203.0.113.2/tcp/2").bytes),
            Data(try Multiaddr("/ip4/203.0.113.3/tcp/3").bytes),
        ]
        let addresses = RelayClient.circuitAddresses(dialled: dialled, granted: granted, relay: relay)
        #expect(addresses.map(\.description) == [
            "/ip4/198.51.100.1/tcp/4001/p2p/\(relay)/p2p-circuit",
            "/ip6/2001:db8::1/tcp/4001/p2p/\(relay)/p2p-circuit",
            "/ip4/203.0.113.1/tcp/1/p2p/\(relay)/p2p-circuit",
            "/ip4/203.0.113.2/tcp/2/p2p/\(relay)/p2p-circuit",
        ])
    }

    @Test("renewal after three quarters of the remaining life; retries 1, 2, 4 … 64 s, reset by a grant")
    func schedule() {
        var schedule = ReservationSchedule()
        #expect(schedule.granted(expires: 4600, now: 1000) == 2700)
        var delays: [UInt64] = []
        for _ in 0..<9 { delays.append(schedule.failed()) }
        #expect(delays == [1, 2, 4, 8, 16, 32, 64, 64, 64])
        #expect(schedule.granted(expires: 1001, now: 1000) == 1)
        #expect(schedule.failed() == 1)
        #expect(schedule.granted(expires: 900, now: 1000) == 1)
    }
}

@Suite("DCUtR hole punching: the exchange on a virtual clock; a relayed connection upgraded to a direct one over loopback", .timeLimit(.minutes(2)))
struct HolePunchTests {
    @Test("B: CONNECT, RTT measured, SYNC then dial after RTT/2 (capped at 2 s); up to 3 attempts; success ends it")
    func initiator() throws {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let address = try Multiaddr("/ip4/198.51.100.7/tcp/4001")
        var exchange = HolePunchExchange.Initiator()
        #expect(exchange.start(now: start) == [.sendConnect])
        #expect(exchange.receivedConnect(addresses: [address], now: start + .milliseconds(30)) == [
            .sendSync, .dial([address], after: .milliseconds(15)),
        ])
        #expect(exchange.dialsEnded(connected: false, now: start + .seconds(5)) == [.sendConnect])
        #expect(exchange.attempts == 2)
        // A slow relay: the wait is capped.
        #expect(exchange.receivedConnect(addresses: [address], now: start + .seconds(15)) == [
            .sendSync, .dial([address], after: .seconds(2)),
        ])
        #expect(exchange.dialsEnded(connected: false, now: start + .seconds(20)) == [.sendConnect])
        #expect(exchange.receivedConnect(addresses: [address], now: start + .seconds(20)) == [
            .sendSync, .dial([address], after: .zero),
        ])
        #expect(exchange.dialsEnded(connected: false, now: start + .seconds(25)) == [
            .failed(attempts: 3, reason: "no direct connection after 3 attempts"),
        ])
        #expect(exchange.dialsEnded(connected: true, now: start + .seconds(26)) == [])

        var lucky = HolePunchExchange.Initiator()
        _ = lucky.start(now: start)
        _ = lucky.receivedConnect(addresses: [address], now: start + .milliseconds(2))
        #expect(lucky.dialsEnded(connected: true, now: start + .milliseconds(50)) == [.succeeded(attempts: 1)])

        var empty = HolePunchExchange.Initiator()
        _ = empty.start(now: start)
        #expect(empty.receivedConnect(addresses: [], now: start) == [
            .failed(attempts: 1, reason: "the peer sent no address we may dial"),
        ])
        var outOfTurn = HolePunchExchange.Initiator()
        #expect(outOfTurn.receivedConnect(addresses: [address], now: start) == [
            .failed(attempts: 0, reason: "CONNECT arrived out of turn"),
        ])
    }

    @Test("A: answers each CONNECT, dials at once on SYNC; SYNC without CONNECT is a violation")
    func responder() throws {
        let address = try Multiaddr("/ip4/198.51.100.8/tcp/4001")
        var exchange = HolePunchExchange.Responder()
        #expect(exchange.receivedSync() == nil)
        #expect(exchange.receivedConnect(addresses: [address]) == [.sendConnect])
        #expect(exchange.receivedSync() == [.dial([address], after: .zero)])
        #expect(exchange.receivedSync() == nil)
        #expect(exchange.receivedConnect(addresses: []) == [.sendConnect])
        #expect(exchange.receivedSync() == [])
        #expect(exchange.rounds == 2)
    }

    @Test("A dials B through R; B starts DCUtR; a direct connection comes up, new streams use it, the relayed one is closed after the grace")
    func upgradeOverLoopback() async throws {
        let trio = try await RelayTrio.start()
        var configuration = HolePunchService.Configuration()
        configuration.relayedGracePeriod = .milliseconds(200)
        _ = HolePunchService(host: trio.a, configuration: configuration)
        _ = HolePunchService(host: trio.b, configuration: configuration)
        _ = try await trio.a.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        _ = try await trio.b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        // B learns its observed address from the relay (identify) before anyone dials it.
        var bEvents = trio.b.events(label: "test").makeAsyncIterator()
        var aEvents = trio.a.events(label: "test").makeAsyncIterator()
        _ = try await trio.bClient.reserve(at: trio.relayAddress)
        let relayed = try await trio.a.connect(to: trio.circuitToB)
        #expect(relayed.path.isRelayed)
        let bSeen = await HostEventsTests.read(&bEvents) { if case .holePunch = $0 { true } else { false } }
        guard case .holePunch(trio.a.peerID, let outcome)? = bSeen.last else {
            Issue.record("no hole punch on B: \(bSeen)")
            return
        }
        #expect(outcome.succeeded, "\(outcome)")
        #expect(outcome.attempts == 1)
        let aSeen = await HostEventsTests.read(&aEvents) { if case .holePunch = $0 { true } else { false } }
        guard case .holePunch(trio.b.peerID, let aOutcome)? = aSeen.last else {
            Issue.record("no hole punch on A: \(aSeen)")
            return
        }
        #expect(aOutcome.succeeded)
        let direct = try #require(trio.a.connection(to: trio.b.peerID))
        #expect(direct.path == .direct)
        #expect(direct !== relayed)
        // Roles: A (SYNC receiver) is the client.
        #expect(direct.direction == .outbound)
        let stream = try await trio.a.newStream(to: trio.b.peerID, protocols: [Ping.protocolID])
        #expect(stream.connection === direct)
        stream.reset()
        // The relayed connection is closed after the grace period.
        _ = await HostEventsTests.read(&aEvents) {
            if case .disconnected(trio.b.peerID, relayed.id, 1) = $0 { true } else { false }
        }
        #expect(relayed.isClosing)
        try await trio.shutdown()
    }
}

extension CircuitRelayTests {
    @Test("a reservation flood from one IP: past the per-IP limit RESERVATION_REFUSED, renewals still granted, a slot freed by a peer that leaves")
    func reservationFlood() async throws {
        var limits = RelayLimits()
        limits.maximumReservationsPerIP = 3
        let trio = try await RelayTrio.start(limits: limits)
        var flooders: [(Network.Host, RelayClient)] = []
        for _ in 0..<5 {
            let host = Network.Host(identity: Ed25519.PrivateKey(), group: trio.group)
            flooders.append((host, RelayClient(host: host)))
        }
        var granted = 0
        var refused: [NetworkError] = []
        for (_, client) in flooders {
            do {
                _ = try await client.reserve(at: trio.relayAddress)
                granted += 1
            } catch let error as NetworkError {
                refused.append(error)
            }
        }
        #expect(granted == 3)
        #expect(refused.count == 2 && refused.allSatisfy { $0.kind == .resourceLimit && $0.message.contains("RESERVATION_REFUSED") }, "\(refused)")
        // A renewal is not a new reservation.
        _ = try await flooders[0].1.reserve(at: trio.relayAddress)
        #expect(trio.relayService.usage.reservations == 3)
        #expect(trio.relayService.usage.reservationsRefused == 2)
        // A flooder that leaves frees its slot (its reservation ends with its connection).
        var relayEvents = trio.relay.events(label: "test").makeAsyncIterator()
        let leaving = flooders[1].0
        await leaving.shutdown()
        _ = await HostEventsTests.read(&relayEvents) {
            if case .disconnected(leaving.peerID, _, 0) = $0 { true } else { false }
        }
        #expect(await eventually { trio.relayService.usage.reservations == 2 })
        let other = Network.Host(identity: Ed25519.PrivateKey(), group: trio.group)
        _ = try await RelayClient(host: other).reserve(at: trio.relayAddress)
        #expect(trio.relayService.usage.reservations == 3)
        for (host, _) in flooders where host !== leaving { await host.shutdown() }
        await other.shutdown()
        try await trio.shutdown()
    }
}

extension HolePunchTests {
    @Test("hostile DCUtR input: garbage, an oversized frame, SYNC before CONNECT, a stream on a direct connection: reset or ignored, no punch, the relayed connection unharmed")
    func hostileDCUtR() async throws {
        let trio = try await RelayTrio.start()
        _ = HolePunchService(host: trio.a)
        let boundA = try await trio.a.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        _ = try await trio.bClient.reserve(at: trio.relayAddress)
        var bEvents = trio.b.events(label: "test").makeAsyncIterator()
        // A dials B through R (B runs no DCUtR: the test plays B by hand).
        let relayed = try await trio.a.connect(to: trio.circuitToB)
        _ = await HostEventsTests.read(&bEvents) { if case .connected(trio.a.peerID, _, _, _) = $0 { true } else { false } }
        let onB = try #require(trio.b.connection(to: trio.a.peerID))
        #expect(onB.path.isRelayed)
        var aEvents = trio.a.events(label: "test").makeAsyncIterator()
        /// What A answers to `bytes` on a new DCUtR stream: nil when it resets or ends the stream
        /// (a reset may also come while our write is still under way).
        func send(_ bytes: [UInt8]) async throws -> ByteBuffer? {
            let stream = try await trio.b.newStream(on: onB, protocols: [HolePunchService.protocolID])
            do {
                try await stream.write(ByteBuffer(bytes: bytes))
                return try await stream.read()
            } catch {
                return nil
            }
        }
        // Not a protobuf.
        #expect(try await send([3, 0x0f, 0xff, 0xff]) == nil)
        // Over 4 KiB.
        var oversized = ByteBuffer()
        oversized.writeUVarint(5000)
        oversized.writeBytes([UInt8](repeating: 0, count: 5000))
        #expect(try await send(Array(oversized.readableBytesView)) == nil)
        // SYNC with no CONNECT before it.
        var sync = DCUtRHolePunch()
        sync.type = .sync
        let syncBytes: [UInt8] = try sync.serializedBytes()
        #expect(try await send([UInt8(syncBytes.count)] + syncBytes) == nil)
        // A DCUtR stream on a direct connection is reset: A answers only on its outbound relayed one.
        let direct = try await trio.b.connect(to: boundA.appending(.p2p(trio.a.peerID.multihash)), reuse: .sameAddress)
        #expect(!direct.path.isRelayed)
        let onDirect = try await trio.b.newStream(on: direct, protocols: [HolePunchService.protocolID])
        var connect = DCUtRHolePunch()
        connect.type = .connect
        let connectBytes: [UInt8] = try connect.serializedBytes()
        try? await onDirect.write(ByteBuffer(bytes: [UInt8(connectBytes.count)] + connectBytes))
        let answer: ByteBuffer? = (try? await onDirect.read()) ?? nil
        #expect(answer == nil)
        // The relayed connection still carries streams.
        let rtts = try await Ping.ping(trio.b, peer: trio.a.peerID, count: 1)
        #expect(rtts.count == 1)
        #expect(!relayed.isClosing)
        // No hole punch was reported by A for any of it.
        direct.close()
        let seen = await HostEventsTests.read(&aEvents) { if case .disconnected(trio.b.peerID, direct.id, _) = $0 { true } else { false } }
        #expect(!seen.contains { if case .holePunch = $0 { true } else { false } }, "\(seen)")
        try await trio.shutdown()
    }
}
