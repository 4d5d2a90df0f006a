import Identity
import NIOCore
import Network
import Testing

@testable import Resolution

/// Who gets an inbound kad stream slot (spec/dht.md §1): the narrowest full scope gives up its
/// longest-idle stream; only a scope whose streams are all busy refuses.
@Suite("inbound kad stream slots")
struct InboundStreamSlotsTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let peers = (0..<4).map { _ in PeerID(publicKey: Ed25519.PrivateKey().publicKey) }

    func ip(_ text: String) throws -> IPAddress { try IPAddress(text) }

    @Test("over the per-IP cap, the IP's own longest-idle stream is evicted, not another IP's")
    func perIP() throws {
        var slots = InboundStreamSlots<String>(limits: .init(total: 10, perPeer: 10, perIP: 2))
        let attacker = try ip("203.0.113.7")
        guard case .admitted(let honest, nil) = slots.admit("honest", peer: peers[0], ip: try ip("198.51.100.1"), now: start)
        else { Issue.record("refused"); return }
        _ = slots.admit("a1", peer: peers[1], ip: attacker, now: start + .seconds(1))
        _ = slots.admit("a2", peer: peers[2], ip: attacker, now: start + .seconds(2))
        guard case .admitted(_, let evicted) = slots.admit("a3", peer: peers[3], ip: attacker, now: start + .seconds(3)) else {
            Issue.record("refused")
            return
        }
        #expect(evicted == "a1")
        #expect(slots.countByIP[attacker] == 2)
        #expect(slots.slots[honest] != nil)
    }

    @Test("when full, the longest-idle stream goes; busy streams are never evicted; all busy refuses")
    func total() throws {
        var slots = InboundStreamSlots<String>(limits: .init(total: 2, perPeer: 2, perIP: 2))
        guard case .admitted(let first, nil) = slots.admit("first", peer: peers[0], ip: nil, now: start),
            case .admitted(let second, nil) = slots.admit("second", peer: peers[1], ip: nil, now: start + .seconds(1))
        else { Issue.record("refused"); return }
        // The first is answering a request: the second, idle, makes room.
        slots.markBusy(first)
        guard case .admitted(let third, let evicted) = slots.admit("third", peer: peers[2], ip: nil, now: start + .seconds(2))
        else { Issue.record("refused"); return }
        #expect(evicted == "second")
        #expect(slots.release(second) == nil)
        slots.markBusy(third)
        guard case .refused = slots.admit("fourth", peer: peers[3], ip: nil, now: start + .seconds(3)) else {
            Issue.record("admitted although every stream is busy")
            return
        }
        slots.markIdle(first, now: start + .seconds(4))
        guard case .admitted(_, let next) = slots.admit("fifth", peer: peers[3], ip: nil, now: start + .seconds(5)) else {
            Issue.record("refused")
            return
        }
        #expect(next == "first")
        #expect(slots.count == 2)
    }
}
