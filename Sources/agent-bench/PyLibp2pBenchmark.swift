import Foundation
import Multiformats

/// py-libp2p 0.8.1 on the same machine, through the interop test peer: a py client against our
/// node, and py against py.
struct PyLibp2pBenchmark {
    /// perf and ping figures of one client → server pairing.
    struct Pairing {
        /// perf download bytes/s as py's client reports it (its clock includes opening the stream).
        var perfDownload: Double
        /// Ping round trips in seconds, as py's client measures them.
        var pingRoundTrips: [Double]
    }

    let python: String
    let script: String
    /// Bytes each perf download moves.
    let bytes: Int
    /// Pings per pairing.
    let pings: Int
    /// Longest a peer.py run may take.
    let timeout: Duration

    /// The venv interpreter and the test peer under `root`, if both exist.
    static func locate(root: URL) -> (python: String, script: String)? {
        let python = root.appendingPathComponent(".venv/bin/python3").path
        let script = root.appendingPathComponent("Tests/Interop/py/peer.py").path
        guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: script)
        else { return nil }
        return (python, script)
    }

    /// A py client dials `address`, pings it, then runs a perf download.
    func pyClient(against address: Multiaddr) async throws -> Pairing {
        let client = try PyPeerProcess(
            python: python, script: script,
            arguments: [
                "dial", address.description, "--ping", "\(pings)", "--perf-upload", "0", "--perf-download", "\(bytes)",
                "--timeout", "\(timeout.components.seconds)",
            ])
        do {
            let events = try await client.events(until: "done", timeout: timeout + .seconds(30))
            await client.stop()
            return try Self.pairing(from: events)
        } catch {
            await client.stop()
            throw error
        }
    }

    /// A py client against a py listener.
    func pyToPy() async throws -> Pairing {
        let listener = try PyPeerProcess(python: python, script: script, arguments: ["listen"])
        do {
            let ready = try await listener.event("ready", timeout: .seconds(60))
            guard let text = ready.strings("addrs").first, let address = try? Multiaddr(text) else {
                throw BenchmarkError("peer.py listen announced no usable address: \(ready.line)")
            }
            let result = try await pyClient(against: address)
            await listener.stop()
            return result
        } catch {
            await listener.stop()
            throw error
        }
    }

    private static func pairing(from events: [PyPeerProcess.Event]) throws -> Pairing {
        let rtts = events.filter { $0.name == "ping" }.compactMap { $0.number("rtt_ms") }.map { $0 / 1e3 }
        guard let perf = events.last(where: { $0.name == "perf" }),
            let downloaded = perf.number("download_bytes"), let seconds = perf.number("seconds"), seconds > 0
        else {
            throw BenchmarkError("peer.py reported no perf result: \(events.map(\.line))")
        }
        return Pairing(perfDownload: downloaded / seconds, pingRoundTrips: rtts)
    }
}
