import AgentTesting
import Identity
import Testing

@testable import Resolution

/// The vectors of spec/tools/agent_record.py, an independent implementation of spec/records.md
/// written from the spec alone: every byte and every decision must agree.
@Suite("record vectors from the independent reference implementation")
struct RecordVectorTests {
    static func records() throws -> [String: Vector] {
        Dictionary(uniqueKeysWithValues: try TestVectors.array("records.json", "records").map { ($0["name"]!, $0) })
    }

    static func expectedKind(_ expected: String) -> ResolutionError.Kind? {
        expected == "valid" ? nil : ResolutionError.Kind(rawValue: expected)
    }

    @Test("records: name, keys, exact bytes, verdict", arguments: try TestVectors.array("records.json", "records"))
    func record(vector: Vector) throws {
        let bytes = try vector.hex("record_hex")
        let now = try #require(UInt64(try vector.string("now")))
        let decoded = try SignedAgentRecord(bytes: bytes)
        let name = try AgentName(canonical: try vector.string("canonical_name"))
        #expect(decoded.record.name == name)
        #expect(name.recordKey == (try vector.hex("record_key_hex")))
        #expect(name.dhtKey == (try vector.hex("dht_key_hex")))
        #expect(Array(bytes.prefix(bytes.count - 64)) == (try vector.hex("body_hex")))
        #expect(decoded.signature == (try vector.hex("signature_hex")))
        // Our encoder produces the same bytes from the decoded content (canonical encoding).
        var body: [UInt8] = []
        try decoded.record.encodeBody(into: &body)
        #expect(body == (try vector.hex("body_hex")))
        let expected = Self.expectedKind(try vector.string("expected"))
        do {
            try decoded.validate(now: now)
            #expect(expected == nil, "\(vector): valid here, expected \(expected?.rawValue ?? "")")
        } catch {
            #expect(error.kind == expected, "\(vector): \(error.message)")
        }
    }

    @Test("tampered bytes are refused with the same kind", arguments: try TestVectors.array("records.json", "tampered"))
    func tampered(vector: Vector) throws {
        let bytes = try vector.hex("record_hex")
        let now = try #require(UInt64(try vector.string("now")))
        let expected = Self.expectedKind(try vector.string("expected"))
        do {
            let decoded = try SignedAgentRecord(bytes: bytes)
            try decoded.validate(now: now)
            #expect(expected == nil, "\(vector) validated, expected \(expected?.rawValue ?? "")")
        } catch {
            #expect(error.kind == expected, "\(vector): \(error.message)")
        }
    }

    @Test("ownership decisions agree", arguments: try TestVectors.array("records.json", "selection"))
    func selection(vector: Vector) throws {
        let records = try Self.records()
        let incoming = try SignedAgentRecord(bytes: try #require(records[try vector.string("incoming")]).hex("record_hex"))
        let existing = try vector["existing"].map { name in
            try SignedAgentRecord(bytes: try #require(records[name]).hex("record_hex"))
        }
        let now = try #require(UInt64(try vector.string("now")))
        let decision = RecordSelection.select(existing: existing, incoming: incoming, now: now)
        let (verdict, reason) = try Self.expectedDecision(vector)
        switch decision {
        case .accept(let acceptance):
            #expect(verdict == "accept" && acceptance.rawValue == reason, "\(vector): accepted \(acceptance)")
        case .reject(let error):
            #expect(verdict == "reject" && error.kind.rawValue == reason, "\(vector): \(error.message)")
        }
    }

    /// `expected` is a two-element JSON array; Vector flattens only strings, so read it raw.
    static func expectedDecision(_ vector: Vector) throws -> (String, String) {
        let selection = try TestVectors.load("records.json")["selection"] as? [[String: Any]] ?? []
        let entry = try #require(selection.first { $0["name"] as? String == vector["name"] })
        let pair = try #require(entry["expected"] as? [String])
        return (pair[0], pair[1])
    }

    @Test("the reference implementation agrees with the vector file", .enabled(if: Python.available))
    func referenceCheck() async throws {
        let script = TestVectors.repositoryRoot.appendingPathComponent("spec/tools/agent_record.py").path
        let result = try await ProcessRunner.run(try Python.executable(), [script, "--check"])
        #expect(result.status == 0, "\(result.stdoutText)\(result.stderr)")
        #expect(result.stdoutText.contains("0 failed"))
    }
}
