import AgentTesting
import Foundation
import Identity
import Resolution
import Testing

@testable import Application

/// Cards without a network: the JSON form, limits, signing, the store, hostile bytes.
@Suite("capability cards")
struct CardTests {
    static let alice = try! AgentName("alice.agent")
    static let key = try! Ed25519.PrivateKey(seed: [UInt8](repeating: 7, count: 32))

    static func kind(_ body: () throws -> Void) -> CardError.Kind? {
        do {
            try body()
            return nil
        } catch let error as CardError {
            return error.kind
        } catch {
            Issue.record("not a CardError: \(error)")
            return nil
        }
    }

    static func parse(_ text: String) throws -> CapabilityCard {
        try CapabilityCard(json: try JSONValue(parsing: text))
    }

    @Test("the JSON form is parsed strictly, each refusal with its kind")
    func json() throws {
        #expect(try Self.parse(#"{"name":"ocr","version":"1.0.0"}"#) == CapabilityCard(name: "ocr", version: try SemanticVersion("1.0.0")))
        let cases: [(String, CardError.Kind)] = [
            (#"{"version":"1.0.0"}"#, .malformed),
            (#"{"name":"ocr"}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","extra":1}"#, .malformed),
            (#"{"name":"OCR","version":"1.0.0"}"#, .invalidCapability),
            (#"{"name":"ocr","version":"1.0"}"#, .invalidVersion),
            (#"{"name":"ocr","version":1}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","interfaces":{}}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","interfaces":[{"methods":[]}]}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","interfaces":[{"name":"I","methods":[{"name":"m","parameters":[{"name":"p"}]}]}]}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","interfaces":[{"name":"I","methods":[{"name":"m","returns":[{"name":"9","type":"t"}]}]}]}"#, .malformed),
            (#"{"name":"ocr","version":"1.0.0","documentation":"javascript:alert(1)"}"#, .malformed),
            (#"[]"#, .malformed),
        ]
        for (text, expected) in cases {
            #expect(Self.kind { _ = try Self.parse(text) } == expected, "\(text)")
        }
    }

    @Test("a card over 16384 bytes signed is refused as oversized; one at the limits of each count fits")
    func size() throws {
        let field = CapabilityCard.Field(name: "p", type: "t", description: String(repeating: "d", count: 256))
        let method = CapabilityCard.Method(
            name: "m", parameters: Array(repeating: field, count: 16), returns: Array(repeating: field, count: 16))
        var card = CapabilityCard(
            name: "big", version: try SemanticVersion("1.0.0"),
            interfaces: [CapabilityCard.Interface(name: "I", methods: [method])])
        #expect(try SignedCapabilityCard(card: card, agent: Self.alice, timestamp: 1, signedWith: Self.key).bytes.count < 16384)
        card.interfaces = Array(repeating: CapabilityCard.Interface(name: "I", methods: [method, method]), count: 2)
        #expect(Self.kind { _ = try SignedCapabilityCard(card: card, agent: Self.alice, timestamp: 1, signedWith: Self.key) } == .oversized)
        card.interfaces = Array(repeating: CapabilityCard.Interface(name: "I"), count: 17)
        #expect(Self.kind { _ = try SignedCapabilityCard(card: card, agent: Self.alice, timestamp: 1, signedWith: Self.key) } == .malformed)
        // The decoder refuses more than 16384 bytes before reading them.
        #expect(Self.kind { _ = try SignedCapabilityCard(bytes: [UInt8](repeating: 0, count: 16385)) } == .oversized)
    }

    @Test("ranges: limits and the pre-release rule")
    func ranges() throws {
        #expect(Self.kind { _ = try VersionRange(String(repeating: "1 ", count: 129)) } == .invalidRange)
        #expect(Self.kind { _ = try VersionRange("^1.2\u{0}") } == .invalidRange)
        let range = try VersionRange("^1.2.3-beta.2 || 3.0.0-rc.1")
        #expect(range.contains(try SemanticVersion("3.0.0-rc.1")))
        #expect(!range.contains(try SemanticVersion("3.0.0-rc.2")))
        #expect(range.contains(try SemanticVersion("1.2.3-beta.10")))
        #expect(!range.contains(try SemanticVersion("1.2.4-beta.10")))
        #expect(Self.kind { _ = try VersionRange("^18446744073709551615") } == .invalidRange)
        #expect(VersionRange.any.contains(try SemanticVersion("18446744073709551615.18446744073709551615.0")))
    }

    @Test("the store keeps cards across reopening, replaces by capability, and caps each agent at 64")
    func store() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cards-\(UInt64.random(in: 0...UInt64.max)).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        func card(_ name: String, _ version: String) throws -> SignedCapabilityCard {
            try SignedCapabilityCard(
                card: CapabilityCard(name: name, version: try SemanticVersion(version)), agent: Self.alice, timestamp: 1,
                signedWith: Self.key)
        }
        do {
            let store = try CardStore(path: path)
            try store.put(try card("ocr", "1.0.0"))
            try store.put(try card("ocr", "1.1.0"))
            try store.put(try card("asr", "0.1.0"))
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let reopened = try CardStore(path: path)
        #expect(try reopened.cards().map(\.card.name) == ["asr", "ocr"])
        #expect(try reopened.cards().last?.card.version.description == "1.1.0")
        #expect(try reopened.cards(of: try AgentName("bob.agent")).isEmpty)
        for index in 0..<62 { try reopened.put(try card("c\(index)", "1.0.0")) }
        #expect(Self.kind { try reopened.put(try card("one-too-many", "1.0.0")) } == .tooManyCards)
        // Replacing one of the 64 is still allowed.
        try reopened.put(try card("ocr", "2.0.0"))
        #expect(try reopened.remove(agent: Self.alice, capability: "ocr"))
        #expect(try reopened.cards().count == 63)
    }

    @Test("10,000 seeded mutations of a signed card: refused with a kind or still verifying, never a crash")
    func mutations() throws {
        let card = CapabilityCard(
            name: "translate", version: try SemanticVersion("1.2.0-rc.1+b"), description: "d",
            interfaces: [.init(name: "T", methods: [.init(name: "m", parameters: [.init(name: "p", type: "string")])])],
            documentation: "https://example.org")
        let signed = try SignedCapabilityCard(card: card, agent: Self.alice, timestamp: 1_800_000_000, signedWith: Self.key)
        var generator = SeededGenerator(seed: 0xCA4D)
        var verified = 0
        for _ in 0..<10_000 {
            let bytes = generator.mutate(signed.bytes)
            do {
                let decoded = try SignedCapabilityCard(bytes: bytes)
                try decoded.verify(agent: nil, capability: nil, now: 1_800_000_000, key: Self.key.publicKey)
                // Only the original bytes verify (a canonical encoding has one form).
                #expect(decoded.bytes == signed.bytes)
                verified += 1
            } catch {
                #expect(CardError.Kind.allCases.contains(error.kind))
            }
        }
        #expect(verified < 10_000)
    }
}
