import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network

/// Who enters the routing table, with which addresses, and who leaves it (spec/dht.md §4).
///
/// - An entry's addresses are only addresses we reached the peer at ourselves: the address of a
///   connection we dialled, or one a dial-back proved. What the peer claims (identify) is only a
///   candidate for the dial-back; what third parties claim (lookup answers) never enters.
/// - Liveness is judged by `KadRequestFailure.countsAgainstLiveness`: a peer that answers or
///   refuses is alive; a failed dial through its table addresses and a timeout are not.
extension DHT {
    /// `peer` answered a request of ours on `connection` (proof 1 of §4).
    func noteAnswered(_ peer: PeerID, via connection: Connection) {
        admit(peer, evidence: .answeredRequest, connection: connection)
    }

    /// A request of a lookup to `peer` failed. The peer leaves the table only if the failure is
    /// evidence that it is gone, or it said it no longer serves the DHT.
    func noteFailed(_ peer: PeerID, _ failure: KadRequestFailure) {
        guard failure.countsAgainstLiveness || failure.kind == .notServing else { return }
        let eviction = state.withLockedValue { $0.table.remove(peer) }
        if let eviction {
            logger.debug(
                "routing table: removed peer",
                metadata: [
                    "peer": "\(eviction.evicted.peer.id)", "reason": "\(failure.kind)",
                    "promoted": "\(eviction.promoted?.peer.id.description ?? "-")",
                ])
        }
    }

    /// Adds `peer`, which proved it serves the DHT (`evidence`) on `connection`, to the routing
    /// table with an address we verified:
    /// - an entry already: it is seen now, its addresses stay as they are;
    /// - a connection we dialled: its address is verified by the handshake;
    /// - else (the peer dialled us): a dial-back over a fresh connection to an address it
    ///   advertised through identify; only when that handshake authenticates the peer does it
    ///   enter, with that address.
    func admit(_ peer: PeerID, evidence: RoutingTable.Evidence, connection: Connection) {
        let verified: [Multiaddr]
        if connection.direction == .outbound, let remote = connection.remoteAddress, !Self.dialable([remote]).isEmpty {
            verified = [remote]
        } else {
            verified = []
        }
        let update = state.withLockedValue { state -> RoutingTable.Update? in
            if case .inboundStream(.client) = evidence {
                return state.table.add(KademliaPeer(id: peer), evidence: evidence, now: .now())
            }
            guard state.table.contains(peer) || !verified.isEmpty else { return nil }
            return state.table.add(KademliaPeer(id: peer, addresses: verified), evidence: evidence, now: .now())
        }
        if let update {
            handle(update)
            return
        }
        dialBack(peer, evidence: evidence, connection: connection)
    }

    /// Candidates for the dial-back of a peer that dialled us: its identify listen addresses (an
    /// unspecified IP replaced by the one its connection comes from), those on the IP we see it
    /// at first, at most 4.
    static func dialBackCandidates(listen: [Multiaddr], observed: Multiaddr?) -> [Multiaddr] {
        let addresses = reachableAddresses(listen, observed: observed)
        let observedIP = observed?.components.first
        let sameIP = addresses.filter { $0.components.first == observedIP }
        let others = addresses.filter { $0.components.first != observedIP }
        return Array((sameIP + others).prefix(4))
    }

    private func dialBack(_ peer: PeerID, evidence: RoutingTable.Evidence, connection: Connection) {
        guard let info = host.peerInfo(peer) else { return }
        let now = NIODeadline.now()
        // The peer's own word: dialled back only where the scope rule allows (spec/network.md).
        let listed = host.addressScopeRule.dialable(
            Self.dialBackCandidates(listen: info.listenAddresses, observed: connection.remoteAddress), from: .thirdParty)
        var probe = KademliaPeer(id: peer)
        let candidates = state.withLockedValue { state -> [Multiaddr] in
            // Addresses in a subnet that has its share of the table are not worth proving.
            let candidates = listed.filter {
                probe.addresses = [$0]
                return state.table.admitsSubnet(of: probe)
            }
            guard !candidates.isEmpty else { return [] }
            if let failed = state.dialBackFailures[peer], now - failed < configuration.dialBackRetryInterval {
                return []
            }
            guard state.dialBacks.count < configuration.maximumConcurrentDialBacks else { return [] }
            return state.dialBacks.insert(peer).inserted ? candidates : []
        }
        guard !candidates.isEmpty else { return }
        Task { [self] in
            var proven: Multiaddr?
            for address in candidates {
                do {
                    try await withHardTimeout(
                        configuration.requestHardTimeout, description: "dial-back of \(peer) at \(address)",
                        onTimeout: {}
                    ) { [host] in
                        try await host.probe(Self.withPeer(address, peer))
                    }
                    proven = address
                    break
                } catch {
                    logger.trace(
                        "dial-back failed",
                        metadata: ["peer": "\(peer)", "address": "\(address)", "reason": "\(error)"])
                }
            }
            let update = state.withLockedValue { state -> RoutingTable.Update? in
                state.dialBacks.remove(peer)
                guard let proven else {
                    state.noteDialBackFailure(peer, at: .now(), capacity: configuration.maximumConcurrentDialBacks * 64)
                    return nil
                }
                state.dialBackFailures[peer] = nil
                return state.table.add(KademliaPeer(id: peer, addresses: [proven]), evidence: evidence, now: .now())
            }
            if let update { handle(update) }
        }
    }

    /// Acts on what `RoutingTable.add` asked for: a liveness check of a full bucket's least
    /// recently seen entry, with the libp2p ping protocol (the kad-dht spec forbids kad PING for
    /// it). The entry is alive if it can be reached through its table addresses and does not let
    /// the check time out; a ping it refuses or resets still proves it alive.
    func handle(_ update: RoutingTable.Update) {
        if case .inserted = update { tableGrew() }
        guard case .pendingLivenessCheck(let oldest) = update else { return }
        Task { [self] in
            let alive: Bool
            do {
                alive = try await withHardTimeout(
                    configuration.requestHardTimeout, description: "liveness check of \(oldest.id)", onTimeout: {}
                ) { [self] in
                    let connection = try await connection(to: oldest)
                    do {
                        _ = try await Ping.ping(host, peer: oldest.id, count: 1)
                        return true
                    } catch {
                        // Reached and refused (or reset) the ping: alive, unless the connection
                        // itself went away under it.
                        return !connection.isClosing
                    }
                }
            } catch let failure as KadRequestFailure {
                alive = !failure.countsAgainstLiveness
            } catch {
                alive = false
            }
            let eviction = state.withLockedValue { state -> RoutingTable.Eviction? in
                if alive {
                    state.table.livenessCheckSucceeded(oldest.id, now: .now())
                    return nil
                }
                return state.table.livenessCheckFailed(oldest.id, now: .now())
            }
            if let eviction {
                logger.debug(
                    "routing table: evicted after failed liveness check",
                    metadata: ["peer": "\(eviction.evicted.peer.id)"])
            }
        }
    }
}

extension DHT.State {
    /// Remembers a failed dial-back; the oldest memory goes first beyond `capacity`.
    mutating func noteDialBackFailure(_ peer: PeerID, at now: NIODeadline, capacity: Int) {
        if dialBackFailures.count >= capacity, let oldest = dialBackFailures.min(by: { $0.value < $1.value }) {
            dialBackFailures[oldest.key] = nil
        }
        dialBackFailures[peer] = now
    }
}
