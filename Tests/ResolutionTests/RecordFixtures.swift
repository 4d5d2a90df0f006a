import Identity
import Multiformats

@testable import Resolution

/// Keys and records for the record tests: fixed seeds, a fixed clock.
enum Fixtures {
    /// 2026-01-01T00:00:00Z.
    static let now: UInt64 = 1_767_225_600
    static let alice = try! Ed25519.PrivateKey(seed: [UInt8](repeating: 1, count: 32))
    static let bob = try! Ed25519.PrivateKey(seed: [UInt8](repeating: 2, count: 32))
    static let carol = try! Ed25519.PrivateKey(seed: [UInt8](repeating: 3, count: 32))
    static let name = try! AgentName("alice.agent")

    static func record(
        _ key: Ed25519.PrivateKey = alice, name: AgentName = name, seq: UInt64 = 1, timestamp: UInt64 = now,
        ttl: UInt32 = 3600, addresses: [String] = ["/ip4/127.0.0.1/tcp/4001"], protocols: [String] = ["/agent/msg/1.0.0"],
        rotation: RecordRotation? = nil
    ) -> SignedAgentRecord {
        let record = AgentRecord(
            name: name, publicKey: key.publicKey, seq: seq, timestamp: timestamp, ttl: ttl,
            addresses: addresses.map { try! Multiaddr($0) }, protocols: protocols, rotation: rotation)
        return try! record.signed(with: key)
    }
}
