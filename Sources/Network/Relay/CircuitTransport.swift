import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// The client side of circuit relay v2 as a transport: dials `…/p2p/RELAY/p2p-circuit/p2p/PEER` by
/// a CONNECT on the relay's hop protocol, and accepts circuits (STOP) from relays where this node
/// holds a reservation. Either way the circuit's stream carries the ordinary upgrade (multistream,
/// Noise, yamux), so the relayed connection is a `Connection` like any other, with path `.relayed`.
final class CircuitTransport: Transport {
    /// The host owns its transports, and this one lives as long as the host.
    unowned let core: HostCore
    /// Relays at which we hold a live reservation: only they may open circuits to us.
    private let reservedAt = NIOLockedValueBox<Set<PeerID>>([])

    var name: String { "circuit" }

    init(core: HostCore) {
        self.core = core
    }

    /// Where a circuit address leads: the relay's address (with its /p2p) and the target, if named.
    struct CircuitAddress: Equatable {
        var relayAddress: Multiaddr
        var relay: PeerID
        var target: PeerID?
    }

    /// Splits `…/p2p/RELAY/p2p-circuit[/p2p/PEER]`; nil for anything else (a circuit address must
    /// name its relay; circuits through circuits are not supported).
    static func parse(_ address: Multiaddr) -> CircuitAddress? {
        let components = address.components
        guard let index = components.firstIndex(of: .p2pCircuit), index > 0,
            case .p2p(let relayHash) = components[index - 1], let relay = try? PeerID(multihash: relayHash)
        else { return nil }
        let rest = components[(index + 1)...]
        var target: PeerID?
        switch rest.count {
        case 0: target = nil
        case 1:
            guard case .p2p(let hash) = rest.first!, let peer = try? PeerID(multihash: hash) else { return nil }
            target = peer
        default: return nil
        }
        return CircuitAddress(relayAddress: Multiaddr(Array(components[..<index])), relay: relay, target: target)
    }

    func canDial(_ address: Multiaddr) -> Bool { Self.parse(address) != nil }

    func dial(_ address: Multiaddr, peer: PeerID, on eventLoop: EventLoop, upgrade: @escaping TransportUpgrade)
        -> EventLoopFuture<Void>
    {
        guard let circuit = Self.parse(address) else {
            return eventLoop.makeFailedFuture(NetworkError(.invalidAddress, "\(address) is not a circuit address"))
        }
        guard circuit.relay != peer, circuit.relay != core.peerID else {
            return eventLoop.makeFailedFuture(
                NetworkError(.invalidAddress, "\(address): a circuit through the peer itself or through this node"))
        }
        let promise = eventLoop.makePromise(of: Void.self)
        let started = core.spawn("circuit to \(peer) via \(circuit.relay)") { [self] in
            do {
                let stream = try await connect(through: circuit, to: peer)
                let info = TransportChannelInfo(
                    path: .relayed(relay: circuit.relay), remoteAddress: circuit.relayAddress.appending(.p2pCircuit),
                    remoteIP: nil)
                try await CircuitBridge.run(stream: stream, on: eventLoop, info: info, upgrade: upgrade) {
                    promise.succeed(())
                }
            } catch {
                promise.fail(error)
            }
        }
        if !started { promise.fail(NetworkError(.shutdown, "the host is shut down")) }
        return promise.futureResult
    }

    /// CONNECT at the relay: the hop stream, once the relay answered OK, is the raw circuit.
    private func connect(through circuit: CircuitAddress, to peer: PeerID) async throws -> MuxedStream {
        let relayConnection = try await core.connect(to: circuit.relayAddress)
        guard !relayConnection.path.isRelayed else {
            throw NetworkError(.connectionFailed, "relay \(circuit.relay) is itself reached through a relay")
        }
        let stream = try await core.newStream(on: relayConnection, protocols: [CircuitRelay.hopProtocolID])
        do {
            var request = RelayHopMessage()
            request.type = .connect
            var target = RelayPeer()
            target.id = Data(peer.bytes)
            request.peer = target
            try await stream.writeRelayMessage(request)
            let reply = try await stream.raw.withDeadline(core.configuration.dialTimeout, "relay CONNECT answer") {
                try await stream.readRelayMessage(RelayHopMessage.self)
            }
            guard let reply else {
                throw NetworkError(.connectionFailed, "relay \(circuit.relay) closed the stream without answering CONNECT")
            }
            guard reply.type == .status else {
                throw NetworkError(.protocolViolation, "relay \(circuit.relay) answered CONNECT with \(reply.type), not STATUS")
            }
            guard reply.status == .ok else {
                throw CircuitRelay.refusal(reply.status, from: circuit.relay, doing: "circuit to \(peer)")
            }
            return stream
        } catch {
            stream.reset()
            throw error
        }
    }

    // MARK: Inbound circuits (stop)

    func setReservation(at relay: PeerID, held: Bool) {
        reservedAt.withLockedValue {
            if held { $0.insert(relay) } else { $0.remove(relay) }
        }
    }

    func holdsReservation(at relay: PeerID) -> Bool { reservedAt.withLockedValue { $0.contains(relay) } }

    /// A STOP stream from a relay: accepted only from a relay where we hold a reservation (py-libp2p
    /// accepts any, quirk 16: then anyone could make us run handshakes through any peer).
    func serveStop(_ stream: MuxedStream) async {
        let relay = stream.remotePeer
        func answer(_ status: RelayStatus) async {
            var reply = RelayStopMessage()
            reply.type = .status
            reply.status = status
            try? await stream.writeRelayMessage(reply)
        }
        let request: RelayStopMessage
        do {
            guard let read = try await stream.raw.withDeadline(.seconds(10), "STOP request", {
                try await stream.readRelayMessage(RelayStopMessage.self)
            }) else { return }
            request = read
        } catch {
            await answer(.malformedMessage)
            return
        }
        guard request.type == .connect else {
            await answer(.unexpectedMessage)
            return
        }
        guard request.hasPeer, let source = try? PeerID(bytes: Array(request.peer.id)), source != core.peerID else {
            await answer(.malformedMessage)
            return
        }
        guard !stream.connection.path.isRelayed, holdsReservation(at: relay) else {
            core.logger.info("refused a circuit from a relay where we hold no reservation", metadata: ["relay": "\(relay)"])
            await answer(.permissionDenied)
            return
        }
        var ok = RelayStopMessage()
        ok.type = .status
        ok.status = .ok
        do {
            try await stream.writeRelayMessage(ok)
        } catch {
            return
        }
        let relayAddress = (stream.connection.remoteAddress ?? Multiaddr([]))
            .appending(.p2p(relay.multihash)).appending(.p2pCircuit)
        let info = TransportChannelInfo(path: .relayed(relay: relay), remoteAddress: relayAddress, remoteIP: nil)
        let eventLoop = core.group.next()
        do {
            try await CircuitBridge.run(stream: stream, on: eventLoop, info: info, upgrade: { [core] channel, info in
                try core.initializeInbound(channel, transport: info)
            }, connected: {})
        } catch {
            core.logger.debug("inbound circuit failed: \(error)", metadata: ["relay": "\(relay)", "peer": "\(source)"])
        }
    }
}
