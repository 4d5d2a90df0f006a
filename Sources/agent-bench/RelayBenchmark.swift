import Foundation
import ArgumentParser
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Network

typealias Host = Network.Host

/// Circuit relay v2 and DCUtR on loopback, in one process: a relay R, a peer B that reserves at
/// it, a peer A that dials B through it. Every figure is measured in the same run as its
/// baseline: relayed throughput as a ratio of a direct TCP+Noise+yamux connection between two
/// other hosts on the same loops, relayed ping against direct ping.
struct RelayBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Circuit relay v2 and DCUtR: reservation, relayed dial, throughput and ping vs direct, hole punch time, relay memory per circuit.")

    @Option(help: "Bytes per throughput run. Default 256 MiB; --quick 16 MiB.")
    var bytes: Int?
    @Option(help: "Throughput runs, interleaved direct/relayed; the best of each is reported.")
    var runs = 3
    @Option(help: "Relayed dials (and hole punches) measured.")
    var dials = 50
    @Option(help: "Idle circuits held open for the memory figure (B accepts at most 64 inbound circuits per relay: the protocol_peer stream limit).")
    var circuits = 50
    @Option(help: "agentd processes started for the ready-to-reservation figure (each a fresh B with --relay R, over loopback); 0 skips it.")
    var starts = 10
    @Flag(help: "Small sizes (smoke test).")
    var quick = false

    func run() async throws {
        var logger = Logger(label: "agent-bench")
        logger.logLevel = .warning
        let bytes = self.bytes ?? (quick ? 16 << 20 : 256 << 20)
        let dials = quick ? min(self.dials, 10) : self.dials
        let circuits = quick ? min(self.circuits, 20) : self.circuits
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = Host.Configuration()
        configuration.limits.systemConnections = 100_000
        configuration.limits.ipConnections = 100_000
        configuration.limits.subnetConnections = 100_000
        func makeHost() async throws -> (Host, Multiaddr) {
            let host = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration, logger: logger)
            Perf.register(on: host)
            let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            return (host, bound.appending(.p2p(host.peerID.multihash)))
        }
        var limits = RelayLimits()
        limits.circuitBytes = 1 << 40
        limits.maximumCircuitsPerPeer = 100_000
        limits.maximumCircuits = 100_000
        let (relay, relayAddress) = try await makeHost()
        _ = RelayService(host: relay, limits: limits)
        let (b, _) = try await makeHost()
        let bClient = RelayClient(host: b)
        let (a, _) = try await makeHost()
        _ = RelayClient(host: a)
        let (directA, _) = try await makeHost()
        let (directB, directBAddress) = try await makeHost()
        _ = try await directA.connect(to: directBAddress)

        let clock = ContinuousClock()
        var reserveTimes: [Double] = []
        for _ in 0..<(quick ? 3 : 10) {
            let start = clock.now
            _ = try await bClient.reserve(at: relayAddress)
            reserveTimes.append((clock.now - start).seconds)
        }
        let circuit = relayAddress.appending(.p2pCircuit).appending(.p2p(b.peerID.multihash))

        // Relayed dials: connect (CONNECT, STOP, multistream, Noise, yamux over the circuit), close.
        var dialTimes: [Double] = []
        for _ in 0..<dials {
            let start = clock.now
            let connection = try await a.connect(to: circuit)
            dialTimes.append((clock.now - start).seconds)
            connection.close()
            try await connection.closeFuture.get()
        }

        // Throughput and ping, relayed and direct, interleaved.
        let relayed = try await a.connect(to: circuit)
        precondition(relayed.path.isRelayed)
        var bestDirect = 0.0
        var bestRelayed = 0.0
        for _ in 0..<runs {
            bestDirect = max(bestDirect, try await Self.download(bytes, from: directB.peerID, by: directA))
            bestRelayed = max(bestRelayed, try await Self.download(bytes, from: b.peerID, by: a))
        }
        let pings = quick ? 50 : 500
        let relayedPing = try await Ping.ping(a, peer: b.peerID, count: pings + 10).dropFirst(10).map(\.seconds)
        let directPing = try await Ping.ping(directA, peer: directB.peerID, count: pings + 10).dropFirst(10).map(\.seconds)
        relayed.close()
        try await relayed.closeFuture.get()

        // Memory per idle circuit, at the relay's process (all hosts share it: the figure is the
        // whole process's growth per circuit, both ends included).
        ProcessMemory.returnFreeMemory()
        let before = ProcessMemory.residentBytes() ?? 0
        var held: [Host] = []
        for _ in 0..<circuits {
            let dialer = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration, logger: logger)
            _ = RelayClient(host: dialer)
            _ = try await dialer.connect(to: circuit)
            held.append(dialer)
        }
        ProcessMemory.returnFreeMemory()
        let after = ProcessMemory.residentBytes() ?? 0
        for dialer in held { await dialer.shutdown() }

        // Hole punches over loopback: relayed connection up → direct connection up (B starts).
        _ = HolePunchService(host: a)
        _ = HolePunchService(host: b)
        var punchTimes: [Double] = []
        var punchFailures = 0
        var bEvents = b.events(label: "bench").makeAsyncIterator()
        for _ in 0..<(quick ? 3 : min(dials, 20)) {
            let connection = try await a.connect(to: circuit)
            while let event = await bEvents.next() {
                guard case .holePunch(a.peerID, let outcome) = event else { continue }
                if outcome.succeeded { punchTimes.append(Double(outcome.duration.nanoseconds) / 1e9) } else { punchFailures += 1 }
                break
            }
            _ = connection
            // Both connections to B closed: the next round starts from a relayed one again.
            while let open = a.connection(to: b.peerID) {
                open.close()
                try await open.closeFuture.get()
            }
        }

        func ms(_ values: [Double]) -> String {
            guard !values.isEmpty else { return "-" }
            let sorted = values.sorted()
            return String(format: "p50 %.2f ms, p90 %.2f ms", sorted[sorted.count / 2] * 1000, sorted[sorted.count * 9 / 10] * 1000)
        }
        print("agent-bench relay (loopback, one process, \(bytes >> 20) MiB per throughput run, best of \(runs))")
        print("  reservation round trip            \(ms(reserveTimes))")
        print("  relayed dial (CONNECT→yamux)      \(ms(dialTimes))   [py-libp2p in the NAT lab: 29.8 ms]")
        print(String(format: "  direct perf download              %.1f MB/s", bestDirect / 1e6))
        print(String(format: "  relayed perf download             %.1f MB/s   ÷direct %.2f", bestRelayed / 1e6, bestRelayed / bestDirect))
        print("  ping direct                       \(ms(directPing))")
        print("  ping relayed                      \(ms(relayedPing))")
        print(String(format: "  memory per idle circuit           %.1f KiB (process RSS growth / %d circuits, both ends and the relay)",
                     Double(after - before) / 1024 / Double(circuits), circuits))
        print("  hole punch relayed→direct         \(ms(punchTimes)), \(punchFailures) failed   [py-libp2p, cone NATs: 99 ms]")

        for host in [a, b, relay, directA, directB] { await host.shutdown() }
        try await group.shutdownGracefully()

        let starts = quick ? min(self.starts, 3) : self.starts
        guard starts > 0 else { return }
        let processes = try await Self.agentdReservations(starts: starts)
        print("agentd processes over loopback (\(starts) starts of B with --relay R; R with --relay-service on)")
        print("  B spawned → ready line              \(ms(processes.map(\.ready)))")
        print("  ready line → reservation line       \(ms(processes.map(\.reservation)))   [py-libp2p in the NAT lab: B ready → reserved ≈ 350 ms]")
        print("  B spawned → reservation line        \(ms(processes.map { $0.ready + $0.reservation }))")
    }

    /// agentd processes on loopback: a relay R (`--relay-service on`), then `starts` times a fresh
    /// B (new data directory and identity) with `--relay R`. Per start: seconds from B's spawn to
    /// its ready line, and from its ready line to its `reservation` event line (each line timed as
    /// it is read from B's stdout). Every process is stopped by its PID.
    static func agentdReservations(starts: Int) async throws -> [(ready: Double, reservation: Double)] {
        let executable = (Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])).standardizedFileURL
        let agentd = executable.deletingLastPathComponent().appendingPathComponent("agentd").path
        guard FileManager.default.isExecutableFile(atPath: agentd) else {
            throw BenchmarkError("no agentd beside agent-bench (\(agentd)): build both (swift build -c release)")
        }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("agent-bench-relay-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let noBootstrap = base.appendingPathComponent("none.json")
        try Data(#"{"version": 1, "peers": []}"#.utf8).write(to: noBootstrap)
        func start(_ name: String, _ extra: [String]) throws -> PyPeerProcess {
            try PyPeerProcess(
                executable: agentd,
                arguments: [
                    "--data-dir", base.appendingPathComponent(name).path, "--listen", "/ip4/127.0.0.1/tcp/0",
                    "--log-level", "warning", "--bootstrap", noBootstrap.path,
                ] + extra,
                label: "agentd \(name)")
        }
        func stop(_ process: PyPeerProcess) async {
            kill(process.pid, SIGTERM)
            await process.stop()
        }

        let relay = try start("r", ["--relay-service", "on", "--dht-mode", "server"])
        var results: [(ready: Double, reservation: Double)] = []
        do {
            let relayReady = try await relay.event("ready", timeout: .seconds(30))
            guard let relayAddress = relayReady.strings("addrs").first else {
                throw BenchmarkError("the relay's ready line has no address: \(relayReady.line)")
            }
            for index in 0..<starts {
                let spawned = ContinuousClock.now
                let b = try start("b\(index)", ["--relay", relayAddress, "--dht-mode", "client"])
                do {
                    let ready = try await b.event("ready", timeout: .seconds(30))
                    let reservation = try await b.event("reservation", timeout: .seconds(30))
                    results.append(((ready.received - spawned).seconds, (reservation.received - ready.received).seconds))
                } catch {
                    await stop(b)
                    throw error
                }
                await stop(b)
            }
        } catch {
            await stop(relay)
            throw error
        }
        await stop(relay)
        return results
    }

    static func download(_ bytes: Int, from peer: PeerID, by host: Host) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await Perf.run(host, peer: peer, upload: 0, download: UInt64(bytes))
        return Double(result.downloadBytes) / (clock.now - start).seconds
    }
}

