import Application
import Foundation
import Identity
import Logging
import Multiformats
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
            // Served while AutoNAT says public.
            service = RelayService(host: host, limits: configuration.relayLimits, followsReachability: true)
        }
        chooser =
            configuration.relayAddresses.isEmpty && configuration.automaticRelays > 0
            ? RelayChooser(host: host, client: client, maximum: configuration.automaticRelays) : nil
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

    /// From the ready line on: event lines for reservations and hole punches, automatic relay
    /// choice, and own records republished when the advertised addresses change. Host tasks: they
    /// end with the host.
    func follow(dht: DHT, autonat: AutoNATService, nodeEvents: NodeEvents) {
        let events = events
        host.spawn("node relay events") {
            for await event in events {
                switch event {
                case .reservation(let relay, let addresses, let expires):
                    nodeEvents.publish(.reservation(relay: relay, addresses: addresses, expires: expires))
                case .reservationLost(let relay, let reason):
                    nodeEvents.publish(.reservationLost(relay: relay, reason: reason))
                case .holePunch(let peer, let outcome):
                    nodeEvents.publish(.holePunch(peer: peer, outcome))
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
