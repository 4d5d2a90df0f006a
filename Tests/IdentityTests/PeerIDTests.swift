import AgentTesting
import Multiformats
import Testing

@testable import Identity

@Suite("libp2p peer ids and did:key")
struct PeerIDTests {
    @Test("libp2p/specs peer-ids vectors: protobuf key → peer id, all text forms", arguments: try TestVectors.array("peerid.json"))
    func vectors(vector: Vector) throws {
        let multihash = try vector.hex("multihash")
        guard vector["public_key_protobuf"] != nil else {
            // Published sha2-256 peer ids without their key: only the text forms can be checked.
            let peerID = try PeerID(bytes: multihash)
            #expect(peerID.description == (try vector.string("peer_id_base58")))
            #expect(try PeerID(try vector.string("peer_id_cid_base32")) == peerID)
            #expect(try PeerID(try vector.string("peer_id_cid_base36")) == peerID)
            #expect(peerID.publicKey == nil)
            return
        }
        let protobuf = try vector.hex("public_key_protobuf")
        let key = try LibP2PPublicKey(protobuf: protobuf)
        #expect(key.protobuf == protobuf)
        let peerID = PeerID(publicKey: key)
        #expect(peerID.bytes == multihash)
        #expect(peerID.description == (try vector.string("peer_id_base58")))
        #expect(peerID.cidString() == (try vector.string("peer_id_cid_base32")))
        #expect(peerID.cidString(base: .base36) == (try vector.string("peer_id_cid_base36")))
        for text in [try vector.string("peer_id_base58"), try vector.string("peer_id_cid_base32"), try vector.string("peer_id_cid_base36")] {
            #expect(try PeerID(text) == peerID)
        }
        #expect(try PeerID(bytes: peerID.bytes) == peerID)
        if key.type == .ed25519 {
            let ed = try key.ed25519()
            #expect(PeerID(publicKey: ed) == peerID)
            #expect(peerID.ed25519PublicKey == ed)
            #expect(peerID.matches(ed))
            if let seed = vector["seed"] {
                #expect(try Ed25519.PrivateKey(seed: try Hex.decode(seed)).publicKey == ed)
            }
        } else {
            #expect(peerID.ed25519PublicKey == nil)
        }
    }

    @Test("invalid peer id texts are refused with a message", arguments: try TestVectors.array("peerid.json", "invalid"))
    func invalid(vector: Vector) throws {
        let text = try vector.string("text")
        #expect(throws: IdentityError.self) { _ = try PeerID(text) }
    }

    @Test("non-deterministic key protobufs are refused")
    func strictProtobuf() throws {
        let key = Ed25519.PrivateKey().publicKey
        let good = LibP2PPublicKey(key).protobuf
        #expect(try LibP2PPublicKey(protobuf: good) == LibP2PPublicKey(key))
        let swapped = [0x12, 0x20] + key.rawRepresentation + [0x08, 0x01]
        #expect(throws: IdentityError.self) { _ = try LibP2PPublicKey(protobuf: swapped) }
        #expect(throws: IdentityError.self) { _ = try LibP2PPublicKey(protobuf: good + [0x00]) }
        #expect(throws: IdentityError.self) { _ = try LibP2PPublicKey(protobuf: Array(good.dropLast())) }
        #expect(throws: IdentityError.self) { _ = try LibP2PPublicKey(protobuf: [0x08, 0x09, 0x12, 0x00]) }
    }

    @Test("did:key vectors (w3c-ccg did-method-key)", arguments: try TestVectors.array("didkey.json"))
    func didKey(vector: Vector) throws {
        let key = try Ed25519.PublicKey(rawRepresentation: try vector.hex("public_key_raw"))
        let did = try vector.string("did")
        #expect(DIDKey.string(for: key) == did)
        #expect(did.hasPrefix("did:key:z6Mk"))
        #expect(try DIDKey.publicKey(from: did) == key)
    }

    @Test("malformed did:key strings are refused")
    func badDIDKey() {
        for text in ["", "did:web:example.com", "did:key:", "did:key:b6Mk", "did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW", "did:key:z6Mk0"] {
            #expect(throws: IdentityError.self, "\(text)") { _ = try DIDKey.publicKey(from: text) }
        }
    }

    @Test("random bytes and mutated ids never crash the peer id parsers (seed 5, 20000 cases)")
    func hostile() throws {
        var generator = SeededGenerator(seed: 5)
        let valid = try TestVectors.array("peerid.json").map { try $0.hex("multihash") }
        for round in 0..<20_000 {
            let bytes = round % 2 == 0 ? generator.mutate(valid[round % valid.count]) : generator.bytes(Int.random(in: 0...60, using: &generator))
            do {
                let peerID = try PeerID(bytes: bytes)
                #expect(peerID.bytes == bytes)
                #expect(try PeerID(peerID.description) == peerID)
            } catch {
                #expect(error.kind == .invalidPeerID)
            }
            do {
                _ = try LibP2PPublicKey(protobuf: bytes)
            } catch {
                #expect(error.kind == .invalidPeerID)
            }
            let text = String(decoding: generator.mutate(Array(PeerIDText.base58(try Multihash(bytes: valid[0])).utf8)), as: UTF8.self)
            do { _ = try PeerID(text) } catch { #expect(error.kind == .invalidPeerID) }
        }
    }
}
