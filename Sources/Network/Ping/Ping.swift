import Identity
import NIOCore

/// ping (libp2p/specs `ping/ping.md`): the dialer sends 32 random bytes, the listener echoes them;
/// repeated on one stream.
public enum Ping {
    public static let protocolID = "/ipfs/ping/1.0.0"
    public static let payloadLength = 32

    static func register(on host: Host) {
        host.handle(protocolID) { stream in
            do {
                // Spec: the listener echoes every 32-byte payload until the stream closes.
                while true {
                    let payload = try await stream.readExactly(payloadLength)
                    try await stream.write(payload)
                }
            } catch {
                try? await stream.closeWrite()
            }
        }
    }

    /// Pings `peer` `count` times on one stream and returns the round-trip times. Cancelling the
    /// task resets the stream and throws `CancellationError`.
    /// - Throws: `NetworkError.protocolViolation` if an echo differs from what was sent.
    public static func ping(_ host: Host, peer: PeerID, count: Int = 1) async throws -> [Duration] {
        guard let connection = host.connection(to: peer) else {
            throw NetworkError(.connectionFailed, "not connected to \(peer)")
        }
        return try await ping(host, on: connection, count: count)
    }

    /// Pings the peer of `connection` over that connection (`agentctl ping` reports its path).
    public static func ping(_ host: Host, on connection: Connection, count: Int = 1) async throws -> [Duration] {
        guard let peer = connection.remotePeer else {
            throw NetworkError(.connectionFailed, "the connection has no authenticated peer")
        }
        let stream = try await host.newStream(on: connection, protocols: [protocolID])
        defer { stream.reset() }
        do {
            return try await withTaskCancellationHandler {
                try await ping(on: stream, peer: peer, count: count)
            } onCancel: {
                stream.reset()
            }
        } catch {
            try Task.checkCancellation()
            throw error
        }
    }

    private static func ping(on stream: MuxedStream, peer: PeerID, count: Int) async throws -> [Duration] {
        var rtts: [Duration] = []
        let clock = ContinuousClock()
        for _ in 0..<count {
            let payload = ByteBuffer(bytes: Sodium.randomBytes(payloadLength))
            let start = clock.now
            try await stream.write(payload)
            let echo = try await stream.readExactly(payloadLength)
            rtts.append(clock.now - start)
            guard echo == payload else {
                throw NetworkError(.protocolViolation, "ping echo from \(peer) differs from what was sent")
            }
        }
        try? await stream.closeWrite()
        return rtts
    }
}
