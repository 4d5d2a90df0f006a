import AgentTesting
import Identity
import Resolution
import Testing

@testable import Application

/// The vectors of spec/tools/agent_card.py (spec/cards.md §10): every byte and every verdict must
/// agree with the reference implementation.
@Suite("capability card vectors from the reference implementation")
struct CardVectorTests {
    @Test("cards: JSON in, exact card bytes, signature and signed card out; decoded back", arguments: try TestVectors.array("cards.json", "cards"))
    func card(vector: Vector) throws {
        let key = try Ed25519.PrivateKey(seed: try vector.hex("seed_hex"))
        #expect(key.publicKey.rawRepresentation == (try vector.hex("public_key_hex")))
        let card = try CapabilityCard(json: try JSONValue(parsing: try vector.string("card_json")))
        let agent = try AgentName(canonical: try vector.string("agent"))
        let timestamp = try #require(UInt64(try vector.string("timestamp")))
        let signed = try SignedCapabilityCard(card: card, agent: agent, timestamp: timestamp, signedWith: key)
        #expect(signed.cardBytes == (try vector.hex("card_hex")))
        #expect(signed.signature == (try vector.hex("signature_hex")))
        #expect(signed.bytes == (try vector.hex("signed_hex")))
        #expect(CapabilityCard.providerKey(capability: card.name) == (try vector.hex("provider_key_hex")))
        let decoded = try SignedCapabilityCard(bytes: try vector.hex("signed_hex"))
        #expect(decoded == signed)
        #expect(decoded.card == card)
        try decoded.verify(agent: agent, capability: card.name, now: timestamp, key: key.publicKey)
        // The JSON form round-trips to the same card.
        #expect(try CapabilityCard(json: card.json) == card)
    }

    @Test("decoding and checking: the same verdict", arguments: try TestVectors.array("cards.json", "decoding"))
    func decoding(vector: Vector) throws {
        let bytes = try vector.hex("signed_hex")
        let now = try #require(UInt64(try vector.string("now")))
        let agentText = try vector.string("expected_agent")
        let capability = try vector.string("expected_capability")
        let keyHex = try vector.hex("key_hex")
        let expected = try vector.string("expected")
        let label = try vector.string("name")
        let agent = agentText.isEmpty ? nil : try AgentName(canonical: agentText)
        let key = keyHex.isEmpty ? nil : try Ed25519.PublicKey(rawRepresentation: keyHex)
        do throws(CardError) {
            let card = try SignedCapabilityCard(bytes: bytes)
            try card.verify(agent: agent, capability: capability.isEmpty ? nil : capability, now: now, key: key)
            #expect(expected == "valid", "\(label): valid here, expected \(expected)")
        } catch {
            #expect(error.kind.rawValue == expected, "\(label): \(error.message)")
        }
    }

    @Test("versions: the same verdict", arguments: try TestVectors.array("cards.json", "versions"))
    func version(vector: Vector) throws {
        let text = try vector.string("text")
        let expected = try vector.string("expected")
        do throws(CardError) {
            let version = try SemanticVersion(text)
            #expect(expected == "valid", "\(text)")
            #expect(version.description == text)
        } catch {
            #expect(error.kind.rawValue == expected, "\(text): \(error.message)")
        }
    }

    @Test("precedence: the listed versions ascend")
    func order() throws {
        let versions = try TestVectors.strings("cards.json", "order").map { try SemanticVersion($0) }
        for (lower, higher) in zip(versions, versions.dropFirst()) {
            #expect(lower < higher, "\(lower) < \(higher)")
            #expect(!(higher < lower))
        }
        #expect(try SemanticVersion("1.0.0+a").hasSamePrecedence(as: try SemanticVersion("1.0.0+b")))
    }

    @Test("ranges: the same containment, the same refusals", arguments: try TestVectors.array("cards.json", "ranges"))
    func range(vector: Vector) throws {
        let text = try vector.string("range")
        let expected = try vector.string("expected")
        let versionText = try vector.string("version")
        do throws(CardError) {
            let range = try VersionRange(text)
            let version = try SemanticVersion(versionText)
            #expect(range.contains(version) == (expected == "true"), "\(text) ∋ \(version): expected \(expected)")
        } catch {
            #expect(error.kind.rawValue == expected, "\(text): \(error.message)")
        }
    }
}
