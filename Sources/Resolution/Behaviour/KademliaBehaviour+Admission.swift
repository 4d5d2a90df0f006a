import Identity
import Multiformats
import NIOCore

/// Who enters the routing table, with which addresses, and who leaves it (spec/dht.md §4).
///
/// - An entry's addresses are only addresses we reached the peer at ourselves: the address of a
///   connection we dialled, or one a dial-back proved. What the peer claims (identify) is only a
///   candidate for the dial-back; what third parties claim (lookup answers) never enters.
/// - Liveness is judged by `KadRequestFailure.countsAgainstLiveness` (`requestFailed`).
extension KademliaBehaviour {
    /// `peer` proved it serves the DHT (`evidence`) through a contact the driver describes:
    /// - an entry already: it is seen now, its addresses stay as they are;
    /// - a connection we dialled: its address is verified by the handshake;
    /// - else (the peer dialled us): a dial-back over a fresh connection to an address it
    ///   advertised through identify; only when that handshake authenticates the peer does it
    ///   enter, with that address.
    mutating func admit(
        _ peer: Peer, evidence: RoutingTableEvidence, contact: PeerContact, now: NIODeadline,
        into actions: inout [Action]
    ) {
        if case .inboundStream(.client) = evidence {
            tableUpdated(table.add(peer.withAddresses([]), evidence: evidence, now: now), now: now, into: &actions)
            return
        }
        let peerKey = key(of: peer)
        if table.entry(forKey: peerKey) != nil || contact.isVerified {
            let update = table.add(peer.withAddresses(contact.verified), evidence: evidence, now: now)
            tableUpdated(update, now: now, into: &actions)
            return
        }
        // Addresses in a subnet that has its share of the table are not worth proving.
        let candidates = contact.dialBackCandidates.filter { table.admitsSubnet(of: peer.withAddresses([$0])) }
        guard !candidates.isEmpty else { return }
        if let failed = dialBackFailures[peerKey], now - failed < configuration.dialBackRetryInterval { return }
        guard dialBacks.count < configuration.maximumConcurrentDialBacks, dialBacks.insert(peerKey).inserted else {
            return
        }
        actions.append(.dialBack(peer, evidence, candidates: candidates))
    }

    mutating func dialBackFinished(
        _ peer: Peer, evidence: RoutingTableEvidence, proven: Multiaddr?, now: NIODeadline,
        into actions: inout [Action]
    ) {
        let peerKey = key(of: peer)
        dialBacks.remove(peerKey)
        guard let proven else {
            noteDialBackFailure(peerKey, at: now, capacity: configuration.maximumConcurrentDialBacks * 64)
            return
        }
        dialBackFailures[peerKey] = nil
        tableUpdated(table.add(peer.withAddresses([proven]), evidence: evidence, now: now), now: now, into: &actions)
    }

    /// Remembers a failed dial-back; the oldest memory goes first beyond `capacity`.
    private mutating func noteDialBackFailure(_ peer: KademliaKey, at now: NIODeadline, capacity: Int) {
        if dialBackFailures.count >= capacity, let oldest = dialBackFailures.min(by: { $0.value < $1.value }) {
            dialBackFailures[oldest.key] = nil
        }
        dialBackFailures[peer] = now
    }

    mutating func livenessChecked(_ peer: Peer, alive: Bool, now: NIODeadline, into actions: inout [Action]) {
        if alive {
            table.livenessCheckSucceeded(key: key(of: peer), now: now)
        } else if let eviction = table.livenessCheckFailed(key: key(of: peer), now: now) {
            actions.append(.removed(eviction, reason: "failed liveness check"))
        }
    }

    /// Acts on what `RoutingTable.add` asked for: a liveness check of a full bucket's least recently
    /// seen entry; a republish soon when the table grew while own names lack replicas.
    private mutating func tableUpdated(
        _ update: Table.Update, now: NIODeadline, into actions: inout [Action]
    ) {
        switch update {
        case .inserted:
            if ownNames.republishAfterGrowth(tableSize: table.count) {
                jobs.growthRepublishAt = now + JobSchedule.growthRepublishDelay
            }
        case .pendingLivenessCheck(let oldest):
            actions.append(.checkLiveness(oldest))
        case .updated, .cached, .rejected:
            break
        }
    }
}
