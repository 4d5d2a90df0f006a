import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// `Host.probe`: the DHT's dial-back (proof that a peer is reachable at an address it advertised).
@Suite("Host.probe: authenticate a peer at an address, keep no connection")
struct AddressProbeTests {
    @Test("a live peer is proven at its address; a wrong peer id, a closed port and a shutdown fail cleanly")
    func outcomes() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let prover = Host(identity: Ed25519.PrivateKey(), group: group)
        let target = Host(identity: Ed25519.PrivateKey(), group: group)
        let bound = try await target.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))

        try await prover.probe(bound.appending(.p2p(target.peerID.multihash)))
        // The probe stops before Noise message 3: no connection on either side.
        #expect(await prover.connections().isEmpty)
        #expect(await target.connections().isEmpty)

        let impostor = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        await #expect(throws: NetworkError.self) { try await prover.probe(bound.appending(.p2p(impostor.multihash))) }

        // A port nobody listens on: the connect fails after the channel initializer ran, and the
        // wait for authentication must end with it (a leaked promise traps in debug builds).
        let closed = try await Self.closedPort(group)
        await #expect(throws: NetworkError.self) {
            try await prover.probe(try Multiaddr("/ip4/127.0.0.1/tcp/\(closed)/p2p/\(target.peerID)"))
        }

        // A listener that accepts and never answers Noise: the probe waits for message 2 when the
        // prover shuts down; shutdown cancels it (closing its socket) and does not wait out the
        // handshake timeout; a probe after shutdown is refused.
        let silent = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let silentAddress = try Multiaddr("/ip4/127.0.0.1/tcp/\(silent.localAddress!.port!)/p2p/\(target.peerID)")
        let waiting = Task { try await prover.probe(silentAddress) }
        try await Task.sleep(for: .milliseconds(200))
        let clock = ContinuousClock()
        let started = clock.now
        await prover.shutdown()
        #expect(clock.now - started < .seconds(5), "shutdown waited out the probe's handshake timeout")
        await #expect(throws: (any Error).self) { try await waiting.value }
        await #expect(throws: NetworkError.self) { try await prover.probe(bound.appending(.p2p(target.peerID.multihash))) }

        await target.shutdown()
        try await silent.close()
        try await group.shutdownGracefully()
    }

    /// A port that was just free: bound, then closed.
    static func closedPort(_ group: EventLoopGroup) async throws -> Int {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }
}
