import AgentNode
import AgentTesting
import Foundation
import Identity
import Multiformats
import Testing

@Suite("bootstrap-nodes.json")
struct BootstrapListTests {
    static let idA = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    static let idB = "12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV"

    func parse(_ json: String) throws(NodeError) -> BootstrapList {
        try BootstrapList(json: Array(json.utf8), source: "test.json")
    }

    @Test("a valid file: /p2p is appended where missing and checked where present")
    func valid() throws {
        let list = try parse(
            """
            {"version": 1, "extra": true, "peers": [
              {"peer_id": "\(Self.idA)", "addrs": ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001/p2p/\(Self.idA)"]},
              {"peer_id": "bafzaajaiaejcalj543iwv2d7pkjt7ykvefrkfu7qjfi6sduakhso4lay6abn2d5u", "addrs": ["/dns4/boot.example/tcp/4001"]}
            ]}
            """)
        #expect(list.peers.count == 2)
        #expect(list.peers[0].addresses.map(\.description) == ["/ip4/127.0.0.1/tcp/4001/p2p/\(Self.idA)", "/ip6/::1/tcp/4001/p2p/\(Self.idA)"])
        #expect(list.peers[1].peerID.description == Self.idB)
        // What json() writes reads back the same.
        #expect(try parse(list.json()) == list)
    }

    @Test("the repository's bootstrap-nodes.json is valid")
    func repositoryFile() throws {
        let path = TestVectors.repositoryRoot.appendingPathComponent("bootstrap-nodes.json").path
        _ = try BootstrapList.load(path: path)
    }

    @Test(
        "invalid files are refused with a message naming the problem",
        arguments: [
            ("not json", "not valid JSON"),
            ("{\"peers\": []}", "no \"version\""),
            ("{\"version\": 2, \"peers\": []}", "has version 2; this agentd reads version 1"),
            ("{\"version\": 1}", "no \"peers\""),
            ("{\"version\": 1, \"peers\": [{\"addrs\": [\"/ip4/1.2.3.4/tcp/1\"]}]}", "peers[0] has no \"peer_id\""),
            ("{\"version\": 1, \"peers\": [{\"peer_id\": \"nope\", \"addrs\": [\"/ip4/1.2.3.4/tcp/1\"]}]}", "is not a peer id"),
            ("{\"version\": 1, \"peers\": [{\"peer_id\": \"\(idA)\", \"addrs\": []}]}", "has no \"addrs\""),
            ("{\"version\": 1, \"peers\": [{\"peer_id\": \"\(idA)\", \"addrs\": [\"/ip4/1.2.3.4/tcp/99999\"]}]}", "bad multiaddr \"/ip4/1.2.3.4/tcp/99999\""),
            ("{\"version\": 1, \"peers\": [{\"peer_id\": \"\(idA)\", \"addrs\": [\"/ip4/1.2.3.4/tcp/1/p2p/\(idB)\"]}]}", "names peer \(idB), but the entry's peer_id is \(idA)"),
            ("{\"version\": 1, \"peers\": [{\"peer_id\": \"\(idA)\", \"addrs\": [\"/ip4/1.2.3.4/tcp/1\"]}, {\"peer_id\": \"\(idA)\", \"addrs\": [\"/ip4/1.2.3.4/tcp/2\"]}]}", "listed twice"),
            ("{\"version\": \"1\", \"peers\": []}", "not valid JSON of the expected shape"),
        ])
    func invalid(json: String, expected: String) {
        do {
            _ = try parse(json)
            Issue.record("accepted: \(json)")
        } catch {
            #expect(error.kind == .invalidConfiguration)
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test("random bytes and mutated files never crash the loader (seed 9, 3000 cases)")
    func hostile() {
        var generator = SeededGenerator(seed: 9)
        let valid = Array("{\"version\": 1, \"peers\": [{\"peer_id\": \"\(Self.idA)\", \"addrs\": [\"/ip4/127.0.0.1/tcp/4001\"]}]}".utf8)
        for _ in 0..<3000 {
            do { _ = try BootstrapList(json: generator.mutate(valid)) } catch { #expect(!error.message.isEmpty) }
        }
    }

    @Test("data directory: explicit, then $AGENTD_HOME, then ~/.agentd")
    func dataDirectory() {
        #expect(DataDirectory.resolve(explicit: "/x/", environment: ["AGENTD_HOME": "/y"]).path == "/x")
        #expect(DataDirectory.resolve(explicit: nil, environment: ["AGENTD_HOME": "/y", "HOME": "/h"]).path == "/y")
        #expect(DataDirectory.resolve(explicit: nil, environment: ["HOME": "/h"]).path == "/h/.agentd")
        #expect(DataDirectory(path: "/d").identityKeyPath == "/d/identity.key")
        #expect(DataDirectory(path: "/d").apiSocketPath == "/d/agentd.sock")
    }
}
