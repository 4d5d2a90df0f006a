import AgentTesting
import Foundation
import Testing

/// The addresses agentd reports (issue #11, structure item 3; spec/control-api.md `id`,
/// spec/network.md "Addresses"): `addrs` are dialable, with /p2p; `listen_addrs` are as bound.
@Suite("agentd addresses: ready line, agentctl id, --announce, --public-cidr", .serialized, .timeLimit(.minutes(2)))
struct AddressProcessTests {
    @Test("a wildcard listener reports dialable addrs with /p2p (announced first) and its bound listen_addrs")
    func readyLineAndID() async throws {
        let dir = try DaemonProcessTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let daemon = try JSONLineProcess(
            executable: ProcessRunner.executable("agentd"),
            arguments: [
                "--data-dir", dir, "--listen", "/ip4/0.0.0.0/tcp/0", "--announce", "/ip4/203.0.113.7/tcp/4001",
                "--public-cidr", "198.18.0.0/15", "--log-level", "warning",
            ])
        do {
            let ready = try await daemon.waitFor("ready", timeout: .seconds(20))
            let peerID = try #require(ready["peer_id"] as? String)
            let addrs = try #require(ready["addrs"] as? [String])
            let listen = try #require(ready["listen_addrs"] as? [String])
            #expect(addrs.first == "/ip4/203.0.113.7/tcp/4001/p2p/\(peerID)")
            #expect(addrs.allSatisfy { $0.hasSuffix("/p2p/\(peerID)") && !$0.contains("/0.0.0.0/") }, "\(addrs)")
            #expect(listen.count == 1 && listen[0].hasPrefix("/ip4/0.0.0.0/tcp/") && !listen[0].contains("/p2p/"))
            // The port the wildcard is bound to is the port of every interface address.
            let port = try #require(listen[0].split(separator: "/").last)
            #expect(addrs.dropFirst().allSatisfy { $0.contains("/tcp/\(port)/p2p/") }, "\(addrs)")

            let id = try await ProcessRunner.run(
                ProcessRunner.executable("agentctl"), ["id", "--data-dir", dir, "--json"])
            #expect(id.status == 0, "\(id.stderr)")
            let json = try id.json()
            #expect(json["addrs"] as? [String] == addrs)
            #expect(json["listen_addrs"] as? [String] == listen)
            let human = try await ProcessRunner.run(ProcessRunner.executable("agentctl"), ["id", "--data-dir", dir])
            #expect(human.stdoutText.contains("address:   /ip4/203.0.113.7/tcp/4001/p2p/\(peerID)"))
            #expect(human.stdoutText.contains("listen:    \(listen[0])"))
        } catch {
            daemon.signal(SIGTERM)
            _ = await daemon.waitForExit()
            throw error
        }
        daemon.signal(SIGTERM)
        #expect(await daemon.waitForExit() == 0)
    }

    @Test("bad --announce and --public-cidr values exit 2 with a message")
    func badFlags() async throws {
        let agentd = ProcessRunner.executable("agentd")
        for arguments in [
            ["--announce", "/ip4/1.2.3.4"], ["--announce", "/ip4/0.0.0.0/tcp/1"], ["--announce", "not an address"],
            ["--announce", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"],
            ["--announce", "/ip4/1.2.3.4/udp/1"], ["--announce", "/dns4/a.example/udp/1/quic-v1"],
            ["--public-cidr", "10.0.0.1/8"], ["--public-cidr", "10.0.0.0/33"], ["--public-cidr", "example.com"],
        ] {
            let result = try await ProcessRunner.run(agentd, arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(arguments[0]), "\(arguments): \(result.stderr)")
        }
    }
}
