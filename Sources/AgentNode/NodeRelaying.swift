import Application
import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network
import Resolution

/// Circuit relay v2 and DCUtR in the node (spec/network.md, "agentd and relays"): the circuit
/// transport, STOP and DCUtR on every node; reservations at `--relay` relays (else at relays chosen
/// among connected peers while AutoNAT says private); the relay service as `--relay-service` says;
/// the relay and hole-punch event lines; the node's records republished when its advertised
/// addresses change (a reservation made, lost, made again).
final class NodeRelaying: Sendable {
    let client: RelayClient
    let holePunch: HolePunchService
    /// nil with `--relay-service off`.
    let service: RelayService?
    let mode: RelayServiceMode
    /// Automatic relay choice; nil with `--relay`.
    let chooser: RelayChooser?
    private let host: Network.Host
    private let logger: Logger
    /// Subscribed when the node is made, read from the ready line on: the reservations made
    /// before it are announced right after it, in order.
    private let events: AsyncStream<HostEvent>
    private let addressChanges: AsyncStream<HostEvent>

    init(host: Network.Host, configuration: NodeConfiguration, logger: Logger) {
        self.host = host
        self.logger = logger
        self.mode = configuration.relayService
        events = host.events(label: "node relay events")
        addressChanges = host.events(label: "node record addresses")
        client = RelayClient(host: host)
        holePunch = HolePunchService(host: host, configuration: configuration.holePunch)
        switch configuration.relayService {
        case .off:
            service = nil
        case .on:
            service = RelayService(host: host, limits: configuration.relayLimits)
        case .auto:
            // Not served until AutoNAT says public.
            let service = RelayService(host: host, limits: configuration.relayLimits)
            service.stop()
            self.service = service
        }
        chooser =
            configuration.relayAddresses.isEmpty && configuration.automaticRelays > 0
            ? RelayChooser(host: host, client: client, maximum: configuration.automaticRelays, logger: logger) : nil
    }

    /// Keeps a reservation at each `--relay` address (reserved in the background, renewed, retried).
    func keep(_ relays: [Multiaddr]) {
        for relay in relays {
            do {
                try client.keep(relay)
            } catch {
                logger.error("cannot use relay \(relay): \(error)")
            }
        }
    }

    /// From the ready line on: event lines for reservations and hole punches, the relay service
    /// following AutoNAT (`--relay-service auto`), automatic relay choice, and own records
    /// republished when the advertised addresses change. Host tasks: they end with the host.
    func follow(dht: DHT, autonat: AutoNATService, nodeEvents: NodeEvents) {
        let events = events
        host.spawn("node relay events") { [self] in
            follow(autonat.status.tracker.reachability)
            for await event in events {
                switch event {
                case .reservation(let relay, let addresses, let expires):
                    nodeEvents.publish(.reservation(relay: relay, addresses: addresses, expires: expires))
                case .reservationLost(let relay, let reason):
                    nodeEvents.publish(.reservationLost(relay: relay, reason: reason))
                case .holePunch(let peer, let outcome):
                    nodeEvents.publish(.holePunch(peer: peer, outcome))
                case .reachabilityChanged(let reachability, _):
                    follow(reachability)
                default:
                    break
                }
            }
        }
        let addressChanges = addressChanges
        host.spawn("node record addresses") { [logger] in
            for await event in addressChanges {
                guard case .advertisedAddressesChanged(let addresses) = event else { continue }
                // Records that follow the host's addresses and no longer match are republished
                // (the others are left alone: republishOwnRecords compares).
                let count = await dht.republishOwnRecords()
                if count > 0 {
                    logger.info("republished own records: advertised addresses changed", metadata: ["addrs": "\(addresses.count)"])
                }
            }
        }
        chooser?.start { autonat.status.tracker.reachability }
    }

    private func follow(_ reachability: Reachability) {
        guard mode == .auto, let service else { return }
        switch reachability {
        case .public:
            guard !service.isServing else { return }
            service.start()
            logger.info("relay service on: AutoNAT says public")
        case .private:
            guard service.isServing else { return }
            service.stop()
            logger.info("relay service off: AutoNAT says private")
        case .unknown:
            break
        }
    }

    /// `relay_reservations` and `relay_service` of the `nat` result (spec/control-api.md §8.7).
    func natFields() -> [String: JSONValue] {
        let reservations: [JSONValue] = client.reservations.map { info in
            var object: [String: JSONValue] = [
                "relay": .string(info.relay.description),
                "addrs": .array(info.addresses.map { .string($0.description) }),
                "expires": .number(info.expires),
                "voucher_verified": .bool(info.voucherVerified),
                "chosen": .string(chooser?.chose(info.relay) == true ? "auto" : "configured"),
            ]
            if let duration = info.limitDuration { object["limit_duration_s"] = .number(UInt64(duration)) }
            if let bytes = info.limitBytes { object["limit_bytes"] = .number(bytes) }
            return .object(object)
        }
        var serviceObject: [String: JSONValue] = [
            "mode": .string(mode.rawValue), "serving": .bool(service?.isServing ?? false),
        ]
        if let service {
            let usage = service.usage
            serviceObject["reservations"] = .number(usage.reservations)
            serviceObject["circuits"] = .number(usage.circuits)
            serviceObject["reservations_refused"] = .number(usage.reservationsRefused)
            serviceObject["circuits_refused"] = .number(usage.circuitsRefused)
            serviceObject["circuits_relayed"] = .number(usage.circuitsRelayed)
            serviceObject["bytes_relayed"] = .number(usage.bytesRelayed)
        }
        return ["relay_reservations": .array(reservations), "relay_service": .object(serviceObject)]
    }
}

extension NodeEvent {
    /// `{"event":"reservation","relay":PEER_ID,"addrs":[…],"expires":UNIX}`.
    static func reservation(relay: PeerID, addresses: [Multiaddr], expires: UInt64) -> NodeEvent {
        NodeEvent(
            "reservation",
            [
                "relay": .string(relay.description), "addrs": .array(addresses.map { .string($0.description) }),
                "expires": .number(expires),
            ])
    }

    /// `{"event":"reservation_lost","relay":PEER_ID,"reason":"…"}`.
    static func reservationLost(relay: PeerID, reason: String) -> NodeEvent {
        NodeEvent("reservation_lost", ["relay": .string(relay.description), "reason": .string(reason)])
    }

    /// `{"event":"hole_punch","peer":PEER_ID,"result":"direct|failed","attempts":N,"ms":…}`, with
    /// `"reason"` when it failed.
    static func holePunch(peer: PeerID, _ outcome: HolePunchOutcome) -> NodeEvent {
        var fields: [String: JSONValue] = [
            "peer": .string(peer.description), "result": .string(outcome.succeeded ? "direct" : "failed"),
            "attempts": .number(outcome.attempts), "ms": .number(outcome.duration.nanoseconds / 1_000_000),
        ]
        if let reason = outcome.reason, !outcome.succeeded { fields["reason"] = .string(reason) }
        return NodeEvent("hole_punch", fields)
    }
}

/// Automatic relay choice (no `--relay`): while AutoNAT says private, hold reservations at up to
/// `maximum` relays chosen among connected peers whose identify lists hop, lowest measured RTT
/// first; renewed at three quarters of their life; a lost one is replaced by the next best.
final class RelayChooser: Sendable {
    private struct Chosen: Sendable {
        var address: Multiaddr
        var renewAt: UInt64
    }
    private struct State: Sendable {
        var reachability = Reachability.unknown
        var chosen: [PeerID: Chosen] = [:]
        /// Relays whose reservation failed, with when (Unix seconds): skipped for `retryAfter`.
        var failed: [PeerID: UInt64] = [:]
        var running = false
        var again = false
    }
    private let host: Network.Host
    private let client: RelayClient
    let maximum: Int
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    static let retryAfter: UInt64 = 60
    static let tick: Duration = .seconds(5)

    init(host: Network.Host, client: RelayClient, maximum: Int, logger: Logger) {
        self.host = host
        self.client = client
        self.maximum = maximum
        self.logger = logger
    }

    /// Whether `relay` was chosen automatically.
    func chose(_ relay: PeerID) -> Bool { state.withLockedValue { $0.chosen[relay] != nil } }

    /// The candidates, best first: peers connected directly whose identify lists hop, by the
    /// connection's smoothed RTT (unmeasured last), without `excluded`. A pure function.
    static func rank(
        _ connections: [ConnectionInfo], offersHop: (PeerID) -> Bool, excluded: Set<PeerID>
    ) -> [PeerID] {
        var best: [PeerID: TimeAmount?] = [:]
        for info in connections where !info.path.isRelayed && !excluded.contains(info.remotePeer) && offersHop(info.remotePeer) {
            let latency = info.latency
            if let existing = best[info.remotePeer], let old = existing, latency.map({ $0 >= old }) ?? true { continue }
            best[info.remotePeer] = latency
        }
        return best.sorted { a, b in
            switch (a.value, b.value) {
            case (let x?, let y?): return x != y ? x < y : a.key.bytes.lexicographicallyPrecedes(b.key.bytes)
            case (.some, .none): return true
            case (.none, .some): return false
            case (.none, .none): return a.key.bytes.lexicographicallyPrecedes(b.key.bytes)
            }
        }.map(\.key)
    }

    /// - Parameter reachability: AutoNAT's verdict now (read after subscribing to its changes).
    func start(reachability: @escaping @Sendable () -> Reachability) {
        let events = host.events(label: "relay choice")
        host.spawn("relay choice: host events") { [self] in
            let current = reachability()
            state.withLockedValue { $0.reachability = current }
            await reconcile()
            for await event in events {
                switch event {
                case .reachabilityChanged(let reachability, _):
                    state.withLockedValue { $0.reachability = reachability }
                    await reconcile()
                case .identified, .reservationLost:
                    await reconcile()
                default:
                    break
                }
            }
        }
        host.spawn("relay choice: renewals") { [self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: Self.tick) } catch { return }
                await reconcile()
            }
        }
    }

    /// One pass at a time; a call while one runs makes it run once more.
    private func reconcile() async {
        let first = state.withLockedValue { state -> Bool in
            if state.running {
                state.again = true
                return false
            }
            state.running = true
            return true
        }
        guard first else { return }
        while true {
            await pass()
            let more = state.withLockedValue { state -> Bool in
                if state.again {
                    state.again = false
                    return true
                }
                state.running = false
                return false
            }
            if !more { return }
        }
    }

    private func pass() async {
        let now = UInt64(Date().timeIntervalSince1970)
        let held = Set(client.reservations.map(\.relay))
        let (reachability, chosen, failed) = state.withLockedValue { state in
            // Lost reservations are dropped from the choice (and replaced below).
            state.chosen = state.chosen.filter { held.contains($0.key) }
            state.failed = state.failed.filter { now < $0.value + Self.retryAfter }
            return (state.reachability, state.chosen, state.failed)
        }
        // Renewals are due whatever the verdict: an expired reservation's addresses must not stay.
        for (relay, entry) in chosen where now >= entry.renewAt {
            await reserve(relay, at: entry.address, now: now)
        }
        guard reachability == .private, chosen.count < maximum else { return }
        let connections = await host.connections()
        let candidates = Self.rank(
            connections, offersHop: { host.peerInfo($0)?.protocols.contains(CircuitRelay.hopProtocolID) == true },
            excluded: Set(chosen.keys).union(failed.keys).union(held))
        var count = chosen.count
        for relay in candidates where count < maximum {
            guard let address = relayAddress(relay, connections: connections) else { continue }
            if await reserve(relay, at: address, now: now) { count += 1 }
        }
    }

    /// An address to reserve at: the one we dialled the relay at, else the first dialable listen
    /// address it announced.
    private func relayAddress(_ relay: PeerID, connections: [ConnectionInfo]) -> Multiaddr? {
        if let outbound = connections.first(where: {
            $0.remotePeer == relay && $0.direction == .outbound && !$0.path.isRelayed
        })?.remoteAddress {
            return outbound.ending(in: relay)
        }
        let rule = host.addressScopeRule
        return host.peerInfo(relay)?.listenAddresses.first { rule.permits($0, from: .thirdParty) }?.ending(in: relay)
    }

    @discardableResult
    private func reserve(_ relay: PeerID, at address: Multiaddr, now: UInt64) async -> Bool {
        do {
            let info = try await client.reserve(at: address)
            let renewAt = info.expires > now ? now + max((info.expires - now) * 3 / 4, 1) : now + 1
            state.withLockedValue { $0.chosen[relay] = Chosen(address: address, renewAt: renewAt) }
            logger.info("relay chosen", metadata: ["relay": "\(relay)", "expires": "\(info.expires)"])
            return true
        } catch {
            state.withLockedValue {
                $0.chosen[relay] = nil
                $0.failed[relay] = now
            }
            logger.info("reservation at a candidate relay failed: \(error)", metadata: ["relay": "\(relay)"])
            return false
        }
    }
}
