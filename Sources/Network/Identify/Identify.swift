import Foundation
import Identity
import Multiformats
import NIOCore
import SwiftProtobuf

/// What a peer told us about itself with identify.
public struct IdentifyInfo: Sendable, Hashable {
    public var protocolVersion: String
    public var agentVersion: String
    public var listenAddresses: [Multiaddr]
    public var observedAddress: Multiaddr?
    public var protocols: [String]
}

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
            if let info = try? await read(stream), let peer = stream.connection.remotePeer {
                core.setPeerInfo(info, for: peer)
            }
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

    /// Identifies the peer of `connection` in the background.
    static func identify(connection: Connection, host core: HostCore) {
        core.spawn("identify on connection \(connection.id)") {
            do {
                let raw = try await connection.eventLoop.flatSubmit { connection.openStream() }.get()
                let stream = try await raw.negotiateOutbound(proposals: [protocolID])
                let info: IdentifyInfo
                do {
                    info = try await read(stream)
                } catch {
                    stream.reset()
                    throw error
                }
                stream.close()
                if let peer = connection.remotePeer { core.setPeerInfo(info, for: peer) }
            } catch {
                core.logger.debug("identify failed: \(error)", metadata: ["peer": "\(connection.remotePeer?.description ?? "?")"])
            }
        }
    }

    /// identify/push: sends our current identify message to every connected peer, each on its own
    /// stream, in the background (a peer that does not take it is only logged).
    static func pushToAll(core: HostCore) {
        for connection in core.liveConnections {
            core.spawn("identify push on connection \(connection.id)") {
                do {
                    let raw = try await connection.eventLoop.flatSubmit { connection.openStream() }.get()
                    let stream = try await raw.negotiateOutbound(proposals: [pushProtocolID])
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
        return IdentifyInfo(
            protocolVersion: merged.protocolVersion, agentVersion: merged.agentVersion,
            listenAddresses: merged.listenAddrs.compactMap { try? Multiaddr(bytes: Array($0)) },
            observedAddress: merged.hasObservedAddr ? try? Multiaddr(bytes: Array(merged.observedAddr)) : nil,
            protocols: merged.protocols)
    }
}
