import AgentTesting
import Testing

@testable import Multiformats

@Suite("multihash and peer id text")
struct MultihashTests {
    @Test("peer id vectors decode in all three text forms to the same multihash", arguments: try TestVectors.array("peerid.json"))
    func peerIDText(vector: Vector) throws {
        let multihash = try Multihash(bytes: try vector.hex("multihash"))
        #expect(try PeerIDText.decode(try vector.string("peer_id_base58")[...]) == multihash)
        #expect(try PeerIDText.decode(try vector.string("peer_id_cid_base32")[...]) == multihash)
        #expect(try PeerIDText.decode(try vector.string("peer_id_cid_base36")[...]) == multihash)
        #expect(PeerIDText.base58(multihash) == (try vector.string("peer_id_base58")))
        #expect(PeerIDText.cid(multihash) == (try vector.string("peer_id_cid_base32")))
        #expect(PeerIDText.cid(multihash, base: .base36) == (try vector.string("peer_id_cid_base36")))
    }

    @Test("invalid peer id texts are refused", arguments: try TestVectors.array("peerid.json", "invalid"))
    func invalidPeerIDText(vector: Vector) throws {
        let text = try vector.string("text")
        #expect(throws: MultiformatsError.self) { _ = try PeerIDText.decode(text[...]) }
    }

    @Test("multihash lengths are checked before use")
    func lengths() {
        #expect(throws: MultiformatsError.self) { _ = try Multihash(bytes: [0x12, 0x20, 0x01]) }  // truncated
        #expect(throws: MultiformatsError.self) { _ = try Multihash(bytes: [0x12, 0x01, 0x01]) }  // sha256 of 1 byte
        #expect(throws: MultiformatsError.self) { _ = try Multihash(bytes: [0x13, 0x00]) }  // unsupported fn
        #expect(throws: MultiformatsError.self) { _ = try Multihash(bytes: [0x00, 0x01, 0x01, 0x02]) }  // trailing
        #expect(throws: MultiformatsError.self) {
            _ = try Multihash(bytes: [0x00, 0xff, 0xff, 0xff, 0xff, 0x0f])  // huge claimed length
        }
    }
}
