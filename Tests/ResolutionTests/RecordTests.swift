import AgentTesting
import Identity
import Multiformats
import Testing

@testable import Resolution

@Suite(".agent records: encoding, signature, validation")
struct RecordTests {
    @Test("encode → decode round trip keeps every field and the exact bytes")
    func roundTrip() throws {
        let rotation = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.bob.publicKey, by: Fixtures.alice)
        let signed = Fixtures.record(
            Fixtures.bob, seq: 9, addresses: ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1", "/dns4/a.example/tcp/443"],
            protocols: ["/agent/msg/1.0.0", "/ipfs/ping/1.0.0"], rotation: rotation)
        let decoded = try SignedAgentRecord(bytes: signed.bytes)
        #expect(decoded == signed)
        #expect(decoded.record.rotation == rotation)
        #expect(decoded.record.expires == Fixtures.now + 3600)
        try decoded.validate(now: Fixtures.now)
    }

    @Test("records over 8192 bytes cannot be signed or decoded")
    func oversized() throws {
        // 32 addresses of ~250-byte DNS names: about 8.2 KB.
        let long = String(repeating: "a", count: 250)
        let record = AgentRecord(
            name: Fixtures.name, publicKey: Fixtures.alice.publicKey, seq: 1, timestamp: Fixtures.now,
            addresses: (0..<32).map { _ in try! Multiaddr("/dns4/\(long)/tcp/1") })
        #expect(throws: ResolutionError.self) { _ = try record.signed(with: Fixtures.alice) }
        do { _ = try record.signed(with: Fixtures.alice) } catch { #expect(error.kind == .oversized) }
        do { _ = try SignedAgentRecord(bytes: [UInt8](repeating: 1, count: 8193)) } catch { #expect(error.kind == .oversized) }
        let tooMany = AgentRecord(
            name: Fixtures.name, publicKey: Fixtures.alice.publicKey, seq: 1, timestamp: Fixtures.now,
            addresses: (0..<33).map { _ in try! Multiaddr("/ip4/1.2.3.4/tcp/1") })
        do { _ = try tooMany.signed(with: Fixtures.alice) } catch { #expect(error.kind == .malformed) }
    }

    /// Every reason a lone record is refused, each produced on purpose.
    static let loneRejections: [(String, ResolutionError.Kind, @Sendable () -> SignedAgentRecord)] = [
        ("signature by another key", .badSignature, {
            let good = Fixtures.record()
            var bytes = good.bytes
            bytes.replaceSubrange((bytes.count - 64)..., with: Fixtures.bob.signature(for: good.signedPayload))
            return try! SignedAgentRecord(bytes: bytes)
        }),
        ("a field changed after signing", .badSignature, {
            var bytes = Fixtures.record(seq: 1).bytes
            // seq sits right after version, name and key; bump its last byte.
            let seqEnd = 1 + 1 + "alice.agent".utf8.count + 1 + 32 + 8
            bytes[seqEnd - 1] = 2
            return try! SignedAgentRecord(bytes: bytes)
        }),
        ("rotation not signed by the previous key", .badRotation, {
            let forged = RecordRotation(previousKey: Fixtures.alice.publicKey, signature: Fixtures.carol.signature(for: [1]))
            return Fixtures.record(Fixtures.bob, rotation: forged)
        }),
        ("rotation from its own key", .badRotation, {
            Fixtures.record(rotation: RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.alice.publicKey, by: Fixtures.alice))
        }),
        ("ttl below the minimum", .ttlOutOfRange, { Fixtures.record(ttl: 59) }),
        ("ttl above 7 days", .ttlOutOfRange, { Fixtures.record(ttl: 7 * 24 * 3600 + 1) }),
        ("timestamp 6 minutes ahead", .fromTheFuture, { Fixtures.record(timestamp: Fixtures.now + 360) }),
        ("timestamp 8 days old", .tooOld, { Fixtures.record(timestamp: Fixtures.now - 8 * 24 * 3600, ttl: 7 * 24 * 3600) }),
        ("expired", .expired, { Fixtures.record(timestamp: Fixtures.now - 7200, ttl: 3600) }),
        ("self-certifying name signed by another key", .selfCertifyingMismatch, {
            Fixtures.record(Fixtures.bob, name: AgentName(selfCertifying: PeerID(publicKey: Fixtures.alice.publicKey)))
        }),
    ]

    @Test("every lone-record rejection reason", arguments: 0..<loneRejections.count)
    func loneRejection(index: Int) {
        let (label, kind, make) = Self.loneRejections[index]
        let record = make()
        #expect(throws: ResolutionError.self, "\(label)") { try record.validate(now: Fixtures.now) }
        do {
            try record.validate(now: Fixtures.now)
        } catch {
            #expect(error.kind == kind, "\(label): \(error.message)")
            #expect(!error.message.isEmpty)
        }
    }

    @Test("time edges: exactly 5 min ahead and exactly at expiry are still valid")
    func timeEdges() throws {
        try Fixtures.record(timestamp: Fixtures.now + 300).validate(now: Fixtures.now)
        try Fixtures.record(timestamp: Fixtures.now - 3600, ttl: 3600).validate(now: Fixtures.now)
        try Fixtures.record(ttl: 60).validate(now: Fixtures.now)
    }

    @Test("structural errors: version, key type, name, flags, trailing bytes, truncation")
    func structural() throws {
        let good = Fixtures.record().bytes
        func kind(_ bytes: [UInt8]) -> ResolutionError.Kind? {
            do { _ = try SignedAgentRecord(bytes: bytes); return nil } catch { return error.kind }
        }
        var badVersion = good
        badVersion[0] = 2
        #expect(kind(badVersion) == .malformed)
        var badKeyType = good
        badKeyType[1 + 1 + 11] = 3
        #expect(kind(badKeyType) == .malformed)
        var upperName = good
        upperName[2] = UInt8(ascii: "A")
        #expect(kind(upperName) == .invalidName)
        #expect(kind(good + [0]) == .malformed)
        for length in 0..<good.count {
            #expect(kind(Array(good.prefix(length))) != nil, "prefix of \(length) bytes decoded")
        }
    }

    @Test("mutated and random records never crash and never validate (seed 8, 20000 cases)")
    func hostile() throws {
        var generator = SeededGenerator(seed: 8)
        let rotation = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.bob.publicKey, by: Fixtures.alice)
        let seeds = [
            Fixtures.record().bytes,
            Fixtures.record(Fixtures.bob, seq: 3, addresses: ["/ip6/::1/tcp/1", "/dns/x.example/udp/2/quic-v1"], rotation: rotation).bytes,
        ]
        for round in 0..<20_000 {
            let seed = seeds[round % 2]
            let input = round % 10 == 9 ? generator.bytes(Int.random(in: 0...300, using: &generator)) : generator.mutate(seed)
            do {
                let decoded = try SignedAgentRecord(bytes: input)
                do {
                    try decoded.validate(now: Fixtures.now)
                    // Only the untouched record may validate.
                    #expect(input == seed, "a mutated record validated (round \(round))")
                } catch {
                    #expect(!error.message.isEmpty)
                }
            } catch {
                #expect([.malformed, .oversized, .invalidName].contains(error.kind), "round \(round): \(error)")
            }
        }
    }
}
