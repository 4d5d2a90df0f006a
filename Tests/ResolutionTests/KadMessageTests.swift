import AgentTesting
import Identity
import Multiformats
import Testing

@testable import Resolution

@Suite("kad-dht RPC messages")
struct KadMessageTests {
    static let peer = PeerID(publicKey: try! Ed25519.PrivateKey(seed: [UInt8](repeating: 9, count: 32)).publicKey)

    @Test("FIND_NODE encodes as the spec's protobuf, field by field")
    func findNodeBytes() {
        let message = KadMessage(type: .findNode, key: [0xaa, 0xbb])
        // field 1 (type) varint 4; field 2 (key) length-delimited 2 bytes. proto3 omits defaults.
        #expect(message.serialized() == [0x08, 0x04, 0x12, 0x02, 0xaa, 0xbb])
        // PUT_VALUE is type 0, the proto3 default: not written at all.
        #expect(KadMessage(type: .putValue).serialized() == [])
    }

    @Test("round trip with a record and closer peers")
    func roundTrip() throws {
        let closer = KadMessage.Peer(
            peerID: Self.peer, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/4001"), try Multiaddr("/ip6/::1/tcp/4001")],
            connection: .connected)
        let message = KadMessage(
            type: .getValue, key: Array("/agent/alice.agent".utf8),
            record: .init(key: Array("/agent/alice.agent".utf8), value: [1, 2, 3], timeReceived: "2026-01-01T00:00:00Z"),
            closerPeers: [closer])
        let decoded = try KadMessage(serialized: message.serialized())
        #expect(decoded == message)
        #expect(decoded.droppedEntries == 0)
    }

    @Test("bad peers and addresses are dropped and counted, not fatal")
    func lenientPeers() throws {
        var wire = Agentd_Kad_Message()
        wire.type = .findNode
        var good = Agentd_Kad_Message.Peer()
        good.id = .init(Self.peer.bytes)
        good.addrs = [.init(try Multiaddr("/ip4/10.0.0.1/tcp/1").bytes), .init([0xff, 0xff, 0xff])]
        var bad = Agentd_Kad_Message.Peer()
        bad.id = .init([1, 2, 3])
        wire.closerPeers = [good, bad]
        let decoded = try KadMessage(serialized: try wire.serializedBytes() as [UInt8])
        #expect(decoded.closerPeers.count == 1)
        #expect(decoded.closerPeers[0].addresses.count == 1)
        #expect(decoded.droppedEntries == 2)
    }

    @Test("oversized messages, junk peer floods and unknown types are refused")
    func limits() throws {
        #expect(throws: ResolutionError.self) { _ = try KadMessage(serialized: [UInt8](repeating: 0, count: KadLimits.maximumMessageSize + 1)) }
        var flood = Agentd_Kad_Message()
        flood.type = .findNode
        var junk = Agentd_Kad_Message.Peer()
        junk.id = .init(Self.peer.bytes)
        flood.closerPeers = Array(repeating: junk, count: KadLimits.maximumPeers + 1)
        let floodBytes: [UInt8] = try flood.serializedBytes()
        do {
            _ = try KadMessage(serialized: floodBytes)
            Issue.record("a flood of peers was accepted")
        } catch {
            #expect(error.kind == .oversized)
        }
        // type = 9 does not exist.
        do {
            _ = try KadMessage(serialized: [0x08, 0x09])
            Issue.record("unknown type accepted")
        } catch {
            #expect(error.kind == .malformed)
        }
    }

    @Test("random and mutated bytes never crash the decoder (seed 21, 20000 cases)")
    func hostile() throws {
        var generator = SeededGenerator(seed: 21)
        let seed = KadMessage(
            type: .getValue, key: Array("/agent/bob.agent".utf8), record: .init(key: [1], value: [2, 3]),
            closerPeers: [.init(peerID: Self.peer, addresses: [try Multiaddr("/ip4/1.2.3.4/tcp/5")])]
        ).serialized()
        for round in 0..<20_000 {
            let input = round % 2 == 0 ? generator.mutate(seed) : generator.bytes(Int.random(in: 0...200, using: &generator))
            do {
                let message = try KadMessage(serialized: input)
                #expect(message.closerPeers.count <= KadLimits.maximumPeers)
            } catch {
                #expect([.malformed, .oversized].contains(error.kind))
            }
        }
    }
}
