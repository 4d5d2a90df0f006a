import Identity
import Network
import NIOCore

/// The server side of `KademliaBehaviour`: answers to inbound kad requests (kad-dht spec, "RPC
/// messages"; spec/dht.md §3).
extension KademliaBehaviour {
    var bucketSize: Int { configuration.routingTable.bucketSize }

    /// Answers one request from `peer`.
    mutating func answer(
        _ request: KadMessage, from peer: PeerID, now: NIODeadline, unixNow: UInt64,
        into actions: inout [KademliaAction]
    ) -> KademliaReply {
        switch request.type {
        case .ping:
            return .answer(KadMessage(type: .ping))

        case .findNode:
            return .answer(
                KadMessage(
                    type: .findNode, key: request.key, closerPeers: closerPeers(to: request.key, excluding: peer)))

        case .getValue:
            var answer = KadMessage(
                type: .getValue, key: request.key, closerPeers: closerPeers(to: request.key, excluding: peer))
            do {
                if let record = try store.get(recordKey: request.key, now: unixNow) {
                    answer.record = KadMessage.Record(
                        key: request.key, value: record.bytes, timeReceived: Timestamp.iso8601(unixNow))
                }
            } catch {
                // Answered without the record (closer peers still help the asker); the operator
                // must see that our medium fails.
                actions.append(.storageFailed("kad: cannot read a record to answer GET_VALUE", error, name: nil))
            }
            return .answer(answer)

        case .putValue:
            guard let record = request.record else { return .refuse("PUT_VALUE without a record") }
            guard record.key == request.key else { return .refuse("PUT_VALUE record key differs from the message key") }
            let signed: SignedAgentRecord
            do {
                signed = try SignedAgentRecord(bytes: record.value)
            } catch {
                return .refuse("PUT_VALUE value is not an .agent record: \(error.message)")
            }
            guard signed.record.name.recordKey == record.key else {
                return .refuse(
                    "PUT_VALUE key \(String(decoding: record.key.prefix(300), as: UTF8.self).escapedForLog()) does not match the record's name \(signed.record.name)"
                )
            }
            do {
                _ = try store.put(signed, from: peer, now: unixNow)
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
            return .answer(request)

        case .getProviders:
            return .answer(
                KadMessage(
                    type: .getProviders, key: request.key, closerPeers: closerPeers(to: request.key, excluding: peer),
                    providerPeers: providers.providers(of: request.key, now: now, limit: bucketSize)))

        case .addProvider:
            // Only the sender may announce itself (kad-dht spec: "the provider peer info must match
            // the sender"); other entries are ignored. A full store drops the announcement.
            for provider in request.providerPeers where provider.peerID == peer {
                _ = providers.add(key: request.key, peer: peer, addresses: provider.addresses, now: now)
            }
            return .none
        }
    }

    /// The k closest routing-table entries to `key` (hashed), without `excluded` (the requester).
    func closerPeers(to key: [UInt8], excluding excluded: PeerID) -> [KadMessage.Peer] {
        table.closestPeers(to: KademliaKey(hashing: key), count: bucketSize + 1)
            .lazy.filter { $0.peer.id != excluded }
            .prefix(bucketSize)
            .map { KadMessage.Peer(peerID: $0.peer.id, addresses: $0.peer.addresses, connection: .notConnected) }
    }
}
