import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// Three hosts on loopback: R relays, B holds a reservation at R, A dials B through R.
struct RelayTrio {
    let group: MultiThreadedEventLoopGroup
    let relay: Host
    let relayService: RelayService
    let relayAddress: Multiaddr
    let a: Host
    let aClient: RelayClient
    let b: Host
    let bClient: RelayClient

    static func start(limits: RelayLimits = RelayLimits(), relayIdentity: Ed25519.PrivateKey = Ed25519.PrivateKey())
        async throws -> RelayTrio
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let relay = Host(identity: relayIdentity, group: group)
        let service = RelayService(host: relay, limits: limits)
        let bound = try await relay.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let a = Host(identity: Ed25519.PrivateKey(), group: group)
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

/// Sums what arrives on a stream and answers with the byte count and a checksum when it ends.
enum SinkProtocol {
    static let id = "/agentd-test/sink/1.0.0"

    static func register(on host: Host) {
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
