import AgentTesting
import Identity
import Multiformats
import Testing

@testable import Resolution

/// The driver's edge between `KademliaBehaviour`'s requests and answers and the kad wire format:
/// what a malformed or hostile message becomes (a refused request, a failed request, an invalid
/// record), and that a round trip through `KadMessage` keeps what the behaviour said.
@Suite("Kademlia messages at the wire edge: decoding hostile requests and answers")
struct KademliaMessagesWireTests {
    static let record = Fixtures.record()
    static let key = Fixtures.name.recordKey

    static func refusal(_ message: KadMessage) -> String? {
        if case .failure(let refusal) = KademliaRequest.decoding(message) { return refusal.reason }
        return nil
    }

    @Test("a PUT_VALUE without a record, under another key, not an .agent record, or for another name is refused")
    func hostilePuts() throws {
        let key = Self.key
        #expect(Self.refusal(KadMessage(type: .putValue, key: key))?.contains("without a record") == true)
        #expect(
            Self.refusal(
                KadMessage(type: .putValue, key: key, record: .init(key: key + [0], value: Self.record.bytes)))?
                .contains("differs from the message key") == true)
        #expect(
            Self.refusal(KadMessage(type: .putValue, key: key, record: .init(key: key, value: [1, 2, 3])))?
                .contains("not an .agent record") == true)
        let other = try AgentName("bob.agent").recordKey
        #expect(
            Self.refusal(KadMessage(type: .putValue, key: other, record: .init(key: other, value: Self.record.bytes)))?
                .contains("does not match the record's name") == true)
        guard case .success(.putValue(let decoded)) = KademliaRequest.decoding(KadMessage(.putValue(Self.record)))
        else {
            Issue.record("a well-formed PUT_VALUE was refused")
            return
        }
        #expect(decoded == Self.record)
    }

    @Test("an answer of another type fails the request; a GET_VALUE record under another key or not a record is invalid")
    func hostileAnswers() throws {
        let key = Self.key
        let findNode = KademliaRequest<KademliaPeer>.findNode(key: key)
        guard case .failure(let failure) = KademliaResponse.decoding(KadMessage(type: .ping), for: findNode) else {
            Issue.record("a PING answer to FIND_NODE was accepted")
            return
        }
        #expect(failure.kind == .badAnswer)

        let getValue = KademliaRequest<KademliaPeer>.getValue(key: key)
        var answer = KadMessage(type: .getValue, key: key, record: .init(key: key + [1], value: Self.record.bytes))
        guard case .success(.value(_, .failure(let elsewhere)?)) = KademliaResponse.decoding(answer, for: getValue)
        else {
            Issue.record("a record under another key was taken")
            return
        }
        #expect(elsewhere.kind == .malformed)
        answer.record = .init(key: key, value: [0xff, 0x00])
        guard case .success(.value(_, .failure)) = KademliaResponse.decoding(answer, for: getValue) else {
            Issue.record("garbage bytes were taken for a record")
            return
        }
        answer.record = .init(key: key, value: Self.record.bytes)
        guard case .success(.value(_, .success(let taken)?)) = KademliaResponse.decoding(answer, for: getValue) else {
            Issue.record("a good record was refused")
            return
        }
        #expect(taken == Self.record)
    }

    @Test("a served answer goes on the wire with the request's key, the connected peers marked, and decodes back")
    func roundTrip() throws {
        var generator = SeededGenerator(seed: 3)
        let peers = (0..<3).map { KademliaPeer(id: KadFixtures.peerID(using: &generator), addresses: [KadFixtures.address($0)]) }
        let request = KadMessage(.getValue(key: Self.key))
        let wire = KadMessage(
            .value(closerPeers: peers, record: .success(Self.record)), answering: request, unixNow: Fixtures.now
        ) { $0 == peers[1].id }
        #expect(wire.key == Self.key)
        #expect(wire.closerPeers.map(\.connection) == [.notConnected, .connected, .notConnected])
        #expect(wire.record?.key == Self.key)
        let reparsed = try KadMessage(serialized: wire.serialized())
        guard
            case .success(.value(let closer, .success(let record)?)) = KademliaResponse.decoding(
                reparsed, for: .getValue(key: Self.key))
        else {
            Issue.record("the answer did not decode back")
            return
        }
        #expect(closer == peers)
        #expect(record == Self.record)
        // PUT_VALUE is answered by echoing the request.
        let put = KadMessage(.putValue(Self.record))
        #expect(KadMessage(.stored, answering: put, unixNow: Fixtures.now) { _ in false } == put)
    }
}
