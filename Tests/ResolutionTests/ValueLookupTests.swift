import Identity
import Testing

@testable import Resolution

/// `ValueLookup`, the value side of `DHT.resolve` and of the simulator's resolve (spec/dht.md §8),
/// without a network.
@Suite("value lookup: what counts, the early stop, the decision")
struct ValueLookupTests {
    static let now = Fixtures.now

    /// Replicas with fixed keys, closest to the record key first.
    static let replicas: [KademliaPeer] = {
        let target = KademliaKey(hashing: Fixtures.name.recordKey)
        let peers = (10..<40).map { seed in
            KademliaPeer(
                id: PeerID(
                    publicKey: try! Ed25519.PrivateKey(seed: [UInt8](repeating: UInt8(seed), count: 32)).publicKey))
        }
        return peers.sorted { target.distance(to: $0.key) < target.distance(to: $1.key) }
    }()

    static func verify(_ record: SignedAgentRecord) throws(ResolutionError) { try record.validate(now: now) }

    static func lookup(quorum: Int = 3, replicationFactor: Int = 5) -> ValueLookup<KademliaPeer> {
        ValueLookup(name: Fixtures.name, quorum: quorum, replicationFactor: replicationFactor)
    }

    @Test("valid records count; another name, an expired or forged record is invalid with its kind")
    func verdicts() {
        var value = Self.lookup()
        let peer = Self.replicas[0]
        #expect(value.receive(Fixtures.record(), from: peer, key: peer.key, verify: Self.verify) == .valid)
        let other = Fixtures.record(name: try! AgentName("bob.agent"))
        #expect(
            value.receive(other, from: Self.replicas[1], key: Self.replicas[1].key, verify: Self.verify)
                == .invalid(.malformed))
        let expired = Fixtures.record(timestamp: Self.now - 7200, ttl: 3600)
        #expect(
            value.receive(expired, from: Self.replicas[2], key: Self.replicas[2].key, verify: Self.verify)
                == .invalid(.expired))
        #expect(value.receiveInvalid(from: Self.replicas[3], .malformed) == .invalid(.malformed))
        #expect(value.validAnswers == 1)
        #expect(value.invalidAnswers.map(\.kind) == [.malformed, .expired, .malformed])
    }

    @Test("the lookup may stop at the quorum of one key, never while two keys were heard")
    func earlyStop() {
        var value = Self.lookup(quorum: 3)
        for index in 0..<2 {
            value.receive(
                Fixtures.record(seq: 1), from: Self.replicas[index], key: Self.replicas[index].key,
                verify: Self.verify)
            #expect(!value.mayStop)
        }
        value.receive(
            Fixtures.record(seq: 2), from: Self.replicas[2], key: Self.replicas[2].key, verify: Self.verify)
        #expect(value.mayStop)
        value.receive(
            Fixtures.record(Fixtures.bob, seq: 9), from: Self.replicas[3], key: Self.replicas[3].key,
            verify: Self.verify)
        #expect(!value.mayStop)
        for index in 4..<10 {
            value.receive(
                Fixtures.record(seq: 2), from: Self.replicas[index], key: Self.replicas[index].key,
                verify: Self.verify)
        }
        #expect(!value.mayStop)
    }

    @Test("the decision: the closest replicas vote, the stale ones are named, the local copy follows")
    func decision() throws {
        var value = Self.lookup(quorum: 3, replicationFactor: 3)
        let old = Fixtures.record(seq: 1)
        let new = Fixtures.record(seq: 2)
        let rival = Fixtures.record(Fixtures.bob, seq: 50)
        // Far replicas (rank ≥ 3) claim a rival key in numbers: they do not vote.
        let answers: [(Int, SignedAgentRecord)] = [(0, new), (1, old), (3, rival), (4, rival), (5, rival), (6, rival)]
        for (index, record) in answers {
            value.receive(record, from: Self.replicas[index], key: Self.replicas[index].key, verify: Self.verify)
        }
        // Replica 2 answered without a record.
        let closest = Array(Self.replicas.prefix(8))
        let decision = try #require(value.decide(closest: closest, local: old))
        #expect(decision.choice.record == new)
        #expect(decision.staleReplicas.map(\.id) == [Self.replicas[1].id, Self.replicas[2].id])
        #expect(decision.updatesLocalCopy)
        #expect(value.decide(closest: closest, local: new)?.updatesLocalCopy == false)
        #expect(value.decide(closest: closest, local: nil)?.updatesLocalCopy == false)
        #expect(Self.lookup().decide(closest: closest, local: nil) == nil)
        #expect(Self.lookup().decide(closest: closest, local: old)?.choice.record == old)
    }
}
