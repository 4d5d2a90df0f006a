import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import Network

extension DHT {
    /// Serves one inbound kad stream: up to `maximumRequestsPerStream` requests, each a varint-framed
    /// message answered in order. Malformed input, a refused PUT or an idle stream resets it.
    func serve(_ stream: MuxedStream) async {
        let peer = stream.remotePeer
        let ip = stream.connection.remoteAddress.flatMap(IPAddress.init(_:))
        let admission = state.withLockedValue { $0.inboundStreams.admit(stream, peer: peer, ip: ip, now: .now()) }
        guard case .admitted(let slot, let evicted) = admission else {
            logger.debug(
                "kad: inbound stream refused, every stream in its scope is busy", metadata: ["peer": "\(peer)"])
            stream.reset()
            return
        }
        if let evicted {
            logger.debug(
                "kad: longest-idle inbound stream reset to make room",
                metadata: ["peer": "\(peer)", "evicted": "\(evicted.remotePeer)"])
            evicted.reset()
        }
        defer { state.withLockedValue { _ = $0.inboundStreams.release(slot) } }

        noteInbound(peer, connection: stream.connection)
        var served = 0
        while served < configuration.maximumRequestsPerStream {
            let message: ByteBuffer?
            state.withLockedValue { $0.inboundStreams.markIdle(slot, now: .now()) }
            do {
                message = try await stream.withDeadline(
                    configuration.inboundIdleTimeout, "idle kad stream from \(peer)"
                ) {
                    try await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize)
                }
            } catch {
                logger.debug("kad: inbound stream ended", metadata: ["peer": "\(peer)", "reason": "\(error)"])
                stream.reset()
                return
            }
            state.withLockedValue { $0.inboundStreams.markBusy(slot) }
            guard let message else {
                try? await stream.closeWrite()
                return
            }
            let request: KadMessage
            do {
                request = try KadMessage(serialized: message.readableBytesView)
            } catch {
                logger.debug(
                    "kad: malformed request, stream reset", metadata: ["peer": "\(peer)", "reason": "\(error)"])
                stream.reset()
                return
            }
            switch handle(request, from: peer) {
            case .answer(let answer):
                do {
                    try await stream.writeLengthPrefixed(ByteBuffer(bytes: answer.serialized()))
                } catch {
                    stream.reset()
                    return
                }
            case .none:
                break
            case .refuse(let reason):
                logger.debug(
                    "kad: request refused, stream reset",
                    metadata: ["peer": "\(peer)", "type": "\(request.type)", "reason": "\(reason)"])
                stream.reset()
                return
            }
            served += 1
        }
        try? await stream.closeWrite()
    }

    /// Adds the peer of an inbound kad stream to the routing table when identify says it serves the
    /// DHT (it lists our kad protocol); removes it when identify says it does not.
    func noteInbound(_ peer: PeerID, connection: Connection) {
        guard let info = host.peerInfo(peer) else {
            // identify runs in parallel with the peer's first streams and has usually not finished
            // when its first kad request arrives: decide on its `identified` event. Identify that
            // completed between the check above and the entry is caught by the check after it;
            // whoever removes the entry decides, once.
            state.withLockedValue { $0.awaitingIdentify[peer] = connection }
            if host.peerInfo(peer) != nil,
                state.withLockedValue({ $0.awaitingIdentify.removeValue(forKey: peer) }) != nil
            {
                noteInbound(peer, connection: connection)
            }
            return
        }
        let isServer = info.protocols.contains(configuration.protocolID)
        feed(.inboundStream(KademliaPeer(id: peer), isServer ? .server : .client, contact(for: peer, via: connection)))
    }

    /// Decides on peers that were waiting for identify (`noteInbound`) as host events arrive, until
    /// the host shuts down. A connection closes at the latest at the identify deadline (30 s), so
    /// entries never pile up.
    func watchIdentify(_ events: AsyncStream<HostEvent>) async {
        for await event in events {
            switch event {
            case .identified(let peer, _, _):
                if let connection = state.withLockedValue({ $0.awaitingIdentify.removeValue(forKey: peer) }) {
                    noteInbound(peer, connection: connection)
                }
            case .disconnected(let peer, _, let remaining) where remaining == 0:
                state.withLockedValue { _ = $0.awaitingIdentify.removeValue(forKey: peer) }
            default:
                break
            }
        }
    }

    /// A peer's listen addresses made dialable: an unspecified IP (`0.0.0.0`, `::`) is replaced by
    /// the IP we see the peer's connection come from.
    static func reachableAddresses(_ listen: [Multiaddr], observed: Multiaddr?) -> [Multiaddr] {
        var result: [Multiaddr] = []
        for address in listen {
            guard address.components.count >= 2 else { continue }
            var components = address.components
            if let ip = IPAddress(address), AddressScope.of(ip) == .unspecified {
                guard let observedIP = observed.flatMap(IPAddress.init), observedIP.family == ip.family else {
                    continue
                }
                components[0] = observedIP.multiaddrComponent
            }
            let candidate = Multiaddr(components)
            if !dialable([candidate]).isEmpty, !result.contains(candidate) { result.append(candidate) }
        }
        return result
    }
}
