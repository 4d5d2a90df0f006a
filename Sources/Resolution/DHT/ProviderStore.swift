import Identity
import Multiformats
import NIOCore

/// Provider records (ADD_PROVIDER / GET_PROVIDERS), held in memory: agentd does not use them
/// itself, but answers them as the kad-dht spec says, within a fixed budget.
struct ProviderStore: Sendable {
    struct Provider: Sendable {
        var addresses: [Multiaddr]
        var expires: NIODeadline
    }

    let capacity: Int
    let ttl: TimeAmount
    private(set) var count = 0
    private var byKey: [[UInt8]: [PeerID: Provider]] = [:]

    init(capacity: Int, ttl: TimeAmount) {
        self.capacity = capacity
        self.ttl = ttl
    }

    /// Adds or refreshes `peer` as a provider of `key`. Returns false when the store is full.
    mutating func add(key: [UInt8], peer: PeerID, addresses: [Multiaddr], now: NIODeadline) -> Bool {
        let provider = Provider(addresses: Array(addresses.prefix(KadLimits.maximumAddressesPerPeer)), expires: now + ttl)
        if byKey[key]?[peer] != nil {
            byKey[key]![peer] = provider
            return true
        }
        if count >= capacity {
            removeExpired(now: now)
            guard count < capacity else { return false }
        }
        byKey[key, default: [:]][peer] = provider
        count += 1
        return true
    }

    /// The live providers of `key`, at most `limit`.
    func providers(of key: [UInt8], now: NIODeadline, limit: Int) -> [KadMessage.Peer] {
        guard let providers = byKey[key] else { return [] }
        return providers.lazy.filter { $0.value.expires > now }.prefix(limit).map {
            KadMessage.Peer(peerID: $0.key, addresses: $0.value.addresses)
        }
    }

    mutating func removeExpired(now: NIODeadline) {
        for (key, providers) in byKey {
            let live = providers.filter { $0.value.expires > now }
            count -= providers.count - live.count
            byKey[key] = live.isEmpty ? nil : live
        }
    }
}
