import Identity
import NIOCore
import Testing

@testable import Resolution

@Suite("ReplicaSelection and ResolutionCache")
struct ReplicaSelectionTests {
    static let replicas = (0..<8).map { _ in PeerID(publicKey: Ed25519.PrivateKey().publicKey) }

    static func answers(_ records: [SignedAgentRecord]) -> [ReplicaSelection.Answer<PeerID>] {
        records.enumerated().map { ReplicaSelection.Answer(replica: replicas[$0.offset], record: $0.element, rank: $0.offset) }
    }

    @Test("nothing to choose from gives nil")
    func empty() {
        #expect(ReplicaSelection.choose([ReplicaSelection.Answer<PeerID>](), local: nil) == nil)
    }

    @Test("the highest seq of one key wins, whatever the order; up-to-date replicas are the ones holding it")
    func highestSeq() throws {
        let old = Fixtures.record(seq: 1)
        let new = Fixtures.record(seq: 5)
        let choice = try #require(ReplicaSelection.choose(Self.answers([old, new, old]), local: nil))
        #expect(choice.record == new)
        #expect(choice.supporters == 3)
        #expect(choice.upToDate == [Self.replicas[1]])
        #expect(choice.rivalClaims == 1)
    }

    @Test("a rival key held by fewer replicas loses, even with a higher seq and the closest replica")
    func majorityClaim() throws {
        let holder = Fixtures.record(Fixtures.alice, seq: 3)
        let rival = Fixtures.record(Fixtures.bob, seq: 1000)
        let choice = try #require(ReplicaSelection.choose(Self.answers([rival, holder, holder]), local: nil))
        #expect(choice.record == holder)
        #expect(choice.supporters == 2)
        #expect(choice.rivalClaims == 2)
    }

    @Test("ties go to the claim our store holds, then to the closest replica's")
    func ties() throws {
        let holder = Fixtures.record(Fixtures.alice, seq: 3)
        let rival = Fixtures.record(Fixtures.bob, seq: 3)
        let byRank = try #require(ReplicaSelection.choose(Self.answers([rival, holder]), local: nil))
        #expect(byRank.record == rival)
        let byLocal = try #require(ReplicaSelection.choose(Self.answers([rival, holder]), local: holder))
        #expect(byLocal.record == holder)
        #expect(byLocal.supporters == 1)
    }

    @Test("a rotation endorsed by the held key continues its claim and takes over its replicas")
    func rotation() throws {
        let old = Fixtures.record(Fixtures.alice, seq: 3)
        let endorsement = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.bob.publicKey, by: Fixtures.alice)
        let rotated = Fixtures.record(Fixtures.bob, seq: 4, rotation: endorsement)
        let rival = Fixtures.record(Fixtures.carol, seq: 9)
        // Two replicas still hold alice's record, one has the rotation, two hold carol's rival claim:
        // alice + rotation = 3 supporters for bob's record.
        let choice = try #require(ReplicaSelection.choose(Self.answers([rival, old, rival, old, rotated]), local: nil))
        #expect(choice.record == rotated)
        #expect(choice.supporters == 3)
        #expect(choice.upToDate == [Self.replicas[4]])
    }

    @Test("a rotation with a seq not above the held one does not take over")
    func staleRotation() throws {
        let old = Fixtures.record(Fixtures.alice, seq: 7)
        let endorsement = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.bob.publicKey, by: Fixtures.alice)
        let rotated = Fixtures.record(Fixtures.bob, seq: 4, rotation: endorsement)
        let choice = try #require(ReplicaSelection.choose(Self.answers([rotated, old, old]), local: nil))
        #expect(choice.record == old)
    }

    @Test("only the local record: chosen, with no replica support")
    func localOnly() throws {
        let record = Fixtures.record()
        let choice = try #require(ReplicaSelection.choose([ReplicaSelection.Answer<PeerID>](), local: record))
        #expect(choice.record == record)
        #expect(choice.supporters == 0)
        #expect(choice.upToDate.isEmpty)
    }

    // MARK: Cache

    @Test("cache: fresh entries are served, expired ones not; the time adapts to changes")
    func cacheAdapts() throws {
        var configuration = ResolutionCache.Configuration()
        configuration.initialTTL = .seconds(60)
        configuration.minimumTTL = .seconds(10)
        configuration.maximumTTL = .seconds(400)
        var cache = ResolutionCache(configuration: configuration)
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        let now = Fixtures.now
        let record = Fixtures.record(seq: 1, ttl: 3600)
        #expect(cache.store(record, for: Fixtures.name, now: t0, unixNow: now) == .seconds(60))
        #expect(cache.lookup(Fixtures.name, now: t0 + .seconds(59), unixNow: now) == record)
        #expect(cache.lookup(Fixtures.name, now: t0 + .seconds(60), unixNow: now) == nil)
        // Unchanged: doubles up to the maximum.
        #expect(cache.store(record, for: Fixtures.name, now: t0, unixNow: now) == .seconds(120))
        #expect(cache.store(record, for: Fixtures.name, now: t0, unixNow: now) == .seconds(240))
        #expect(cache.store(record, for: Fixtures.name, now: t0, unixNow: now) == .seconds(400))
        #expect(cache.store(record, for: Fixtures.name, now: t0, unixNow: now) == .seconds(400))
        // Changed: halves down to the minimum.
        let changed = Fixtures.record(seq: 2, ttl: 3600)
        #expect(cache.store(changed, for: Fixtures.name, now: t0, unixNow: now) == .seconds(200))
        for seq in 3...10 { cache.store(Fixtures.record(seq: UInt64(seq), ttl: 3600), for: Fixtures.name, now: t0, unixNow: now) }
        #expect(cache.store(Fixtures.record(seq: 11, ttl: 3600), for: Fixtures.name, now: t0, unixNow: now) == .seconds(10))
        // Never beyond the record's own expiry.
        let shortLived = Fixtures.record(seq: 12, timestamp: now, ttl: 60)
        cache.remove(Fixtures.name)
        #expect(cache.store(shortLived, for: Fixtures.name, now: t0, unixNow: now + 50) == .seconds(10))
        #expect(cache.lookup(Fixtures.name, now: t0, unixNow: now + 61) == nil)
    }

    @Test("cache: bounded; the least recently used name goes first")
    func cacheBounded() throws {
        var configuration = ResolutionCache.Configuration()
        configuration.capacity = 3
        var cache = ResolutionCache(configuration: configuration)
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        let names = try (0..<4).map { try AgentName("n\($0).agent") }
        let records = names.map { Fixtures.record(name: $0, ttl: 3600) }
        for index in 0..<3 { cache.store(records[index], for: names[index], now: t0, unixNow: Fixtures.now) }
        _ = cache.lookup(names[0], now: t0, unixNow: Fixtures.now)
        cache.store(records[3], for: names[3], now: t0, unixNow: Fixtures.now)
        #expect(cache.count == 3)
        #expect(cache.lookup(names[1], now: t0, unixNow: Fixtures.now) == nil)
        #expect(cache.lookup(names[0], now: t0, unixNow: Fixtures.now) == records[0])
        #expect(cache.lookup(names[3], now: t0, unixNow: Fixtures.now) == records[3])
    }
}

@Suite("ReplicaSelection against colluding far nodes")
struct ReplicaSelectionCollusionTests {
    @Test("many far nodes sharing one rival key do not outvote the closest replicas")
    func colluders() throws {
        let holder = Fixtures.record(Fixtures.alice, seq: 3)
        let rival = Fixtures.record(Fixtures.bob, seq: 1000)
        var answers: [ReplicaSelection.Answer<PeerID>] = []
        let peers = (0..<16).map { _ in PeerID(publicKey: Ed25519.PrivateKey().publicKey) }
        // The three closest replicas hold the real record; ranks 3-15 are colluders.
        for rank in 0..<16 {
            answers.append(.init(replica: peers[rank], record: rank < 3 ? holder : rival, rank: rank))
        }
        let everyone = try #require(ReplicaSelection.choose(answers, local: nil))
        #expect(everyone.record == rival, "without the voter limit the colluders win: the point of the limit")
        let replicas = try #require(ReplicaSelection.choose(answers, local: nil, voters: 5))
        #expect(replicas.record == holder)
        #expect(replicas.supporters == 3)
    }

    @Test("a newer seq of the winning key counts even from a far node")
    func farUpdate() throws {
        let old = Fixtures.record(Fixtures.alice, seq: 3)
        let new = Fixtures.record(Fixtures.alice, seq: 4)
        let peers = (0..<8).map { _ in PeerID(publicKey: Ed25519.PrivateKey().publicKey) }
        let answers = (0..<8).map { ReplicaSelection.Answer(replica: peers[$0], record: $0 == 7 ? new : old, rank: $0) }
        let choice = try #require(ReplicaSelection.choose(answers, local: nil, voters: 5))
        #expect(choice.record == new)
    }
}
