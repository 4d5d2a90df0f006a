import Identity
import Testing

@testable import Resolution

@Suite("ownership rules: select(existing, incoming)")
struct RecordSelectionTests {
    typealias Case = (label: String, existing: SignedAgentRecord?, incoming: SignedAgentRecord, now: UInt64, expected: RecordDecisionKind)

    enum RecordDecisionKind: Equatable {
        case accept(RecordAcceptance)
        case reject(ResolutionError.Kind)
    }

    static let now = Fixtures.now
    static let rotationToBob = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.bob.publicKey, by: Fixtures.alice)
    static let rotationToCarolByBob = RecordRotation.endorse(name: Fixtures.name, newKey: Fixtures.carol.publicKey, by: Fixtures.bob)

    static let cases: [Case] = [
        ("first valid claim", nil, Fixtures.record(seq: 1), now, .accept(.firstClaim)),
        ("same key, higher seq", Fixtures.record(seq: 1), Fixtures.record(seq: 2, timestamp: now + 10), now + 10, .accept(.update)),
        ("same key, same record again", Fixtures.record(seq: 3), Fixtures.record(seq: 3), now, .accept(.identical)),
        ("same key, stale seq", Fixtures.record(seq: 5), Fixtures.record(seq: 4, timestamp: now + 10), now + 10, .reject(.staleSeq)),
        ("same key, same seq, other content", Fixtures.record(seq: 5), Fixtures.record(seq: 5, addresses: ["/ip4/10.0.0.1/tcp/1"]), now, .reject(.conflictingSeq)),
        ("other key while the claim is live", Fixtures.record(seq: 1), Fixtures.record(Fixtures.bob, seq: 100), now, .reject(.nameHeld)),
        ("other key after the claim lapsed", Fixtures.record(seq: 1, timestamp: now - 7200, ttl: 3600), Fixtures.record(Fixtures.bob, seq: 1), now, .accept(.previousClaimLapsed)),
        ("rotation signed by the holder, higher seq", Fixtures.record(seq: 1), Fixtures.record(Fixtures.bob, seq: 2, rotation: rotationToBob), now, .accept(.rotation)),
        ("rotation signed by the holder, seq not higher", Fixtures.record(seq: 7), Fixtures.record(Fixtures.bob, seq: 7, rotation: rotationToBob), now, .reject(.staleSeq)),
        ("rotation endorsed by a key that does not hold the name", Fixtures.record(seq: 1), Fixtures.record(Fixtures.carol, seq: 2, rotation: rotationToCarolByBob), now, .reject(.rotationFromWrongKey)),
        ("rotation with a forged endorsement", Fixtures.record(seq: 1), Fixtures.record(Fixtures.bob, seq: 2, rotation: RecordRotation(previousKey: Fixtures.alice.publicKey, signature: rotationToCarolByBob.signature)), now, .reject(.badRotation)),
        ("after rotation the old key is an outsider", Fixtures.record(Fixtures.bob, seq: 2, rotation: rotationToBob), Fixtures.record(seq: 3), now, .reject(.nameHeld)),
        ("after rotation the new key updates without the endorsement", Fixtures.record(Fixtures.bob, seq: 2, rotation: rotationToBob), Fixtures.record(Fixtures.bob, seq: 3), now, .accept(.update)),
        ("an invalid incoming record is refused before any comparison", nil, Fixtures.record(timestamp: now - 7200), now, .reject(.expired)),
        ("an expired update does not replace a live record", Fixtures.record(seq: 1), Fixtures.record(seq: 2, timestamp: now - 7200), now, .reject(.expired)),
    ]

    @Test("the ownership table", arguments: 0..<cases.count)
    func table(index: Int) {
        let entry = Self.cases[index]
        let decision = RecordSelection.select(existing: entry.existing, incoming: entry.incoming, now: entry.now)
        switch (decision, entry.expected) {
        case (.accept(let reason), .accept(let expected)):
            #expect(reason == expected, "\(entry.label)")
        case (.reject(let error), .reject(let expected)):
            #expect(error.kind == expected, "\(entry.label): \(error.message)")
            #expect(!error.message.isEmpty)
        default:
            Issue.record("\(entry.label): got \(decision), expected \(entry.expected)")
        }
    }

    @Test("the name-held message names both keys and the expiry")
    func message() {
        let held = Fixtures.record(seq: 1)
        let decision = RecordSelection.select(existing: held, incoming: Fixtures.record(Fixtures.bob), now: Fixtures.now)
        guard case .reject(let error) = decision else {
            Issue.record("expected a rejection")
            return
        }
        #expect(error.message.contains(PeerID(publicKey: Fixtures.alice.publicKey).description))
        #expect(error.message.contains(PeerID(publicKey: Fixtures.bob.publicKey).description))
        #expect(error.message.contains("2026-01-01T01:00:00Z"))
    }

    @Test("every record error kind is produced by some record test")
    func coverage() {
        let produced = Set(Self.cases.compactMap { entry -> ResolutionError.Kind? in
            if case .reject(let kind) = entry.expected { return kind }
            return nil
        }).union(RecordTests.loneRejections.map { $0.1 }).union([.invalidName, .malformed, .oversized])
        // The store's and the DHT's kinds are produced by RecordStoreTests (store_full, storage) and
        // the DHT tests (not_found, network, name_held on register).
        let notRecordKinds: Set<ResolutionError.Kind> = [.notFound, .network, .storeFull, .storage]
        #expect(produced == Set(ResolutionError.Kind.allCases).subtracting(notRecordKinds))
    }
}
