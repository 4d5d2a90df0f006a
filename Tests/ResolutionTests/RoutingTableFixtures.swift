import AgentTesting
import Identity
import Multiformats
import NIOCore
import Resolution

/// Peers, keys and times for the routing table and lookup tests; everything random comes from a
/// `SeededGenerator`, so a failure reproduces from its seed.
enum KadFixtures {
    /// The virtual clock's origin.
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    /// A random (sha2-256) peer id.
    static func peerID(using generator: inout SeededGenerator) -> PeerID {
        try! PeerID(multihash: Multihash(code: Multicodec.sha2_256, digest: generator.bytes(32)))
    }

    static func peer(using generator: inout SeededGenerator, addresses: [Multiaddr] = []) -> KademliaPeer {
        KademliaPeer(id: peerID(using: &generator), addresses: addresses)
    }

    /// A random peer whose key falls in bucket `bucket` of `origin` (found by trying ids).
    static func peer(inBucket bucket: Int, of origin: KademliaKey, using generator: inout SeededGenerator)
        -> KademliaPeer
    {
        while true {
            let candidate = peer(using: &generator)
            if origin.distance(to: candidate.key).bucketIndex == bucket { return candidate }
        }
    }

    /// `/ip4/10.x.y.1/tcp/4001`: each number (mod 65,536) a host in its own /24, so that many of
    /// them stay within the routing table's subnet limits.
    static func address(_ number: Int) -> Multiaddr {
        Multiaddr([.ip4(IPv4Address(0x0a00_0001 | UInt32(number & 0xffff) << 8)), .tcp(4001)])
    }

    /// A key from 64 hex digits.
    static func key(_ hex: String) -> KademliaKey {
        let digits = Array(hex.utf8)
        precondition(digits.count == 64, "a key is 64 hex digits")
        let bytes = stride(from: 0, to: 64, by: 2).map {
            UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
        return KademliaKey(bytes: bytes)!
    }
}
