import Application
import ArgumentParser
import Foundation

/// Runs one control API call and prints its result: `human` for people, the JSON with `--json`.
/// `params` is built inside the error mapping, so a bad argument it rejects is reported like any
/// other error (exit 2 for usage).
func callDaemon(
    _ daemon: DaemonOptions, _ output: OutputOptions, _ method: String, _ params: @autoclosure () throws -> JSONValue,
    human: @escaping @Sendable (JSONValue) -> String
) async throws {
    try await Output.runAsync(json: output.json) {
        let params = try params()
        let timeout = try daemon.timeoutDuration()
        let result = try await Daemon.withClient(daemon) { client in
            try await client.call(method, params, timeout: timeout)
        }
        Output.write(output.json ? result.formatted() + "\n" : human(result))
    }
}

private func milliseconds(_ value: JSONValue?) -> String {
    guard let value = value?.doubleValue else { return "-" }
    return String(format: "%.2f ms", value)
}

struct IDCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id",
        abstract: "Show the running node's peer id, did:key, addresses (to dial, and as bound) and protocols.")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "id", .null) { result in
            var text = "peer id:   \(result["peer_id"]?.stringValue ?? "?")\n"
            text += "did:       \(result["did"]?.stringValue ?? "?")\n"
            text += "agent:     \(result["agent_version"]?.stringValue ?? "?")\n"
            for address in result["addrs"]?.arrayValue ?? [] { text += "address:   \(address.stringValue ?? "")\n" }
            for address in result["listen_addrs"]?.arrayValue ?? [] { text += "listen:    \(address.stringValue ?? "")\n" }
            for proto in result["protocols"]?.arrayValue ?? [] { text += "protocol:  \(proto.stringValue ?? "")\n" }
            return text
        }
    }
}

struct PeersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers", abstract: "List connections: peer id, address, path (direct or relayed), direction, latency.")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "peers", .null) { result in
            let peers = result["peers"]?.arrayValue ?? []
            if peers.isEmpty { return "no connected peers\n" }
            return peers.map { peer in
                let id = peer["peer_id"]?.stringValue ?? "?"
                let address = peer["addr"]?.stringValue ?? "-"
                let direction = peer["direction"]?.stringValue ?? "?"
                let path = peer["path"]?.stringValue ?? "?"
                return "\(id)  \(address)  \(path)  \(direction)  \(milliseconds(peer["latency_ms"]))\n"
            }.joined()
        }
    }
}

struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract:
            "Dial a peer at a multiaddr ending in /p2p/<peer id> (fails if that address is dead or another peer's).")

    @Argument(help: "The peer's multiaddr, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…")
    var multiaddr: String
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await callDaemon(daemon, output, "connect", .object(["addr": .string(multiaddr)])) { result in
            "connected to \(result["peer_id"]?.stringValue ?? "?") (\(result["path"]?.stringValue ?? "?"))\n"
        }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping", abstract: "Ping a peer (multiaddr, NAME.agent, or peer id of a connected peer) with /ipfs/ping/1.0.0.")

    @Argument(help: "A multiaddr ending in /p2p/<peer id> (a /p2p-circuit one too), NAME.agent, or the peer id of a connected peer.")
    var target: String
    @Option(help: "Number of pings (1-1000).")
    var count: Int = 3
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...1000).contains(count) else { throw ValidationError("--count must be 1 to 1000") }
    }

    func run() async throws {
        let params: JSONValue = .object(["target": .string(target), "count": .number(count)])
        try await callDaemon(daemon, output, "ping", params) { result in
            let peer = result["peer_id"]?.stringValue ?? "?"
            let path = result["path"]?.stringValue ?? "?"
            return (result["rtts_ms"]?.arrayValue ?? []).enumerated().map { index, rtt in
                "pong from \(peer) (\(path)): seq=\(index + 1) time=\(milliseconds(rtt))\n"
            }.joined()
        }
    }
}

struct PerfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perf", abstract: "Measure throughput to a peer with /perf/1.0.0.")

    @Argument(help: "A multiaddr ending in /p2p/<peer id>, or the peer id of a connected peer.")
    var target: String
    @Option(help: "Bytes to upload (at most 1 GiB, 1073741824).")
    var upload: UInt64 = 10_000_000
    @Option(help: "Bytes to download (at most 1 GiB).")
    var download: UInt64 = 10_000_000
    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let params: JSONValue = .object([
            "target": .string(target), "upload": .number(upload), "download": .number(download),
        ])
        try await callDaemon(daemon, output, "perf", params) { result in
            func line(_ direction: String) -> String {
                let bytes = result["\(direction)_bytes"]?.uint64Value ?? 0
                let seconds = result["\(direction)_seconds"]?.doubleValue ?? 0
                let rate = result["\(direction)_bytes_per_second"]?.doubleValue ?? 0
                return String(format: "%@: %llu bytes in %.3f s = %.1f MB/s\n", direction, bytes, seconds, rate / 1e6)
            }
            return line("upload") + line("download")
        }
    }
}
