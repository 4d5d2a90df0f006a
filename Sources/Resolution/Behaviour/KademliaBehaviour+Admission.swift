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
        _ peer: PeerID, evidence: RoutingTable.Evidence, contact: PeerContact, now: NIODeadline,
        into actions: inout [KademliaAction]
    ) {
        if case .inboundStream(.client) = evidence {
            tableUpdated(table.add(KademliaPeer(id: peer), evidence: evidence, now: now), now: now, into: &actions)
            return
        }
        if table.contains(peer) || !contact.verified.isEmpty {
            let update = table.add(KademliaPeer(id: peer, addresses: contact.verified), evidence: evidence, now: now)
            tableUpdated(update, now: now, into: &actions)
            return
        }
        // Addresses in a subnet that has its share of the table are not worth proving.
        var probe = KademliaPeer(id: peer)
        let candidates = contact.dialBackCandidates.filter {
            probe.addresses = [$0]
            return table.admitsSubnet(of: probe)
        }
        guard !candidates.isEmpty else { return }
        if let failed = dialBackFailures[peer], now - failed < configuration.dialBackRetryInterval { return }
        guard dialBacks.count < configuration.maximumConcurrentDialBacks, dialBacks.insert(peer).inserted else {
            return
        }
        actions.append(.dialBack(peer, evidence, candidates: candidates))
    }

    mutating func dialBackFinished(
        _ peer: PeerID, evidence: RoutingTable.Evidence, proven: Multiaddr?, now: NIODeadline,
        into actions: inout [KademliaAction]
    ) {
        dialBacks.remove(peer)
        guard let proven else {
            noteDialBackFailure(peer, at: now, capacity: configuration.maximumConcurrentDialBacks * 64)
            return
        }
        dialBackFailures[peer] = nil
        tableUpdated(
            table.add(KademliaPeer(id: peer, addresses: [proven]), evidence: evidence, now: now), now: now,
            into: &actions)
    }

    /// Remembers a failed dial-back; the oldest memory goes first beyond `capacity`.
    private mutating func noteDialBackFailure(_ peer: PeerID, at now: NIODeadline, capacity: Int) {
        if dialBackFailures.count >= capacity, let oldest = dialBackFailures.min(by: { $0.value < $1.value }) {
            dialBackFailures[oldest.key] = nil
        }
        dialBackFailures[peer] = now
    }

    mutating func livenessChecked(_ peer: PeerID, alive: Bool, now: NIODeadline, into actions: inout [KademliaAction]) {
        if alive {
            table.livenessCheckSucceeded(peer, now: now)
        } else if let eviction = table.livenessCheckFailed(peer, now: now) {
            actions.append(.removed(eviction, reason: "failed liveness check"))
        }
    }

    /// Acts on what `RoutingTable.add` asked for: a liveness check of a full bucket's least recently
    /// seen entry; a republish soon when the table grew while own names lack replicas.
    private mutating func tableUpdated(
        _ update: RoutingTable.Update, now: NIODeadline, into actions: inout [KademliaAction]
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
