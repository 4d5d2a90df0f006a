import Identity
import Multiformats
import NIOCore

/// Provider records (ADD_PROVIDER / GET_PROVIDERS), held in memory and answered as the kad-dht spec
/// says, within a fixed budget (spec/dht.md §3.2); agentd's own capability announcements
/// (DHT+Providers.swift, spec/cards.md §7) land here too.
///
/// Issue #10, finding 8: one peer id filled all slots for 48 h, and once full every ADD_PROVIDER
/// scanned every entry under the DHT's lock. Now each peer has its own cap, and expired entries
/// leave in expiry order from the front of a queue: an ADD_PROVIDER costs O(1) amortized.
///
/// Generic over the peer handle (as `KBucketsTable`); providers are told apart by their keys.
struct ProviderStore<Peer: RoutingTablePeer>: Sendable {
    struct Provider: Sendable {
        /// The provider with the addresses it announced.
        var peer: Peer
        var expires: NIODeadline
    }

    /// One (key, peer) pair's expiry as queued. Every entry lives `ttl` from its last add and `now`
    /// never goes back, so the queue is in expiry order; an item whose pair was refreshed since
    /// (a later expiry) is stale and skipped.
    private struct Expiry: Sendable {
        let expires: NIODeadline
        let key: [UInt8]
        let peer: KademliaKey
    }

    let capacity: Int
    let perPeerCapacity: Int
    let ttl: TimeAmount
    private(set) var count = 0
    private(set) var countByPeer: [KademliaKey: Int] = [:]
    private var byKey: [[UInt8]: [KademliaKey: Provider]] = [:]
    private var queue: [Expiry] = []
    /// Items before it are consumed.
    private var head = 0

    init(capacity: Int, perPeerCapacity: Int, ttl: TimeAmount) {
        self.capacity = capacity
        self.perPeerCapacity = perPeerCapacity
        self.ttl = ttl
    }

    /// Adds or refreshes `provider` (whose key is `peer`) as a provider of `key`, with the
    /// addresses it carries. Returns false when the store, or the peer's share of it, is full (the
    /// pair is dropped).
    mutating func add(key: [UInt8], provider: Peer, peer: KademliaKey, now: NIODeadline) -> Bool {
        removeExpired(now: now)
        let addresses = provider.addresses
        let trimmed =
            addresses.count > KadLimits.maximumAddressesPerPeer
            ? provider.withAddresses(Array(addresses.prefix(KadLimits.maximumAddressesPerPeer))) : provider
        let provider = Provider(peer: trimmed, expires: now + ttl)
        if byKey[key]?[peer] != nil {
            byKey[key]![peer] = provider
            enqueue(Expiry(expires: provider.expires, key: key, peer: peer))
            return true
        }
        guard count < capacity, countByPeer[peer, default: 0] < perPeerCapacity else { return false }
        byKey[key, default: [:]][peer] = provider
        count += 1
        countByPeer[peer, default: 0] += 1
        enqueue(Expiry(expires: provider.expires, key: key, peer: peer))
        return true
    }

    /// The live providers of `key`, at most `limit`.
    func providers(of key: [UInt8], now: NIODeadline, limit: Int) -> [Peer] {
        guard let providers = byKey[key] else { return [] }
        return providers.lazy.filter { $0.value.expires > now }.prefix(limit).map(\.value.peer)
    }

    /// Removes the expired pairs, oldest first; touches nothing else.
    mutating func removeExpired(now: NIODeadline) {
        while head < queue.count, queue[head].expires <= now {
            let item = queue[head]
            head += 1
            guard let provider = byKey[item.key]?[item.peer], provider.expires == item.expires else { continue }
            byKey[item.key]![item.peer] = nil
            if byKey[item.key]!.isEmpty { byKey[item.key] = nil }
            count -= 1
            let left = countByPeer[item.peer, default: 1] - 1
            countByPeer[item.peer] = left > 0 ? left : nil
        }
        if head > 0, head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }

    /// Queues an expiry; drops stale items when they outnumber the live ones (refreshes only ever
    /// add items), so the queue stays within twice the store plus a little.
    private mutating func enqueue(_ item: Expiry) {
        queue.append(item)
        guard queue.count - head > 2 * count + 64 else { return }
        queue = queue[head...].filter { byKey[$0.key]?[$0.peer]?.expires == $0.expires }
        head = 0
    }
}

extension ProviderStore where Peer == KademliaPeer {
    /// Adds or refreshes `peer` at `addresses` as a provider of `key` (see `add(key:provider:peer:now:)`).
    mutating func add(key: [UInt8], peer: PeerID, addresses: [Multiaddr], now: NIODeadline) -> Bool {
        let provider = KademliaPeer(id: peer, addresses: addresses)
        return add(key: key, provider: provider, peer: provider.key, now: now)
    }
}
