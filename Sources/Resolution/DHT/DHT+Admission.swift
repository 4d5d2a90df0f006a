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
    /// What we know of how `peer` is reached over `connection`, for its admission: the address of
    /// a connection we dialled is verified by the handshake; a peer that dialled us can only be
    /// dialled back at what it advertised through identify.
    func contact(for peer: PeerID, via connection: Connection) -> PeerContact {
        if connection.direction == .outbound, let remote = connection.remoteAddress, !Self.dialable([remote]).isEmpty {
            return PeerContact(verified: [remote])
        }
        guard let info = host.peerInfo(peer) else { return PeerContact() }
        // The peer's own word: dialled back only where the scope rule allows (spec/network.md).
        let candidates = host.addressScopeRule.dialable(
            Self.dialBackCandidates(listen: info.listenAddresses, observed: connection.remoteAddress), from: .thirdParty
        )
        return PeerContact(dialBackCandidates: candidates)
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

    /// Dials `peer` back at `candidates` in turn (a fresh connection each, closed once the
    /// handshake authenticated the peer) and reports the first address that proved it.
    func dialBack(_ peer: KademliaPeer, evidence: RoutingTable.Evidence, candidates: [Multiaddr]) async {
        var proven: Multiaddr?
        for address in candidates {
            do {
                try await withDeadline(configuration.requestHardTimeout) { [host] in
                    try await host.probe(Self.withPeer(address, peer.id))
                }
                proven = address
                break
            } catch {
                logger.trace(
                    "dial-back failed", metadata: ["peer": "\(peer.id)", "address": "\(address)", "reason": "\(error)"])
            }
        }
        feed(.dialBackFinished(peer, evidence, proven: proven))
    }

    /// The liveness check of a full bucket's least recently seen entry, with the libp2p ping
    /// protocol (the kad-dht spec forbids kad PING for it). The entry is alive if it can be reached
    /// through its table addresses and does not let the check time out; a ping it refuses or
    /// resets still proves it alive.
    func checkLiveness(of oldest: KademliaPeer) async {
        let alive: Bool
        do {
            alive = try await withDeadline(configuration.requestHardTimeout) { [self] in
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
        // Shut down meanwhile: no verdict.
        guard !Task.isCancelled else { return }
        feed(.livenessChecked(oldest, alive: alive))
    }
}
