import Identity
import Testing

@testable import Resolution

@Suite(".agent names")
struct AgentNameTests {
    @Test(
        "valid names are normalised to lower case with the suffix",
        arguments: [
            ("alice", "alice.agent"), ("Alice.Agent", "alice.agent"), ("ALICE.AGENT", "alice.agent"),
            ("ops.alice", "ops.alice.agent"), ("a-b-c.agent", "a-b-c.agent"), ("0", "0.agent"),
            (String(repeating: "a", count: 63), String(repeating: "a", count: 63) + ".agent"),
        ])
    func valid(input: String, expected: String) throws {
        #expect(try AgentName(input).value == expected)
        #expect(try AgentName(canonical: expected).value == expected)
    }

    @Test(
        "invalid names are refused, each with its reason",
        arguments: [
            "", ".agent", "-alice", "alice-", "al_ice", "al ice", "alice..agent", ".alice", "alice.",
            "ålice", "alice/x", "\u{212A}ate", "\u{0130}stanbul", String(repeating: "a", count: 64),
            Array(repeating: String(repeating: "a", count: 60), count: 5).joined(separator: "."),
        ])
    func invalid(input: String) {
        #expect(throws: ResolutionError.self, "\(input)") { try AgentName(input) }
        do { _ = try AgentName(input) } catch { #expect(error.kind == .invalidName && error.message.contains("name")) }
    }

    @Test("wire names must already be canonical")
    func canonical() {
        #expect(throws: ResolutionError.self) { try AgentName(canonical: "Alice.agent") }
        #expect(throws: ResolutionError.self) { try AgentName(canonical: "alice") }
    }

    @Test("DHT key is SHA-256 of /agent/<name>")
    func dhtKey() throws {
        let name = try AgentName("Alice")
        #expect(name.recordKey == Array("/agent/alice.agent".utf8))
        #expect(name.dhtKey == SHA256.hash(Array("/agent/alice.agent".utf8)))
    }

    @Test("a base36 CIDv1 peer id label is a self-certifying name; it fits a DNS label")
    func selfCertifying() throws {
        let peerID = PeerID(publicKey: Fixtures.alice.publicKey)
        let name = AgentName(selfCertifying: peerID)
        #expect(name.value.count <= 63 + ".agent".count)
        #expect(try AgentName(name.value) == name)
        #expect(try AgentName(name.value.uppercased()) == name)
        #expect(name.selfCertifyingPeerID == peerID)
        #expect(try AgentName("kate").selfCertifyingPeerID == nil)
        #expect(try AgentName("alice").selfCertifyingPeerID == nil)
    }
}
