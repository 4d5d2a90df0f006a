import Identity
import Network
import NIOCore

/// The server side of `KademliaBehaviour`: answers to inbound kad requests (kad-dht spec, "RPC
/// messages"; spec/dht.md §3).
extension KademliaBehaviour {
    var bucketSize: Int { configuration.routingTable.bucketSize }

    /// Answers one request from `peer`. The decoder refused malformed ones already (a PUT_VALUE
    /// whose value is not an `.agent` record, or whose keys are not its name's).
    mutating func answer(
        _ request: KademliaRequest<Peer>, from peer: Peer, now: NIODeadline, unixNow: UInt64,
        into actions: inout [Action]
    ) -> KademliaReply<Peer> {
        let peerKey = key(of: peer)
        switch request {
        case .ping:
            return .answer(.pong)

        case .findNode(let key):
            return .answer(.closerPeers(closerPeers(to: key, excluding: peerKey)))

        case .getValue(let key):
            var record: SignedAgentRecord?
            do {
                record = try store.get(recordKey: key, now: unixNow)
            } catch {
                // Answered without the record (closer peers still help the asker); the operator
                // must see that our medium fails.
                actions.append(.storageFailed("kad: cannot read a record to answer GET_VALUE", error, name: nil))
            }
            return .answer(
                .value(closerPeers: closerPeers(to: key, excluding: peerKey), record: record.map { .success($0) }))

        case .putValue(let signed):
            do {
                _ = try store.put(signed, from: peer.peerID(in: table.keySpace), now: unixNow)
            } catch {
                if error.kind == .storage {
                    // Our medium failed, not the peer's record.
                    actions.append(
                        .storageFailed("kad: cannot store a record from \(peer)", error, name: signed.record.name))
                }
                return .refuse(
                    "PUT_VALUE for \(signed.record.name) rejected (\(error.kind.rawValue)): \(error.message)")
            }
            cache.remove(signed.record.name)
            return .answer(.stored)

        case .getProviders(let key):
            return .answer(
                .providers(
                    closerPeers: closerPeers(to: key, excluding: peerKey),
                    providers: providers.providers(of: key, now: now, limit: bucketSize)))

        case .addProvider(let key, let announced):
            // Only the sender may announce itself (kad-dht spec: "the provider peer info must match
            // the sender"); other entries are ignored. A full store drops the announcement.
            for provider in announced where self.key(of: provider) == peerKey {
                _ = providers.add(key: key, provider: provider, peer: peerKey, now: now)
            }
            return .none
        }
    }

    /// The k closest routing-table entries to `key` (hashed), without `excluded` (the requester).
    func closerPeers(to key: [UInt8], excluding excluded: KademliaKey) -> [Peer] {
        table.closestPeers(to: KademliaKey(hashing: key), count: bucketSize + 1)
            .lazy.filter { table.key(of: $0.peer) != excluded }
            .prefix(bucketSize)
            .map(\.peer)
    }
}
