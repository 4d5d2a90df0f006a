import AgentTesting
import Foundation
import Testing

/// Capability cards across real agentd processes: `agentctl card set` on one node, `agentctl find`
/// and `agentctl card get` from another (spec/cards.md).
@Suite("capability cards across agentd processes", .serialized, .timeLimit(.minutes(2)))
struct CardProcessTests {
    static let card = """
        {"name": "translate", "version": "1.2.0", "description": "Translates text.",
         "interfaces": [{"name": "Translator", "methods": [{"name": "translate",
           "parameters": [{"name": "text", "type": "string"}], "returns": [{"name": "translation", "type": "string"}]}]}],
         "documentation": "https://example.org/translate"}
        """

    func agentctl(_ node: DHTProcessTests.Node, _ arguments: [String]) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(
            ProcessRunner.executable("agentctl"), arguments + ["--data-dir", node.dataDir, "--timeout", "20"])
    }

    @Test("a card set on one agentd is found by capability and version range, and fetched by name, from another")
    func setFindGet() async throws {
        try await DHTProcessTests.withNetwork(of: 3) { nodes in
            let file = nodes[0].dataDir + "/translate.json"
            try Data(Self.card.utf8).write(to: URL(fileURLWithPath: file))
            let set = try await agentctl(nodes[0], ["card", "set", file, "--json"])
            #expect(set.status == 0, "\(set.stderr)")
            let signed = try set.json()
            #expect(signed["agent"] as? String == "node-1.agent")
            #expect((signed["card"] as? [String: Any])?["version"] as? String == "1.2.0")

            let newer = Self.card.replacingOccurrences(of: "1.2.0", with: "2.1.0")
            let file2 = nodes[1].dataDir + "/translate.json"
            try Data(newer.utf8).write(to: URL(fileURLWithPath: file2))
            let set2 = try await agentctl(nodes[1], ["card", "set", file2, "--name", "node-2"])
            #expect(set2.status == 0, "\(set2.stderr)")
            #expect(set2.stdoutText.contains("translate 2.1.0"), "\(set2.stdoutText)")

            let found = try await agentctl(nodes[2], ["find", "--capability", "translate", "--json"])
            #expect(found.status == 0, "\(found.stderr)")
            let agents = try #require(try found.json()["agents"] as? [[String: String]])
            #expect(
                agents == [
                    ["name": "node-1.agent", "peer_id": nodes[0].peerID, "capability": "translate", "version": "1.2.0"],
                    ["name": "node-2.agent", "peer_id": nodes[1].peerID, "capability": "translate", "version": "2.1.0"],
                ])
            let major2 = try await agentctl(nodes[2], ["find", "--capability", "translate", "--version", "^2", "--json"])
            #expect((try major2.json()["agents"] as? [[String: String]])?.map { $0["name"] } == ["node-2.agent"])
            let human = try await agentctl(nodes[2], ["find", "--capability", "translate", "--version", ">=1.0 <2.0"])
            #expect(human.status == 0)
            #expect(human.stdoutText == "node-1.agent  1.2.0  \(nodes[0].peerID)\n")
            let none = try await agentctl(nodes[2], ["find", "--capability", "summarize", "--json"])
            #expect(none.status == 1)
            #expect((try none.json()["agents"] as? [Any])?.isEmpty == true)

            let get = try await agentctl(nodes[2], ["card", "get", "node-1.agent", "--json"])
            #expect(get.status == 0, "\(get.stderr)")
            let got = try get.json()
            #expect(got["peer_id"] as? String == nodes[0].peerID)
            #expect((got["dropped"] as? [Any])?.isEmpty == true)
            let cards = try #require(got["cards"] as? [[String: Any]])
            #expect(cards.count == 1)
            let expected = try JSONSerialization.jsonObject(with: Data(Self.card.utf8)) as? NSDictionary
            #expect(cards.first?["card"] as? NSDictionary == expected)

            // Bad input: exit 2 with the kind, nothing sent.
            let bad = nodes[0].dataDir + "/bad.json"
            try Data(Self.card.replacingOccurrences(of: "1.2.0", with: "1.2").utf8).write(to: URL(fileURLWithPath: bad))
            let refused = try await agentctl(nodes[0], ["card", "set", bad, "--json"])
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("invalid_version"), "\(refused.stderr)")
            let badRange = try await agentctl(nodes[2], ["find", "--capability", "translate", "--version", ">= 1", "--json"])
            #expect(badRange.status == 2)
            #expect(badRange.stderr.contains("invalid_range"), "\(badRange.stderr)")
            let badName = try await agentctl(nodes[2], ["find", "--capability", "Translate"])
            #expect(badName.status == 2)
            let foreign = try await agentctl(nodes[0], ["card", "set", file, "--name", "node-2"])
            #expect(foreign.status == 2, "\(foreign.stderr)")
            #expect(foreign.stderr.contains("not published by this node"), "\(foreign.stderr)")
        }
    }
}
