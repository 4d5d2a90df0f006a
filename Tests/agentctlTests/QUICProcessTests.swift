import AgentTesting
import Foundation
import Testing

/// Two real `agentd` processes that listen on QUIC only (`/udp/0/quic-v1`), bootstrapped over
/// QUIC: connect, ping by address and by name, names resolved both ways, records carrying the QUIC
/// address (spec/network.md, "QUIC").
@Suite("agentd over QUIC only", .serialized, .timeLimit(.minutes(2)))
struct QUICProcessTests {
    func agentctl(_ dataDir: String, _ arguments: String...) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(ProcessRunner.executable("agentctl"), arguments + ["--data-dir", dataDir, "--timeout", "10"])
    }

    @Test("two agentd over QUIC: connect, ping, resolve both ways; records and routing tables hold QUIC addresses")
    func twoNodes() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-quic-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: URL(fileURLWithPath: base + "/no-peers.json"))
        var started: [JSONLineProcess] = []
        func start(_ index: Int, bootstrap: String) async throws -> (dir: String, peer: String, address: String) {
            let dir = base + "/node-\(index)"
            let process = try JSONLineProcess(
                executable: ProcessRunner.executable("agentd"),
                arguments: [
                    "--data-dir", dir, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--bootstrap", bootstrap,
                    "--name", "quic-\(index)", "--log-level", "warning",
                ])
            started.append(process)
            let ready = try await process.waitFor("ready", timeout: .seconds(20))
            let peer = try #require(ready["peer_id"] as? String)
            let address = try #require((ready["addrs"] as? [String])?.first)
            #expect(address.hasPrefix("/ip4/127.0.0.1/udp/") && address.hasSuffix("/quic-v1/p2p/" + peer))
            return (dir, peer, address)
        }
        do {
            let one = try await start(1, bootstrap: base + "/no-peers.json")
            let list: [String: Any] = ["version": 1, "peers": [["peer_id": one.peer, "addrs": [one.address]]]]
            try JSONSerialization.data(withJSONObject: list).write(to: URL(fileURLWithPath: base + "/bootstrap.json"))
            let two = try await start(2, bootstrap: base + "/bootstrap.json")

            let connect = try await agentctl(two.dir, "connect", one.address, "--json")
            #expect(connect.status == 0, "\(connect.stderr)")
            let ping = try await agentctl(two.dir, "ping", one.address, "--count", "3", "--json")
            #expect(ping.status == 0, "\(ping.stderr)")
            #expect((try ping.json()["rtts_ms"] as? [Double])?.count == 3)

            // Names resolve both ways; each record carries the node's QUIC address.
            for (resolver, name, holder) in [(two.dir, "quic-1.agent", one), (one.dir, "quic-2.agent", two)] {
                var resolved: ProcessRunner.Result?
                // The other node's record may still be on its way to its replica: a few tries.
                for _ in 0..<20 {
                    let attempt = try await agentctl(resolver, "resolve", name, "--json")
                    resolved = attempt
                    if attempt.status == 0 { break }
                    try await Task.sleep(for: .milliseconds(250))
                }
                let result = try #require(resolved)
                #expect(result.status == 0, "resolve \(name): \(result.stderr)")
                let record = try result.json()
                #expect(record["peer_id"] as? String == holder.peer)
                #expect(
                    record["addresses"] as? [String] == [String(holder.address.dropLast("/p2p/\(holder.peer)".count))])
            }
            let byName = try await agentctl(one.dir, "ping", "quic-2.agent", "--count", "1", "--json")
            #expect(byName.status == 0, "\(byName.stderr)")
            #expect(try byName.json()["peer_id"] as? String == two.peer)

            let peers = try await agentctl(one.dir, "peers", "--json")
            #expect(peers.status == 0, "\(peers.stderr)")
            #expect(peers.stdoutText.contains("/quic-v1"), "\(peers.stdoutText)")
        } catch {
            await DHTProcessTests.stop(started)
            throw error
        }
        await DHTProcessTests.stop(started)
    }
}
