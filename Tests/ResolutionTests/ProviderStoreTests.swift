import Identity
import NIOCore
import Testing

@testable import Resolution

/// The provider store's budget (spec/dht.md §3.2): a per-peer cap, and expired pairs leaving in
/// expiry order.
@Suite("provider store")
struct ProviderStoreTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test("one peer cannot take more than its share; others still add theirs")
    func perPeerCap() {
        var store = ProviderStore<KademliaPeer>(capacity: 1000, perPeerCapacity: 256, ttl: .hours(48))
        let greedy = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let other = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        var added = 0
        for index in 0..<1000 where store.add(key: Array("k\(index)".utf8), peer: greedy, addresses: [], now: start) {
            added += 1
        }
        #expect(added == 256)
        #expect(store.countByPeer[KademliaKey(peer: greedy)] == 256)
        // Refreshing one it holds still works at the cap.
        let added24 = store.add(key: Array("k0".utf8), peer: greedy, addresses: [], now: start + .seconds(1))
        #expect(added24)
        let added26 = store.add(key: Array("k0".utf8), peer: other, addresses: [], now: start)
        #expect(added26)
        #expect(store.count == 257)
    }

    @Test("expired pairs leave oldest first, a refreshed pair stays, and their room is reused")
    func expiryOrder() {
        var store = ProviderStore<KademliaPeer>(capacity: 3, perPeerCapacity: 3, ttl: .seconds(10))
        let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let late = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let added36 = store.add(key: [1], peer: peer, addresses: [], now: start)
        #expect(added36)
        let added38 = store.add(key: [2], peer: peer, addresses: [], now: start + .seconds(1))
        #expect(added38)
        let added40 = store.add(key: [3], peer: peer, addresses: [], now: start + .seconds(2))
        #expect(added40)
        // Full: a new pair is dropped while nothing has expired.
        let added43 = store.add(key: [4], peer: late, addresses: [], now: start + .seconds(5))
        #expect(!added43)
        // Key 1 refreshed at 6 s: it now lives until 16 s.
        let added46 = store.add(key: [1], peer: peer, addresses: [], now: start + .seconds(6))
        #expect(added46)
        // At 11.5 s key 2 has expired (11 s), key 3 not yet (12 s), key 1 not (16 s).
        store.removeExpired(now: start + .milliseconds(11_500))
        #expect(store.count == 2)
        #expect(store.providers(of: [2], now: start + .milliseconds(11_500), limit: 20).isEmpty)
        #expect(store.providers(of: [1], now: start + .milliseconds(11_500), limit: 20).count == 1)
        let added53 = store.add(key: [4], peer: late, addresses: [], now: start + .seconds(12))
        #expect(added53)
        #expect(store.count == 2)
        #expect(store.providers(of: [3], now: start + .seconds(12), limit: 20).isEmpty)
        // Many refreshes of one pair do not grow the bookkeeping without bound, nor lose the pair.
        for second in 13..<2013 {
            let added59 = store.add(key: [4], peer: late, addresses: [], now: start + .seconds(Int64(second)))
            #expect(added59)
        }
        #expect(store.providers(of: [4], now: start + .seconds(2013), limit: 20).count == 1)
        #expect(store.count == 1)
    }
}
