import Foundation
import Identity
import NIOConcurrencyHelpers
import ResolutionTesting
import Testing

@testable import Resolution

/// Own records that too few replicas took are published again at the next maintenance round, not
/// half a TTL later (found by the 100-node messaging test: registrations made while every request
/// timed out reported 0 replicas, were never retried, and their names stayed unresolvable).
@Suite("DHT republishing of under-replicated own records")
struct DHTUnderReplicatedTests {
    @Test("a record its only replica refused is republished at the next round, without the table growing")
    func underReplicatedIsRetried() async throws {
        let network = DHTLoopbackNetwork()
        // Long request deadlines: nothing here waits for a timeout, and under load (beside the
        // fuzzers) B's answers came after the test network's 2 s deadline, so the first register
        // reached no replica.
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .seconds(30)
        configuration.requestHardTimeout = .seconds(60)
        // B's clock can jump 10 days ahead: it then refuses A's records as expired.
        let skew = NIOLockedValueBox<UInt64>(0)
        let a = try await network.addNode(configuration: configuration)
        let b = try await network.addNode(configuration: configuration, unixClock: { UInt64(Date().timeIntervalSince1970) + skew.withLockedValue { $0 } })
        await a.dht.bootstrap([b.address])
        let name = try AgentName("under-replicated.agent")
        let first = try await a.dht.register(name)
        #expect(first.storedAt == [b.host.peerID])

        skew.withLockedValue { $0 = 10 * 24 * 3600 }
        let refused = await a.dht.republishOwnRecords(force: true)
        #expect(refused == 1)
        let refusedSeq = try #require(try a.dht.store.ownRecord(for: name)).record.seq
        #expect(try b.dht.store.get(name, now: UInt64(Date().timeIntervalSince1970))?.record.seq != refusedSeq)

        // B accepts again; the table is as it was. The next maintenance round republishes.
        skew.withLockedValue { $0 = 0 }
        #expect(await a.dht.republishOwnRecords() == 1, "a record no replica holds was not republished")
        let now = UInt64(Date().timeIntervalSince1970)
        let held = try #require(try b.dht.store.get(name, now: now))
        #expect(held.record.seq > refusedSeq)
        // Held by its replica now: the round after leaves it alone.
        #expect(await a.dht.republishOwnRecords() == 0)
        try await network.shutdown()
    }
}
