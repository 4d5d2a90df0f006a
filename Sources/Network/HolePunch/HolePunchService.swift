import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Session
import SwiftProtobuf

/// DCUtR (`/libp2p/dcutr`, libp2p/specs relay/DCUtR.md): upgrades a relayed connection to a direct
/// one by a coordinated TCP simultaneous open, or for QUIC addresses a UDP punch (A dials QUIC, B
/// sends random datagrams towards A's address: `HostCore.punchQUIC`). The peer that accepted the relayed connection (B)
/// starts once identify ran on it; the other (A) answers on its outbound relayed connection only.
/// Both send from their listen port, so that port-preserving (cone) NATs map the dials to the
/// addresses each side announced; symmetric NATs defeat this, and the relayed connection stays.
public final class HolePunchService: Sendable {
    public static let protocolID = "/libp2p/dcutr"
    /// Messages above this are refused (the spec's SHOULD).
    static let maximumMessageSize = 4096
    /// At most this many of the peer's addresses are dialled per attempt, and sent of ours.
    static let maximumAddresses = 8

    public struct Configuration: Sendable {
        /// Each hole-punch dial gives up after this long (a SYN into a NAT that drops it never
        /// gets an answer).
        public var dialTimeout: TimeAmount = .seconds(5)
        /// After a direct connection is up, the relayed one is closed this much later (streams on
        /// it get time to end; new streams already go to the direct one).
        public var relayedGracePeriod: TimeAmount = .seconds(10)
        /// After its dials failed, how long a side waits for a direct connection its listener
        /// accepted from the peer meanwhile to finish its handshake.
        public var handshakeSettle: TimeAmount = .seconds(3)
        /// How long either side waits for the other's next message.
        public var messageTimeout: TimeAmount = .seconds(30)

        public init() {}
    }

    let host: Host
    let configuration: Configuration
    private let logger: Logger
    private struct State {
        /// Peers with an exchange under way (one at a time per peer).
        var punching: Set<PeerID> = []
        /// Observed IPs of ours, most recent first, as reported over direct connections.
        var observedIPs: [IPAddress] = []
        /// When each relayed connection (by id) was registered.
        var relayedSince: [Int: NIODeadline] = [:]
    }
    private let state = NIOLockedValueBox(State())

    public init(host: Host, configuration: Configuration = Configuration()) {
        self.host = host
        self.configuration = configuration
        var logger = host.core.logger
        logger[metadataKey: "service"] = "dcutr"
        self.logger = logger
        host.handle(Self.protocolID) { [self] stream in await respond(on: stream) }
        let events = host.events(label: "hole punching")
        host.spawn("hole punching: host events") { [self] in
            for await event in events { handle(event) }
        }
    }

    private func handle(_ event: HostEvent) {
        switch event {
        case .connected(_, let id, _, _):
            if let connection = host.core.connection(id: id), connection.path.isRelayed {
                state.withLockedValue { $0.relayedSince[id] = .now() }
            }
        case .disconnected(_, let id, _):
            _ = state.withLockedValue { $0.relayedSince.removeValue(forKey: id) }
        case .observedAddress(let address, let reporter):
            // An observation over a relayed connection is the relay's view of the relay (py and
            // go ignore those too).
            guard host.core.directConnection(to: reporter) != nil, let ip = IPAddress(address) else { return }
            state.withLockedValue { state in
                state.observedIPs.removeAll { $0 == ip }
                state.observedIPs.insert(ip, at: 0)
                if state.observedIPs.count > 4 { state.observedIPs.removeLast() }
            }
        case .identified(let peer, let id, let info):
            guard info.protocols.contains(Self.protocolID), let connection = host.core.connection(id: id),
                connection.path.isRelayed, connection.direction == .inbound, host.core.directConnection(to: peer) == nil
            else { return }
            let start = state.withLockedValue { $0.punching.insert(peer).inserted }
            guard start else { return }
            host.spawn("hole punch to \(peer)") { [self] in
                defer { _ = state.withLockedValue { $0.punching.remove(peer) } }
                await initiate(to: peer, over: connection)
            }
        default:
            break
        }
    }

    /// The addresses we send in CONNECT: each observed IP with each TCP and QUIC listen port of its
    /// family (what a port-preserving NAT maps our listen-port dials to), then our advertised direct
    /// addresses; only those a peer may dial by our own rule, without /p2p, at most 8.
    var ownAddresses: [Multiaddr] {
        let rule = host.addressScopeRule
        let listen = host.listenAddresses
        var result: [Multiaddr] = []
        func add(_ address: Multiaddr) {
            guard result.count < Self.maximumAddresses, !result.contains(address),
                rule.permits(address, from: .thirdParty), CircuitTransport.parse(address) == nil
            else { return }
            result.append(address)
        }
        for ip in state.withLockedValue({ $0.observedIPs }) {
            for bound in listen where IPAddress(bound)?.family == ip.family {
                let components = bound.components
                if components.count == 2, case .tcp(let port) = components[1], port != 0 {
                    add(Multiaddr([ip.multiaddrComponent, .tcp(port)]))
                } else if components.count == 3, case .udp(let port) = components[1], port != 0, case .quicV1 = components[2] {
                    add(Multiaddr([ip.multiaddrComponent, .udp(port), .quicV1]))
                }
            }
        }
        for address in host.advertisedAddresses { add(address) }
        return result
    }

    /// The peer's addresses from its CONNECT that we dial: decodable, direct TCP, permitted by our
    /// scope rule for third-party addresses (a peer cannot make us dial anywhere else), at most 8.
    func dialable(_ encoded: [Data]) -> [Multiaddr] {
        let rule = host.addressScopeRule
        var result: [Multiaddr] = []
        for bytes in encoded {
            guard let address = try? Multiaddr(bytes: Array(bytes)) else { continue }
            var components = address.components
            if case .p2p? = components.last { components.removeLast() }
            let bare = Multiaddr(components)
            guard CircuitTransport.parse(bare) == nil, rule.permits(bare, from: .thirdParty), !result.contains(bare) else {
                continue
            }
            result.append(bare)
            if result.count == Self.maximumAddresses { break }
        }
        return result
    }

    private func message(_ type: DCUtRHolePunch.TypeEnum, addresses: [Multiaddr] = []) -> DCUtRHolePunch {
        var message = DCUtRHolePunch()
        message.type = type
        message.obsAddrs = addresses.map { Data($0.bytes) }
        return message
    }

    private func read(_ stream: MuxedStream) async throws -> DCUtRHolePunch {
        let message = try await stream.raw.withDeadline(configuration.messageTimeout, "DCUtR message") {
            try await stream.readMessage(DCUtRHolePunch.self, maximumSize: Self.maximumMessageSize)
        }
        guard let message else { throw NetworkError(.connectionClosed, "the peer closed the DCUtR stream") }
        return message
    }

    private func write(_ message: DCUtRHolePunch, on stream: MuxedStream) async throws {
        try await stream.writeMessage(message, maximumSize: Self.maximumMessageSize)
    }

    /// Dials every address at once from our listen port; whether a direct connection to `peer`
    /// exists afterwards (ours, or the peer's that our listener accepted meanwhile).
    private func punch(_ addresses: [Multiaddr], peer: PeerID, role: NoiseHandshakeState.Role) async -> Bool {
        // Subscribed before dialling: when the peer's SYN reached our listener first, our own dial
        // fails (the address pair is taken) while the connection our listener accepted is still in
        // its handshake; it counts once it is registered.
        let events = host.events(label: "hole punch to \(peer)", bufferSize: 64)
        await withTaskGroup(of: Void.self) { group in
            for address in addresses {
                group.addTask { [self] in
                    do {
                        _ = try await host.core.punch(address, peer: peer, role: role, timeout: configuration.dialTimeout)
                    } catch {
                        logger.debug("punch to \(address) failed: \(error)", metadata: ["peer": "\(peer)"])
                    }
                }
            }
        }
        if host.core.directConnection(to: peer) != nil { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { [self] in
                for await event in events {
                    if case .connected(peer, let id, _, _) = event, host.core.connection(id: id)?.path == .direct {
                        return true
                    }
                }
                return false
            }
            group.addTask { [self] in
                try? await Task.sleep(nanoseconds: UInt64(configuration.handshakeSettle.nanoseconds))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first || host.core.directConnection(to: peer) != nil
        }
    }

    // MARK: B, the initiator

    private func initiate(to peer: PeerID, over relayed: Connection) async {
        let since = state.withLockedValue { $0.relayedSince[relayed.id] } ?? .now()
        var exchange = HolePunchExchange.Initiator()
        var outcome: HolePunchOutcome?
        let stream: MuxedStream
        do {
            stream = try await host.core.newStream(on: relayed, protocols: [Self.protocolID])
        } catch {
            logger.debug("cannot open DCUtR: \(error)", metadata: ["peer": "\(peer)"])
            finish(peer, HolePunchOutcome(succeeded: false, attempts: 0, duration: .now() - since, reason: "\(error)"), relayed: relayed)
            return
        }
        var actions = exchange.start(now: .now())
        while outcome == nil {
            var next: [HolePunchExchange.Action] = []
            for action in actions {
                switch action {
                case .sendConnect:
                    do {
                        try await write(message(.connect, addresses: ownAddresses), on: stream)
                        let reply = try await read(stream)
                        guard reply.type == .connect else {
                            throw NetworkError(.protocolViolation, "expected CONNECT, got \(reply.type)")
                        }
                        next += exchange.receivedConnect(addresses: dialable(reply.obsAddrs), now: .now())
                    } catch {
                        next += exchange.streamFailed("\(error)")
                    }
                case .sendSync:
                    do {
                        try await write(message(.sync), on: stream)
                    } catch {
                        next += exchange.streamFailed("\(error)")
                    }
                case .dial(let addresses, let delay):
                    if delay > .zero { try? await Task.sleep(nanoseconds: UInt64(delay.nanoseconds)) }
                    let connected = await punch(addresses, peer: peer, role: .responder)
                    next += exchange.dialsEnded(connected: connected, now: .now())
                case .succeeded(let attempts):
                    outcome = HolePunchOutcome(succeeded: true, attempts: attempts, duration: .now() - since, reason: nil)
                case .failed(let attempts, let reason):
                    outcome = HolePunchOutcome(succeeded: false, attempts: attempts, duration: .now() - since, reason: reason)
                }
            }
            if Task.isCancelled && outcome == nil {
                outcome = HolePunchOutcome(succeeded: false, attempts: exchange.attempts, duration: .now() - since, reason: "cancelled")
            }
            actions = next
        }
        stream.close()
        finish(peer, outcome!, relayed: relayed)
    }

    private func finish(_ peer: PeerID, _ outcome: HolePunchOutcome, relayed: Connection) {
        if outcome.succeeded {
            logger.info(
                "hole punch succeeded", metadata: ["peer": "\(peer)", "attempts": "\(outcome.attempts)",
                "ms": "\(outcome.duration.nanoseconds / 1_000_000)"])
            // New streams go to the direct connection already; the relayed one ends after a grace.
            let grace = configuration.relayedGracePeriod
            host.spawn("closing the relayed connection to \(peer)") {
                try? await Task.sleep(nanoseconds: UInt64(grace.nanoseconds))
                relayed.close()
            }
        } else {
            logger.info(
                "hole punch failed: \(outcome.reason ?? "?")", metadata: ["peer": "\(peer)", "attempts": "\(outcome.attempts)"])
        }
        host.core.events.emit(.holePunch(peer, outcome))
    }

    // MARK: A, the responder

    private func respond(on stream: MuxedStream) async {
        let peer = stream.remotePeer
        // Only on our outbound relayed connection (go resets anything else; py would also open
        // DCUtR towards us on its own outbound connection, quirk 18: refused here, as go does).
        guard stream.connection.path.isRelayed, stream.connection.direction == .outbound else {
            stream.reset()
            return
        }
        let since = state.withLockedValue { $0.relayedSince[stream.connection.id] } ?? .now()
        var exchange = HolePunchExchange.Responder()
        var succeeded = false
        var expected: [Multiaddr] = []
        defer { host.core.endPunch(from: expected, peer: peer) }
        while !succeeded {
            let message: DCUtRHolePunch
            do {
                message = try await read(stream)
            } catch {
                break
            }
            switch message.type {
            case .connect:
                let addresses = dialable(message.obsAddrs)
                _ = exchange.receivedConnect(addresses: addresses)
                // From now on B's punch may reach our listener before our own dial leaves: such a
                // connection takes our role, the client's (B's listener does the same for ours).
                host.core.expectPunch(from: addresses, peer: peer, role: .initiator)
                expected += addresses
                do {
                    try await write(self.message(.connect, addresses: ownAddresses), on: stream)
                } catch {
                    break
                }
            case .sync:
                guard let actions = exchange.receivedSync() else {
                    stream.reset()
                    return
                }
                for case .dial(let addresses, _) in actions {
                    succeeded = await punch(addresses, peer: peer, role: .initiator)
                }
            }
        }
        if exchange.rounds > 0 {
            host.core.events.emit(.holePunch(peer, HolePunchOutcome(
                succeeded: succeeded || host.core.directConnection(to: peer) != nil, attempts: exchange.rounds,
                duration: .now() - since, reason: succeeded ? nil : "no direct connection after \(exchange.rounds) attempts")))
        }
        stream.close()
    }
}
