import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// A reservation's end on the client (refused renewal, expiry, the relay's service stopping) and
/// the relay service following AutoNAT's verdict (`--relay-service auto`), over loopback. Each step
/// waits for the host event that ends it, never for time.
@Suite(
    "Relay reservations end and come back: a refused renewal, an expiry, the relay service following AutoNAT",
    .timeLimit(.minutes(1)))
struct RelayReservationLifecycleTests {
    typealias Host = Network.Host

    enum Answer: Sendable {
        /// OK with `expire` = the time of the answer + `seconds`.
        case grant(seconds: UInt64)
        /// OK with this `expire` (Unix seconds).
        case grantUntil(UInt64)
        /// RESERVATION_REFUSED.
        case refuse
    }

    /// A relay whose hop handler answers each RESERVE as `answers` says, in order; the last answer
    /// repeats.
    static func scriptedRelay(on host: Host, answers: [Answer]) {
        let remaining = NIOLockedValueBox(answers)
        host.handle(CircuitRelay.hopProtocolID) { stream in
            do {
                guard let request = try await stream.readRelayMessage(RelayHopMessage.self), request.type == .reserve
                else {
                    stream.reset()
                    return
                }
                let answer = remaining.withLockedValue { list in list.count > 1 ? list.removeFirst() : list[0] }
                var reply = RelayHopMessage()
                reply.type = .status
                switch answer {
                case .grant(let seconds):
                    reply.status = .ok
                    reply.reservation.expire = unixNow + seconds
                case .grantUntil(let expire):
                    reply.status = .ok
                    reply.reservation.expire = expire
                case .refuse:
                    reply.status = .reservationRefused
                }
                try await stream.writeRelayMessage(reply)
                try await stream.closeWrite()
            } catch {
                stream.reset()
            }
        }
    }

    static var unixNow: UInt64 { UInt64(Date().timeIntervalSince1970) }

    /// Reads `events` until a `reservationLost` from `relay`; returns its reason and whether the
    /// advertised addresses had included `circuit` (or `advertised` says they did before) and
    /// dropped it again before it.
    static func awaitLoss(
        _ events: inout AsyncStream<HostEvent>.Iterator, relay: PeerID, circuit: Multiaddr, advertised: Bool = false
    ) async -> (reason: String?, withdrawn: Bool) {
        var advertised = advertised
        var withdrawn = false
        while let event = await events.next() {
            switch event {
            case .advertisedAddressesChanged(let addresses):
                if addresses.contains(circuit) {
                    advertised = true
                    withdrawn = false
                } else {
                    withdrawn = advertised
                }
            case .reservationLost(relay, let reason):
                return (reason, withdrawn)
            default:
                break
            }
        }
        return (nil, withdrawn)
    }

    @Test(
        "a renewal the relay refuses while B stays connected withdraws B's circuit addresses and says why (reservationLost)"
    )
    func refusedRenewal() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let relay = Host(identity: Ed25519.PrivateKey(), group: group)
        Self.scriptedRelay(on: relay, answers: [.grant(seconds: 3600), .refuse])
        let relayAddress = try await relay.listen(on: Multiaddr("/ip4/127.0.0.1/tcp/0")).appending(
            .p2p(relay.peerID.multihash))
        let b = Host(identity: Ed25519.PrivateKey(), group: group)
        let client = RelayClient(host: b)
        var events = b.events(label: "test").makeAsyncIterator()

        let granted = try await client.reserve(at: relayAddress)
        let circuit = relayAddress.appending(.p2pCircuit)
        #expect(granted.addresses == [circuit])
        #expect(b.advertisedAddresses.contains(circuit))

        await #expect(throws: NetworkError.self) { try await client.reserve(at: relayAddress) }
        // Withdrawn by the time the refusal is reported, while the connection to the relay stays.
        #expect(!b.advertisedAddresses.contains(circuit))
        #expect(client.reservations.isEmpty)
        #expect(b.core.connection(to: relay.peerID) != nil)
        let (reason, withdrawn) = await Self.awaitLoss(&events, relay: relay.peerID, circuit: circuit)
        #expect(withdrawn)
        #expect(reason?.contains("RESERVATION_REFUSED") == true, "reason: \(reason ?? "none")")

        await b.shutdown()
        await relay.shutdown()
        try await group.shutdownGracefully()
    }

    @Test(
        "a reservation not renewed is withdrawn at its expiry (reservationLost, expired); an absurd expiry is held without a crash"
    )
    func expiry() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let relay = Host(identity: Ed25519.PrivateKey(), group: group)
        // 2 s of life, then UInt64.max (a hostile relay: timers and renewal arithmetic must not trap).
        Self.scriptedRelay(on: relay, answers: [.grant(seconds: 2), .grantUntil(UInt64.max)])
        let relayAddress = try await relay.listen(on: Multiaddr("/ip4/127.0.0.1/tcp/0")).appending(
            .p2p(relay.peerID.multihash))
        let b = Host(identity: Ed25519.PrivateKey(), group: group)
        let client = RelayClient(host: b)
        var events = b.events(label: "test").makeAsyncIterator()

        let circuit = relayAddress.appending(.p2pCircuit)
        _ = try await client.reserve(at: relayAddress)
        let (reason, withdrawn) = await Self.awaitLoss(&events, relay: relay.peerID, circuit: circuit)
        #expect(reason == "expired without renewal")
        #expect(withdrawn)
        #expect(!b.advertisedAddresses.contains(circuit))
        #expect(client.reservations.isEmpty)

        let forever = try await client.reserve(at: relayAddress)
        #expect(forever.expires == UInt64.max)
        var schedule = ReservationSchedule()
        #expect(schedule.granted(expires: UInt64.max, now: Self.unixNow) > 1 << 62)
        #expect(RelayClient.timeout(seconds: UInt64.max) == .seconds(86_400))
        #expect(b.advertisedAddresses.contains(circuit))

        await b.shutdown()
        await relay.shutdown()
        try await group.shutdownGracefully()
    }

    @Test(
        "--relay-service auto: served from a public verdict; at a private one hop stops, B loses its reservation at once, the open circuit keeps working; public again, B reserves again"
    )
    func serviceFollowsReachability() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let relay = Host(identity: Ed25519.PrivateKey(), group: group)
        let service = RelayService(host: relay, followsReachability: true)
        let relayAddress = try await relay.listen(on: Multiaddr("/ip4/127.0.0.1/tcp/0")).appending(
            .p2p(relay.peerID.multihash))
        let circuit = relayAddress.appending(.p2pCircuit)
        let a = Host(identity: Ed25519.PrivateKey(), group: group)
        _ = RelayClient(host: a)
        let b = Host(identity: Ed25519.PrivateKey(), group: group)
        let bClient = RelayClient(host: b)
        var bEvents = b.events(label: "test").makeAsyncIterator()
        func relayIdentified(servingHop: Bool) async -> Bool {
            let seen = await HostEventsTests.read(&bEvents) { event in
                guard case .identified(relay.peerID, _, let info) = event else { return false }
                return info.protocols.contains(CircuitRelay.hopProtocolID) == servingHop
            }
            return !seen.isEmpty
        }

        // Unknown verdict: not served.
        _ = try await b.connect(to: relayAddress)
        #expect(await relayIdentified(servingHop: false))
        #expect(!service.isServing)
        await #expect(throws: (any Error).self) { try await bClient.reserve(at: relayAddress) }

        // Public: hop served (B learns it by identify push); B keeps a reservation; A dials B.
        relay.core.events.emit(.reachabilityChanged(.public, confidence: 1))
        #expect(await relayIdentified(servingHop: true))
        #expect(service.isServing)
        try bClient.keep(relayAddress)
        let reserved = await HostEventsTests.read(&bEvents) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(relay.peerID, let addresses, _)? = reserved.last else {
            Issue.record("no reservation: \(reserved)")
            return
        }
        #expect(addresses == [circuit])
        let relayed = try await a.connect(to: circuit.appending(.p2p(b.peerID.multihash)))
        #expect(relayed.path == .relayed(relay: relay.peerID))
        #expect(try await Ping.ping(a, peer: b.peerID, count: 1).count == 1)
        #expect(service.usage.reservations == 1 && service.usage.circuits == 1)
        #expect(b.advertisedAddresses.contains(circuit))

        // Private: hop unregistered, reservations dropped; B withdraws its circuit addresses on the
        // relay's identify push, not at the reservation's expiry an hour later.
        relay.core.events.emit(.reachabilityChanged(.private, confidence: 1))
        let (reason, withdrawn) = await Self.awaitLoss(
            &bEvents, relay: relay.peerID, circuit: circuit, advertised: true)
        #expect(reason == "the relay stopped serving hop")
        #expect(withdrawn)
        #expect(!service.isServing)
        #expect(!b.advertisedAddresses.contains(circuit))
        #expect(service.usage.reservations == 0)
        // The open circuit runs to its end: still counted, still carrying pings.
        #expect(service.usage.circuits == 1)
        #expect(try await Ping.ping(a, peer: b.peerID, count: 2).count == 2)
        #expect(relayed.path == .relayed(relay: relay.peerID))

        // Public again: B's kept reservation is made again as soon as the push says hop is back.
        relay.core.events.emit(.reachabilityChanged(.public, confidence: 1))
        let again = await HostEventsTests.read(&bEvents) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(relay.peerID, let addressesAgain, _)? = again.last else {
            Issue.record("no new reservation: \(again)")
            return
        }
        #expect(addressesAgain == [circuit])
        #expect(service.isServing)
        #expect(service.usage.reservations == 1)
        #expect(b.advertisedAddresses.contains(circuit))

        await a.shutdown()
        await b.shutdown()
        await relay.shutdown()
        try await group.shutdownGracefully()
    }

    @Test(
        "automatic choice on a host: private, B reserves at one of two hop-serving peers; when that relay stops serving, the other replaces it"
    )
    func chooserReplacesLostRelay() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var relays: [(host: Host, service: RelayService, address: Multiaddr)] = []
        for _ in 0..<2 {
            let host = Host(identity: Ed25519.PrivateKey(), group: group)
            let service = RelayService(host: host)
            let address = try await host.listen(on: Multiaddr("/ip4/127.0.0.1/tcp/0"))
            relays.append((host, service, address.appending(.p2p(host.peerID.multihash))))
        }
        let b = Host(identity: Ed25519.PrivateKey(), group: group)
        let client = RelayClient(host: b)
        let chooser = RelayChooser(host: b, client: client, maximum: 1)
        var events = b.events(label: "test").makeAsyncIterator()
        for relay in relays { _ = try await b.connect(to: relay.address) }
        chooser.start { .unknown }
        // Both relays identified before the verdict, so the choice sees both candidates.
        var identified: Set<PeerID> = []
        while identified.count < 2, let event = await events.next() {
            if case .identified(let peer, _, let info) = event, info.protocols.contains(CircuitRelay.hopProtocolID) {
                identified.insert(peer)
            }
        }
        #expect(client.reservations.isEmpty)

        b.core.events.emit(.reachabilityChanged(.private, confidence: 1))
        let first = await HostEventsTests.read(&events) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(let chosen, _, _)? = first.last else {
            Issue.record("no reservation: \(first)")
            return
        }
        #expect(chooser.chose(chosen))
        #expect(client.reservations.map(\.relay) == [chosen])
        let (lost, other) = relays[0].host.peerID == chosen ? (relays[0], relays[1]) : (relays[1], relays[0])

        lost.service.stop()
        let replaced = await HostEventsTests.read(&events) { if case .reservation = $0 { true } else { false } }
        guard case .reservation(let replacement, _, _)? = replaced.last else {
            Issue.record("no replacement: \(replaced)")
            return
        }
        #expect(replaced.contains { if case .reservationLost(chosen, _) = $0 { true } else { false } })
        #expect(replacement == other.host.peerID)
        #expect(chooser.chose(replacement) && !chooser.chose(chosen))
        #expect(client.reservations.map(\.relay) == [replacement])
        #expect(!b.advertisedAddresses.contains(lost.address.appending(.p2pCircuit)))
        #expect(b.advertisedAddresses.contains(other.address.appending(.p2pCircuit)))

        await b.shutdown()
        for relay in relays { await relay.host.shutdown() }
        try await group.shutdownGracefully()
    }
}
