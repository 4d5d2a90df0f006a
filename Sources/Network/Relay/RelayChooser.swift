import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// Runs `RelayChoice` on a host (agentd without `--relay`): candidates are the peers connected
/// directly whose identify lists hop, with their connection's smoothed RTT; reservations go through
/// the `RelayClient`. It wakes on the host events that can change the choice (AutoNAT's verdict, a
/// peer identified, a reservation lost, a disconnection) and at the choice's next deadline.
public final class RelayChooser: Sendable {
    private let host: Host
    private let client: RelayClient
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    private let choice: NIOLockedValueBox<RelayChoice>
    private let alarm = Alarm()
    /// Longest sleep without an event (a candidate's RTT changes without one), seconds.
    static let idleWake: UInt64 = 60

    public init(
        host: Host, client: RelayClient, maximum: Int,
        now: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }
    ) {
        self.host = host
        self.client = client
        self.now = now
        var logger = host.core.logger
        logger[metadataKey: "service"] = "relay-choice"
        self.logger = logger
        self.choice = NIOLockedValueBox(RelayChoice(maximum: maximum))
    }

    public var maximum: Int { choice.withLockedValue { $0.maximum } }

    /// Whether `relay` was chosen automatically.
    public func chose(_ relay: PeerID) -> Bool { choice.withLockedValue { $0.chose(relay) } }

    /// Starts choosing: host tasks, ended with the host.
    /// - Parameter reachability: AutoNAT's verdict now (read after subscribing to its changes).
    public func start(reachability: @escaping @Sendable () -> Reachability) {
        let events = host.events(label: "relay choice")
        host.spawn("relay choice: host events") { [self] in
            let current = reachability()
            choice.withLockedValue { $0.reachabilityChanged(current) }
            alarm.signal()
            for await event in events {
                switch event {
                case .reachabilityChanged(let reachability, _):
                    choice.withLockedValue { $0.reachabilityChanged(reachability) }
                    alarm.signal()
                case .identified, .reservationLost, .disconnected:
                    alarm.signal()
                default:
                    break
                }
            }
        }
        host.spawn("relay choice") { [self] in
            while !Task.isCancelled {
                await alarm.wait(timeout: sleep(), on: host.core.group.next())
                if Task.isCancelled { return }
                await pass()
            }
        }
    }

    /// Until the choice's next deadline, at most `idleWake`.
    private func sleep() -> TimeAmount {
        let now = now()
        let deadline = choice.withLockedValue { $0.nextDeadline } ?? UInt64.max
        return .seconds(Int64(min(deadline > now ? deadline - now : 0, Self.idleWake)))
    }

    /// Polls the choice and performs its reservations, one at a time, until it asks for nothing.
    private func pass() async {
        while !Task.isCancelled {
            let candidates = await self.candidates()
            let held = Set(client.reservations.map(\.relay))
            let actions = choice.withLockedValue { $0.poll(candidates: candidates, held: held, now: now()) }
            if actions.isEmpty { return }
            for case .reserve(let relay, let address) in actions {
                do {
                    let info = try await client.reserve(at: address)
                    choice.withLockedValue { $0.granted(relay, at: address, expires: info.expires, now: now()) }
                    logger.info("relay chosen", metadata: ["relay": "\(relay)", "expires": "\(info.expires)"])
                } catch {
                    choice.withLockedValue { $0.failed(relay, now: now()) }
                    logger.info("reservation at a candidate relay failed: \(error)", metadata: ["relay": "\(relay)"])
                }
            }
        }
    }

    /// Peers connected directly whose identify lists hop, with their RTT and an address to reserve
    /// at: the one we dialled them at, else their first dialable listen address.
    private func candidates() async -> [RelayChoice.Candidate] {
        let connections = await host.connections()
        let rule = host.addressScopeRule
        var result: [RelayChoice.Candidate] = []
        for info in connections where !info.path.isRelayed {
            let relay = info.remotePeer
            guard let identify = host.peerInfo(relay), identify.protocols.contains(CircuitRelay.hopProtocolID) else {
                continue
            }
            let dialled = connections.first {
                $0.remotePeer == relay && $0.direction == .outbound && !$0.path.isRelayed
            }
            guard
                let address = dialled?.remoteAddress
                    ?? identify.listenAddresses.first(where: { rule.permits($0, from: .thirdParty) })
            else { continue }
            result.append(RelayChoice.Candidate(relay: relay, rtt: info.latency, address: address.ending(in: relay)))
        }
        return result
    }
}
