import AgentTesting
import Identity
import Testing

import Resolution

@Suite("Kademlia keys: SHA-256 placement, XOR distance, prefix and bucket arithmetic")
struct RoutingTableKeyTests {
    @Test("a key is the SHA-256 of the bytes (FIPS 180-4 vectors)")
    func hashing() {
        #expect(
            KademliaKey(hashing: Array("abc".utf8)).description
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            KademliaKey(hashing: [UInt8]()).description
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test("a peer's key is the SHA-256 of its peer id multihash bytes")
    func peerKey() throws {
        // 00 24 08 01 12 20 2ffa…336b (identity multihash of the Ed25519 key protobuf), hashed with
        // Python's hashlib.sha256.
        let peer = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        #expect(peer.bytes.count == 38)
        #expect(
            KademliaKey(peer: peer).description == "a9fb3b592b9e6cee5658eaf7de67433434163a081d97cc77e303b300c816251e")
        #expect(KademliaPeer(id: peer).key == KademliaKey(hashing: peer.bytes))
    }

    @Test("bytes round-trip; other lengths are refused")
    func bytes() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        let key = KadFixtures.key(hex)
        #expect(key.description == hex)
        #expect(key.bytes == Array(0..<32))
        #expect(KademliaKey(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(KademliaKey(bytes: [UInt8](repeating: 0, count: 33)) == nil)
    }

    // (a, b, a XOR b, common prefix length, bucket index), worked out by hand bit by bit.
    static let vectors: [(String, String, String, Int, Int?)] = [
        (
            String(repeating: "00", count: 32), "80" + String(repeating: "00", count: 31),
            "80" + String(repeating: "00", count: 31), 0, 255
        ),
        (
            String(repeating: "00", count: 32), String(repeating: "00", count: 31) + "01",
            String(repeating: "00", count: 31) + "01", 255, 0
        ),
        (
            String(repeating: "ff", count: 32), String(repeating: "ff", count: 31) + "fe",
            String(repeating: "00", count: 31) + "01", 255, 0
        ),
        // 0x0f ^ 0x0e = 0x01: seven equal bits, then a difference.
        (
            "0f" + String(repeating: "00", count: 31), "0e" + String(repeating: "00", count: 31),
            "01" + String(repeating: "00", count: 31), 7, 248
        ),
        // First difference in byte 8, top bit: the second 64-bit word.
        (
            String(repeating: "00", count: 8) + "80" + String(repeating: "00", count: 23),
            String(repeating: "00", count: 32),
            String(repeating: "00", count: 8) + "80" + String(repeating: "00", count: 23), 64, 191
        ),
        // Last bit of byte 23 (bit 191 from the top), then first bit of byte 24: a word boundary.
        (
            String(repeating: "00", count: 23) + "01" + String(repeating: "00", count: 8),
            String(repeating: "00", count: 32),
            String(repeating: "00", count: 23) + "01" + String(repeating: "00", count: 8), 191, 64
        ),
        (
            String(repeating: "00", count: 24) + "80" + String(repeating: "00", count: 7),
            String(repeating: "00", count: 32),
            String(repeating: "00", count: 24) + "80" + String(repeating: "00", count: 7), 192, 63
        ),
        // 0x3c ^ 0xa5 = 0x99.
        (
            "3c" + String(repeating: "11", count: 31), "a5" + String(repeating: "11", count: 31),
            "99" + String(repeating: "00", count: 31), 0, 255
        ),
        // Byte 5 differs by 0x10: 5 × 8 + 3 equal bits.
        (
            String(repeating: "0123456789abcdef", count: 4),
            "0123456789bbcdef" + String(repeating: "0123456789abcdef", count: 3),
            "0000000000100000" + String(repeating: "0", count: 48), 43, 212
        ),
        (
            String(repeating: "00ff", count: 16), String(repeating: "0f0f", count: 16),
            String(repeating: "0ff0", count: 16), 4, 251
        ),
        // A key and itself: distance zero, no bucket.
        (
            String(repeating: "5a", count: 32), String(repeating: "5a", count: 32), String(repeating: "00", count: 32),
            256, nil
        ),
    ]

    @Test("XOR distance, common prefix length, bucket index", arguments: 0..<vectors.count)
    func distance(index: Int) {
        let (a, b, xor, prefix, bucket) = Self.vectors[index]
        let keyA = KadFixtures.key(a)
        let keyB = KadFixtures.key(b)
        #expect(keyA.distance(to: keyB).description == xor)
        #expect(keyB.distance(to: keyA) == keyA.distance(to: keyB))
        #expect(keyA.commonPrefixLength(with: keyB) == prefix)
        #expect(keyA.distance(to: keyB).leadingZeroBitCount == prefix)
        #expect(keyA.distance(to: keyB).bucketIndex == bucket)
        #expect(keyA.moved(by: keyA.distance(to: keyB)) == keyB)
    }

    @Test("distances order as 256-bit unsigned integers, most significant word first")
    func ordering() {
        let zero = KadFixtures.key(String(repeating: "00", count: 32))
        let two = KadFixtures.key(String(repeating: "00", count: 31) + "02")
        let three = KadFixtures.key(String(repeating: "00", count: 31) + "03")
        let highWord = KadFixtures.key("0000000000000001" + String(repeating: "00", count: 24))
        let lowWordMax = KadFixtures.key(String(repeating: "00", count: 8) + String(repeating: "ff", count: 24))
        #expect(zero.isCloser(two, than: three))
        #expect(!zero.isCloser(three, than: two))
        #expect(!zero.isCloser(two, than: two))
        #expect(zero.distance(to: lowWordMax) < zero.distance(to: highWord))
        // Relative to a non-zero target the order changes: 3 XOR 3 = 0 is closest.
        #expect(three.isCloser(three, than: two))
        #expect(three.isCloser(two, than: zero))
        #expect(KademliaDistance.zero < zero.distance(to: two))
    }

    @Test("bits are numbered from the least significant")
    func bits() {
        let distance = KadFixtures.key(String(repeating: "00", count: 32)).distance(
            to: KadFixtures.key("80" + String(repeating: "00", count: 23) + "0100000000000001"))
        #expect(distance.bit(0))
        #expect(!distance.bit(1))
        #expect(distance.bit(56))
        #expect(distance.bit(255))
        #expect(!distance.bit(254))
    }

    @Test("a random key for bucket i lies in bucket i, for every i")
    func randomKeyInBucket() {
        var generator = SeededGenerator(seed: 0x6b65_7973)
        let origin = KademliaKey.random(using: &generator)
        for bucket in 0..<KademliaKey.bitCount {
            var seen = Set<KademliaKey>()
            for _ in 0..<4 {
                let key = KademliaKey.random(inBucket: bucket, from: origin, using: &generator)
                #expect(origin.distance(to: key).bucketIndex == bucket, "bucket \(bucket)")
                seen.insert(key)
            }
            // Bucket 0 holds one key and bucket 1 two; from bucket 16 on, four draws all differ.
            if bucket >= 16 { #expect(seen.count == 4, "bucket \(bucket) keys are not random") }
        }
    }
}
