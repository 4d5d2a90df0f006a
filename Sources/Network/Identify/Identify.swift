import Foundation
import Identity
import Multiformats
import NIOCore
import Session
import SwiftProtobuf

/// identify and identify/push (libp2p/specs `identify/README.md`).
///
/// The responder writes one `Identify` protobuf, varint-length-prefixed, and closes the stream.
/// Readers merge several delimited messages (go splits large ones) and ignore unknown fields.
/// Every new connection is identified in the background; the result is kept per peer.
public enum Identify {
    public static let protocolID = "/ipfs/id/1.0.0"
    public static let pushProtocolID = "/ipfs/id/push/1.0.0"
    public static let protocolVersion = "ipfs/0.1.0"
    /// Largest identify response read in total (py sends ~490 bytes; go caps at 8 KiB per message).
    public static let maximumResponseLength = 64 * 1024
    /// What the peer store keeps of one peer's identify (`IdentifyInfo`): its first 32 listen
    /// addresses of at most 256 bytes each (a `/dns` name of 253 characters with a port and a peer
    /// id fits), its first 128 protocol ids of at most 128 bytes each, versions of at most 256
    /// Unicode scalars. About 41 KiB per peer at worst, kept for connected peers only.
    public static let maximumListenAddresses = 32
    public static let maximumAddressLength = 256
    public static let maximumProtocols = 128
    public static let maximumProtocolLength = 128
    public static let maximumVersionLength = 256

    static func register(on host: Host) {
        let core = host.core
        host.handle(protocolID) { stream in
            do {
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: message(for: core, observed: stream.connection.remoteAddress)))
                try await stream.closeWrite()
            } catch {
                stream.reset()
            }
        }
        host.handle(pushProtocolID) { stream in
            // A push that does not end within the identify deadline is dropped (the stream reset).
            let info = try? await stream.raw.withDeadline(core.configuration.identifyStreamTimeout, "identify push") {
                try await read(stream)
            }
            if let info { core.setPeerInfo(info, from: stream.connection) }
        }
    }

    /// Our identify message.
    static func message(for core: HostCore, observed: Multiaddr?) -> [UInt8] {
        var message = Agentd_Identify_Identify()
        message.protocolVersion = protocolVersion
        message.agentVersion = core.configuration.agentVersion
        message.publicKey = Data(LibP2PPublicKey(core.identity.publicKey).protobuf)
        message.listenAddrs = core.advertisedAddresses.map { Data($0.bytes) }
        if let observed { message.observedAddr = Data(observed.bytes) }
        message.protocols = core.protocolIDs
        return (try? message.serializedBytes()) ?? []
    }

    /// Identifies the peer of `connection` in the background. Each exchange (stream, negotiation and
    /// response) gives up after `identifyStreamTimeout`; one that timed out or whose stream was
    /// reset is tried again, after 0.5 s, then 1 s, 2 s, 4 s, while the connection lives: a peer
    /// slow to answer once (a loaded machine, a busy link) is not cut off by the identify deadline
    /// for it. A peer that answers wrongly, or does not speak identify, is not asked again; the
    /// connection itself is closed if identify has not completed within `identifyTimeout`
    /// (`Connection`).
    static func identify(connection: Connection, host core: HostCore) {
        core.spawn("identify on connection \(connection.id)") {
            var pause = TimeAmount.milliseconds(500)
            while true {
                do {
                    let (stream, info) = try await exchange(on: connection, host: core)
                    // Stored before our side of the stream closes: a peer that sees our FIN knows it is.
                    if core.setPeerInfo(info, from: connection) { connection.identifyCompleted() }
                    stream.close()
                    return
                } catch {
                    let peer = connection.remotePeer?.description ?? "?"
                    guard isWorthRetrying(error), !connection.isClosing, !Task.isCancelled else {
                        core.logger.debug("identify failed: \(error)", metadata: ["peer": "\(peer)"])
                        return
                    }
                    core.logger.debug(
                        "identify failed: \(error); trying again in \(pause.nanoseconds / 1_000_000) ms",
                        metadata: ["peer": "\(peer)"])
                }
                do {
                    try await Task.sleep(nanoseconds: UInt64(pause.nanoseconds))
                } catch {
                    return  // the host is shutting down
                }
                pause = min(pause * 2, .seconds(4))
            }
        }
    }

    /// One identify exchange on a new stream of `connection` (at high priority: a bulk transfer on
    /// the same connection must not hold it up).
    private static func exchange(on connection: Connection, host core: HostCore) async throws -> (MuxedStream, IdentifyInfo) {
        let raw = try await connection.eventLoop.flatSubmit { connection.openStream(priority: .high) }.get()
        return try await raw.withDeadline(core.configuration.identifyStreamTimeout, "identify") {
            let stream = try await raw.negotiateOutbound(
                proposals: [protocolID], timeout: core.configuration.streamNegotiationTimeout)
            do {
                return (stream, try await read(stream))
            } catch {
                stream.reset()
                throw error
            }
        }
    }

    /// Whether a failed exchange may succeed when tried again: it ran out of time, or its stream
    /// was reset or refused (the peer's own deadline under load, a stream limit). Not a wrong
    /// answer, a refusal of the protocol, or a closed connection.
    static func isWorthRetrying(_ error: Error) -> Bool {
        if let error = error as? NetworkError { return error.kind == .timeout }
        if let error = error as? SessionError { return error.kind == .streamReset || error.kind == .timeout }
        return false
    }

    /// identify/push: sends our current identify message to every connected peer, each on its own
    /// stream, in the background (a peer that does not take it is only logged).
    static func pushToAll(core: HostCore) {
        for connection in core.liveConnections {
            core.spawn("identify push on connection \(connection.id)") {
                do {
                    let raw = try await connection.eventLoop.flatSubmit { connection.openStream() }.get()
                    let stream = try await raw.negotiateOutbound(
                        proposals: [pushProtocolID], timeout: core.configuration.streamNegotiationTimeout)
                    try await stream.writeLengthPrefixed(
                        ByteBuffer(bytes: message(for: core, observed: connection.remoteAddress)))
                    stream.close()
                } catch {
                    core.logger.debug("identify push failed: \(error)", metadata: ["peer": "\(connection.remotePeer?.description ?? "?")"])
                }
            }
        }
    }

    /// Reads identify messages until the stream ends and merges them.
    static func read(_ stream: MuxedStream) async throws -> IdentifyInfo {
        var merged = Agentd_Identify_Identify()
        var total = 0
        while let message = try await stream.readLengthPrefixed(maximumLength: maximumResponseLength) {
            total += message.readableBytes
            guard total <= maximumResponseLength else {
                throw NetworkError(.protocolViolation, "identify response is over \(maximumResponseLength) bytes")
            }
            do {
                try merged.merge(serializedBytes: Array(message.readableBytesView))
            } catch {
                throw NetworkError(.protocolViolation, "identify message is not a valid protobuf: \(error)")
            }
        }
        if merged.hasPublicKey {
            let key = try? LibP2PPublicKey(protobuf: Array(merged.publicKey))
            guard let key, PeerID(publicKey: key) == stream.remotePeer else {
                throw NetworkError(.protocolViolation, "identify public key does not match peer \(stream.remotePeer)")
            }
        }
        return IdentifyInfo(merged)
    }
}
