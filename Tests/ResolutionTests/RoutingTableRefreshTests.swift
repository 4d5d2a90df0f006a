import AgentTesting
import NIOCore
import Testing

import Resolution

@Suite("routing table refresh: buckets not looked up for an hour")
struct RoutingTableRefreshTests {
    @Test("a new table asks to refresh bucket 255 (common prefix 0) once, then not before an hour")
    func emptyTable() {
        var generator = SeededGenerator(seed: 0x7265_6631)
        var table = RoutingTable(localPeer: KadFixtures.peerID(using: &generator))
        let targets = table.refreshTargets(now: KadFixtures.start, using: &generator)
        #expect(targets.map(\.bucket) == [255])
        #expect(table.bucketIndex(for: targets[0].key) == 255)
        #expect(table.refreshTargets(now: KadFixtures.start + .minutes(59), using: &generator).isEmpty)
        #expect(table.refreshTargets(now: KadFixtures.start + .hours(1), using: &generator).map(\.bucket) == [255])
    }

    @Test("targets cover prefix lengths 0 through the deepest non-empty bucket, each landing in its bucket")
    func targetsLandInTheirBuckets() {
        var generator = SeededGenerator(seed: 0x7265_6632)
        var table = RoutingTable(localPeer: KadFixtures.peerID(using: &generator))
        for _ in 0..<300 {
            _ = table.add(KadFixtures.peer(using: &generator), evidence: .answeredRequest, now: KadFixtures.start)
        }
        _ = table.add(
            KadFixtures.peer(inBucket: 248, of: table.localKey, using: &generator), evidence: .answeredRequest,
            now: KadFixtures.start)
        let deepest = table.bucketSummaries.first!.index
        #expect(deepest <= 248)
        let targets = table.refreshTargets(now: KadFixtures.start, using: &generator)
        #expect(targets.map(\.bucket) == Array((Swift.max(deepest, 240)...255).reversed()))
        for target in targets {
            #expect(table.bucketIndex(for: target.key) == target.bucket)
            #expect(table.localKey.commonPrefixLength(with: target.key) == 255 - target.bucket)
        }
        // Distinct random keys, not a fixed pattern.
        #expect(Set(targets.map(\.key)).count == targets.count)
    }

    @Test("a lookup into a bucket's range keeps it fresh")
    func lookupsRefresh() {
        var generator = SeededGenerator(seed: 0x7265_6633)
        var table = RoutingTable(localPeer: KadFixtures.peerID(using: &generator))
        for bucket in [255, 254, 253] {
            _ = table.add(
                KadFixtures.peer(inBucket: bucket, of: table.localKey, using: &generator), evidence: .answeredRequest,
                now: KadFixtures.start)
        }
        #expect(table.refreshTargets(now: KadFixtures.start, using: &generator).map(\.bucket) == [255, 254, 253])
        // Half an hour later a lookup lands in bucket 254.
        table.recordLookup(
            of: KademliaKey.random(inBucket: 254, from: table.localKey, using: &generator),
            now: KadFixtures.start + .minutes(30))
        #expect(
            table.refreshTargets(now: KadFixtures.start + .minutes(61), using: &generator).map(\.bucket) == [255, 253])
        #expect(table.refreshTargets(now: KadFixtures.start + .minutes(91), using: &generator).map(\.bucket) == [254])
        // The self-lookup touches no bucket.
        table.recordLookup(of: table.localKey, now: KadFixtures.start + .minutes(200))
        #expect(table.bucketSummaries.compactMap(\.lastRefreshed).max() == KadFixtures.start + .minutes(91))
    }

    @Test("refresh stops at the configured prefix length")
    func refreshDepthCap() {
        var generator = SeededGenerator(seed: 0x7265_6634)
        var configuration = RoutingTable.Configuration()
        configuration.maximumRefreshCommonPrefixLength = 3
        var table = RoutingTable(localPeer: KadFixtures.peerID(using: &generator), configuration: configuration)
        _ = table.add(
            KadFixtures.peer(inBucket: 249, of: table.localKey, using: &generator), evidence: .answeredRequest,
            now: KadFixtures.start)
        #expect(table.refreshTargets(now: KadFixtures.start, using: &generator).map(\.bucket) == [255, 254, 253, 252])
    }
}
