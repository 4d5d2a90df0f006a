import AgentTesting
import Foundation
import Identity
import Resolution
import Testing

@testable import Application

/// The vectors of spec/tools/agent_message.py, the reference implementation of spec/messages.md:
/// every byte, every signature, every JSON form and every verdict must agree.
@Suite("message vectors from the reference implementation")
struct MessageVectorTests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String
        let fields: [String: String]
        let context: Context
        var description: String { name }
    }

    struct Context: Sendable {
        let now: UInt64
        let local: Set<String>
        let keys: [String: String]
        let seen: [[String]]
        let floor: UInt64
    }

    static func cases(_ key: String) throws -> [Case] {
        guard let entries = try TestVectors.load("messages.json")[key] as? [[String: Any]] else {
            throw VectorError("messages.json has no \(key)")
        }
        return try entries.map { entry in
            guard let context = entry["context"] as? [String: Any], let now = context["now_ms"] as? NSNumber,
                let local = context["local"] as? [String]
            else { throw VectorError("vector without context: \(entry)") }
            return Case(
                name: entry["name"] as? String ?? "?",
                fields: entry.compactMapValues { $0 as? String },
                context: Context(
                    now: now.uint64Value, local: Set(local), keys: context["keys"] as? [String: String] ?? [:],
                    seen: context["seen"] as? [[String]] ?? [],
                    floor: (context["floor_ms"] as? NSNumber)?.uint64Value ?? 0))
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        let keys = try TestVectors.load("messages.json")["keys"] as? [[String: String]] ?? []
        return try Dictionary(uniqueKeysWithValues: keys.map { ($0["who"]!, try Hex.decode($0["seed_hex"]!)) })
    }

    /// spec/messages.md §5.1 rules 1–7 in order, as a receiver applies them.
    static func verdict(_ bytes: [UInt8], _ context: Context) -> String {
        do throws(MessageError) {
            let signed = try SignedAgentMessage(bytes: bytes)
            let message = signed.message
            try MessageAcceptance.checkAddressAndTime(
                message, serves: { context.local.contains($0.value) }, now: context.now)
            let key: Ed25519.PublicKey
            if let own = SignedAgentMessage.selfCertifyingKey(of: message.sender) {
                key = own
            } else if let hex = context.keys[message.sender.value] {
                key = try! Ed25519.PublicKey(rawRepresentation: try! Hex.decode(hex))
            } else {
                throw MessageError(.unknownSender, "no key")
            }
            try MessageAcceptance.checkSignature(signed, key: key)
            var replay = ReplayGuard(floor: context.floor)
            for pair in context.seen {
                try! replay.admit(
                    sender: AgentName(canonical: pair[0]), id: MessageID(pair[1]), timestamp: context.now,
                    now: context.now)
            }
            try replay.admit(sender: message.sender, id: message.id, timestamp: message.timestamp, now: context.now)
            return "accepted"
        } catch {
            return error.kind.rawValue
        }
    }

    @Test(
        "valid messages: exact envelope, signature and signed bytes; JSON form; accepted", arguments: try cases("valid")
    )
    func valid(vector: Case) throws {
        let signedBytes = try Hex.decode(try #require(vector.fields["signed_hex"]))
        let envelope = try Hex.decode(try #require(vector.fields["envelope_hex"]))
        let signatureBytes = try Hex.decode(try #require(vector.fields["signature_hex"]))
        let decoded = try SignedAgentMessage(bytes: signedBytes)
        #expect(decoded.envelope == envelope)
        #expect(decoded.signature == signatureBytes)
        #expect(try decoded.message.encoded() == envelope, "re-encoding gives the same bytes")
        // Signing the decoded message again (Ed25519 is deterministic) gives the same bytes.
        let signer = try #require(vector.fields["signer"])
        let seed = try #require(try Self.seeds()[signer])
        let resigned = try SignedAgentMessage(signing: decoded.message, with: try Ed25519.PrivateKey(seed: seed))
        #expect(resigned.bytes == signedBytes)
        // The JSON form, compared as values, and back to the same envelope.
        let expectedJSON = try JSONValue(parsing: try #require(vector.fields["json_text"]))
        #expect(decoded.message.json == expectedJSON)
        #expect(try AgentMessage(json: expectedJSON).encoded() == envelope, "JSON form reads back to the same bytes")
        #expect(Self.verdict(signedBytes, vector.context) == "accepted")
    }

    @Test("invalid inputs are refused with the expected kind", arguments: try cases("invalid"))
    func invalid(vector: Case) throws {
        let bytes = try Hex.decode(try #require(vector.fields["signed_hex"]))
        #expect(Self.verdict(bytes, vector.context) == vector.fields["expected"])
    }

    @Test("ids: bytes and 26-character text both ways")
    func ids() throws {
        for vector in try TestVectors.array("messages.json", "ids") {
            let id = try MessageID(bytes: try vector.hex("hex"))
            #expect(id.description == (try vector.string("text")))
            #expect(try MessageID(try vector.string("text")) == id)
            #expect(try MessageID(try vector.string("text").lowercased()) == id)
            #expect(id.bytes == (try vector.hex("hex")))
        }
        for text in try TestVectors.strings("messages.json", "invalid_id_texts") {
            #expect(throws: MessageError.self, "\(text.debugDescription)") { try MessageID(text) }
        }
    }

    @Test("the reference implementation agrees with the vector file", .enabled(if: Python.available))
    func referenceCheck() async throws {
        let script = TestVectors.repositoryRoot.appendingPathComponent("spec/tools/agent_message.py").path
        let result = try await ProcessRunner.run(try Python.executable(), [script, "--check"])
        #expect(result.status == 0, "\(result.stdoutText)\(result.stderr)")
        #expect(result.stdoutText.contains(" 0 failed"))
    }
}
