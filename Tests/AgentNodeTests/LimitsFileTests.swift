import AgentTesting
import Foundation
import Network
import Resolution
import Testing

@testable import AgentNode

@Suite("agentd --limits FILE: parsing, and clear errors for a bad file")
struct LimitsFileTests {
    @Test("a file raises and lowers the limits it names; the rest keep their defaults")
    func applies() throws {
        let limits = try LimitsFile.parse(
            Array(#"{"ip": {"connections": 64, "pending_handshakes": 16}, "system": {"memory": 2147483648}}"#.utf8))
        #expect(limits.ipConnections == 64)
        #expect(limits.ipPendingHandshakes == 16)
        #expect(limits.systemMemory == 2_147_483_648)
        var expected = ResourceLimits()
        expected.ipConnections = 64
        expected.ipPendingHandshakes = 16
        expected.systemMemory = 2_147_483_648
        #expect(limits == expected)
        #expect(try LimitsFile.parse(Array("{}".utf8)) == ResourceLimits())
    }

    @Test("the dht scope sets the routing table's subnet limits and the loopback exemption")
    func dhtScope() throws {
        var dht = DHTConfiguration()
        let limits = try LimitsFile.parse(
            Array(#"{"dht": {"subnet_entries_per_bucket": 20, "subnet_entries": 1024, "loopback_exempt": 0}, "ip": {"connections": 8}}"#.utf8),
            dht: &dht)
        #expect(dht.routingTable.maximumEntriesPerSubnetPerBucket == 20)
        #expect(dht.routingTable.maximumEntriesPerSubnet == 1024)
        #expect(dht.loopbackExemption == .never)
        #expect(limits.ipConnections == 8)
        _ = try LimitsFile.parse(Array(#"{"dht": {"loopback_exempt": 1}}"#.utf8), dht: &dht)
        #expect(dht.loopbackExemption == .always)
        var untouched = DHTConfiguration()
        _ = try LimitsFile.parse(Array(#"{"ip": {"connections": 8}}"#.utf8), dht: &untouched)
        #expect(untouched.loopbackExemption == .whenLoopbackOnly)
        #expect(untouched.routingTable.maximumEntriesPerSubnetPerBucket == 2)
        #expect(untouched.routingTable.maximumEntriesPerSubnet == 10)
    }

    @Test(
        "a bad file is refused with a message that names the problem",
        arguments: [
            ("", "not valid JSON"), ("{", "not valid JSON"), ("[]", "one object per scope"),
            ("42", "one object per scope"), (#"{"ip": 8}"#, "must map to an object"),
            (#"{"sytem": {"connections": 1}}"#, "unknown scope \"sytem\""),
            (#"{"ip": {"conections": 1}}"#, "unknown resource \"conections\""),
            (#"{"sytem": {"connections": 1}}"#, "stream, dht"),
            (#"{"dht": {"subnet_entries": 0}}"#, "dht.subnet_entries must be at least 1"),
            (#"{"dht": {"subnet_entries_per_bucket": -2}}"#, "at least 1"),
            (#"{"dht": {"loopback_exempt": 2}}"#, "must be 0 or 1"),
            (#"{"dht": {"subnets": 2}}"#, "unknown resource \"subnets\" in scope dht"),
            (#"{"dht": {"subnet_entries": "10"}}"#, "a string"),
            (#"{"ip": {"memory": 1}}"#, "unknown resource \"memory\" in scope ip"),
            (#"{"ip": {"connections": -1}}"#, "at least 1"), (#"{"ip": {"connections": 0}}"#, "at least 1"),
            (#"{"ip": {"connections": "8"}}"#, "a string"), (#"{"ip": {"connections": true}}"#, "a boolean"),
            (#"{"ip": {"connections": 8.5}}"#, "whole number"), (#"{"ip": {"connections": null}}"#, "null"),
            (#"{"ip": {"connections": [8]}}"#, "an array"),
            (#"{"ip": {"connections": 18446744073709551615}}"#, "whole number"),
            (#"{"ip": {"connections": 1e400}}"#, "not valid JSON"),
            (#"{"a": {"b": {"c": {"d": {"e": 1}}}}}"#, "not valid JSON"),
            ("{\"ip\u{0}\": {\"connections\": 1}}", "not valid JSON"),  // a raw control character
            (#"{"ip\u0000": {"connections": 1}}"#, "unknown scope \"ip?\""),  // an escaped one
        ])
    func refuses(_ text: String, _ fragment: String) {
        #expect {
            try LimitsFile.parse(Array(text.utf8))
        } throws: { error in
            guard let error = error as? NodeError, error.kind == .invalidConfiguration else { return false }
            return error.message.contains(fragment) && !error.message.contains("\u{0}") && error.message.count < 300
        }
    }

    @Test("5,000 seeded mutations of a valid file: limits or a clear error, never a crash")
    func hostile() {
        var generator = SeededGenerator(seed: 1010)
        let seed = Array(
            #"{"ip": {"connections": 64}, "subnet": {"pending_handshakes": 40}, "system": {"memory": 1073741824}}"#.utf8
        )
        for _ in 0..<5000 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...6, using: &generator) { bytes = generator.mutate(bytes) }
            do {
                let limits = try LimitsFile.parse(bytes)
                for entry in ResourceLimits.Entry.allCases { #expect(limits[entry] >= 1) }
            } catch {
                #expect(error.kind == .invalidConfiguration)
            }
        }
    }

    @Test("a file that is missing, too large or a directory is a file-system error naming it")
    func files() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("limits-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: NodeError.self) { try LimitsFile.load(directory + "/absent.json") }
        #expect(throws: NodeError.self) { try LimitsFile.load(directory) }
        let large = directory + "/large.json"
        try Data(repeating: 0x20, count: LimitsFile.maximumSize + 1).write(to: URL(fileURLWithPath: large))
        #expect(throws: NodeError.self) { try LimitsFile.load(large) }
        let good = directory + "/good.json"
        try Data(#"{"subnet": {"connections": 100}}"#.utf8).write(to: URL(fileURLWithPath: good))
        #expect(try LimitsFile.load(good).subnetConnections == 100)
    }
}
