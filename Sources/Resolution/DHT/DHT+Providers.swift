import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// What announcing this node as a provider did.
public struct ProvideReport: Sendable {
    /// Peers the ADD_PROVIDER went out to (kad-dht gives no answer to it, so "sent" is all we know).
    public let sentTo: [PeerID]
    /// Peers it could not be sent to, with the reason.
    public let failures: [(peer: PeerID, reason: String)]
}

/// The client side of provider records (kad-dht spec, "Content provider advertisement and
/// discovery"; spec/dht.md §3.2): the server side is in DHT+Server.swift and ProviderStore.
extension DHT {
    /// Announces this node as a provider of `key`: in its own provider store, and by ADD_PROVIDER
    /// (with the host's dialable addresses) to the k closest peers a lookup finds. Provider records
    /// live `providerRecordTTL` (48 h); callers announce again well before (spec/cards.md §7: every
    /// 22 h).
    public func provide(_ key: [UInt8]) async -> ProvideReport {
        let addresses = Self.dialable(host.advertisedAddresses)
        _ = state.withLockedValue { $0.providers.add(key: key, peer: host.peerID, addresses: addresses, now: .now()) }
        let lookup = await lookupClosestPeers(to: key)
        let message = KadMessage(
            type: .addProvider, key: key, providerPeers: [KadMessage.Peer(peerID: host.peerID, addresses: addresses)])
        return await withTaskGroup(of: (PeerID, String?).self) { group in
            for peer in lookup.closest.prefix(routingTableBucketSize) {
                group.addTask { [self] in
                    do {
                        _ = try await request(message, to: peer)
                        return (peer.id, nil)
                    } catch {
                        return (peer.id, "\(error)")
                    }
                }
            }
            var sent: [PeerID] = []
            var failures: [(peer: PeerID, reason: String)] = []
            for await (peer, failure) in group {
                if let failure { failures.append((peer, failure)) } else { sent.append(peer) }
            }
            return ProvideReport(sentTo: sent, failures: failures)
        }
    }

    /// Finds up to `limit` providers of `key` by a GET_PROVIDERS lookup: our own provider store's
    /// first, then those the peers on the way name, in order of discovery; the lookup stops once
    /// `limit` are known. Providers' addresses come from third parties and are kept only as the
    /// scope rule allows (spec/network.md, "Addresses"); a provider named without addresses keeps
    /// none (dial it through its peer id's lookup).
    public func findProviders(_ key: [UInt8], limit: Int = 20) async -> [KademliaPeer] {
        guard case .providers(let found) = await run(.providers(key: key, limit: limit)) else {
            preconditionFailure("a providers query ended with another outcome")
        }
        // Our own store's entries came from their providers, third parties to whoever reads them.
        let rule = host.addressScopeRule
        return found.map {
            $0.id == host.peerID
                ? $0 : KademliaPeer(id: $0.id, addresses: rule.dialable($0.addresses, from: .thirdParty))
        }
    }

    var routingTableBucketSize: Int { configuration.routingTable.bucketSize }
}
