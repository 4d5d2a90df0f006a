import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import Network
import Session

/// `agent-bench session`: the secure session end to end (Noise + yamux over loopback TCP) against
/// the physical limits measured in the same run — the AEAD's speed on one core, plain TCP through
/// NIO, the handshake's public-key operations — and side by side with py-libp2p (DESIGN §6).
struct SessionBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Throughput, handshakes and RTT of Noise + yamux sessions against same-run baselines and py-libp2p.",
        discussion: """
            Baselines: A, ChaCha20-Poly1305 encryption of 65519-byte messages on one core (the Noise \
            transport message); B, one loopback TCP connection through plain NIO; C, the round trip of \
            32 bytes over it; D, E, F, the handshake rates the X25519 and Ed25519 operations allow. \
            Client and server run on separate one-thread event loop groups. The crypto and throughput \
            measurements are repeated (--runs, interleaved) and the best of each kept; the \
            bytes-per-CPU-second rows give each side's cost, which depends little on other load. \
            Build with -c release.
            """
    )

    @Option(help: "Bytes per throughput run (plain TCP and our perf download). Default 1 GiB; --quick 32 MiB.")
    var bytes: Int?

    @Option(help: "Concurrent perf streams on one connection for the aggregate figure.")
    var streams = 16

    @Option(help: "Handshakes per handshake figure. Default 1000; --quick 100.")
    var handshakes: Int?

    @Option(help: "Handshakes in flight for the concurrent figures.")
    var concurrency = 4

    @Option(help: "Ping round trips measured. Default 1000; --quick 200.")
    var pings: Int?

    @Option(help: "Throughput runs, interleaved; the best of each is reported. Default 3; --quick 1.")
    var runs: Int?

    @Option(help: "Seconds per crypto figure, split over the runs (best kept). Default 1; --quick 0.1.")
    var cryptoSeconds: Double?

    @Option(help: "Bytes per py-libp2p perf download (py moves ~200 MB/s). Default 100 MB; --quick 8 MB.")
    var pyBytes: Int?

    @Option(help: "Diagnostic: yamux initial receive window of both hosts, in bytes (default: the host's, 256 KiB).")
    var yamuxWindow: UInt32?

    @Option(help: "Diagnostic: largest yamux data frame payload of both hosts (default: the host's, 16 KiB).")
    var yamuxFrame: Int?

    @Option(help: "Repository root holding .venv and Tests/Interop/py/peer.py (default: found from here).")
    var root: String?

    @Flag(help: "Small sizes throughout: a few seconds in all (smoke test).")
    var quick = false

    @Flag(help: "Diagnostic: only the QUIC figures and the plain C QUIC baseline (for profiling).")
    var quicOnly = false

    @Flag(help: "Skip the py-libp2p comparison.")
    var noPython = false

    @Flag(help: "Print one JSON document instead of the table.")
    var json = false

    mutating func validate() throws {
        let sizes = [bytes, handshakes, pings, runs, pyBytes].compactMap { $0 } + [streams, concurrency]
        guard sizes.allSatisfy({ $0 > 0 }), (cryptoSeconds ?? 1) > 0 else {
            throw ValidationError("sizes, counts and durations must be positive")
        }
        let largestPayload = YamuxConfiguration.largestInteroperableFrame - YamuxFrame.headerSize
        if let yamuxFrame, !(1...largestPayload).contains(yamuxFrame) {
            throw ValidationError("--yamux-frame must be in 1...\(largestPayload)")
        }
        if let yamuxWindow, yamuxWindow < YamuxConfiguration.specInitialWindow {
            throw ValidationError(
                "--yamux-window must be at least \(YamuxConfiguration.specInitialWindow) (the spec's window)")
        }
    }

    /// The sizes of this run: the options given, else the defaults of the mode.
    private var settings: Settings {
        Settings(
            bytes: bytes ?? (quick ? 32 << 20 : 1 << 30), handshakes: handshakes ?? (quick ? 100 : 1000),
            pings: pings ?? (quick ? 200 : 1000), runs: runs ?? (quick ? 1 : 3),
            cryptoSeconds: cryptoSeconds ?? (quick ? 0.1 : 1), pyBytes: pyBytes ?? (quick ? 8_000_000 : 100_000_000),
            pyPings: pings ?? (quick ? 50 : 1000))
    }

    private struct Settings {
        var bytes: Int
        var handshakes: Int
        var pings: Int
        var runs: Int
        var cryptoSeconds: Double
        var pyBytes: Int
        var pyPings: Int
    }

    func run() async throws {
        // The node's allocator settings (agentd applies the same at start).
        MemoryTuning.apply()
        let settings = self.settings
        let foreignLoad = ForeignLoad()
        var report = BenchmarkReport(machine: .current())
        report.parameters = [
            "bytes": "\(settings.bytes)", "streams": "\(streams)", "handshakes": "\(settings.handshakes)",
            "concurrency": "\(concurrency)", "pings": "\(settings.pings)", "runs": "\(settings.runs)",
            "quick": "\(quick)", "py-bytes": "\(settings.pyBytes)",
        ]
        if quicOnly { report.parameters["quic-only"] = "true" }
        var logger = Logger(label: "agent-bench")
        logger.logLevel = .error

        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            var configuration = Host.Configuration()
            // The handshake figures connect from 127.0.0.1 over and over: one address for the
            // per-IP limits, which a benchmark is not meant to measure.
            configuration.limits = .loopbackTestNetwork
            if let yamuxWindow {
                configuration.yamux.initialReceiveWindow = yamuxWindow
                configuration.yamux.maximumReceiveWindow = max(configuration.yamux.maximumReceiveWindow, yamuxWindow)
                report.parameters["yamux-window"] = "\(yamuxWindow)"
            }
            if let yamuxFrame {
                configuration.yamux.maximumFramePayload = yamuxFrame
                report.parameters["yamux-frame"] = "\(yamuxFrame)"
            }
            let pair = try await HostPair.start(
                client: clientGroup, server: serverGroup, configuration: configuration, logger: logger)
            do {
                if !quicOnly {
                    try await measureSessions(
                        settings, into: &report, pair: pair, clientGroup: clientGroup, serverGroup: serverGroup,
                        logger: logger)
                }
                try await measureQUIC(
                    settings, into: &report, clientGroup: clientGroup, serverGroup: serverGroup,
                    configuration: configuration, logger: logger)
                if !quicOnly { try await comparePython(settings, into: &report, pair: pair) }
            } catch {
                await pair.shutdown()
                throw error
            }
            await pair.shutdown()
        } catch {
            try? await clientGroup.shutdownGracefully()
            try? await serverGroup.shutdownGracefully()
            throw error
        }
        try await clientGroup.shutdownGracefully()
        try await serverGroup.shutdownGracefully()

        report.otherProcessesCores = foreignLoad.cores()
        addTargets(to: &report)
        print(json ? try report.json() : report.table())
    }

    // MARK: Measurements

    /// The same host figures over QUIC v1 (ngtcp2 + GnuTLS, spec/network.md "QUIC") in the same
    /// run, beside the TCP + Noise + yamux ones: one-stream perf download, ping RTT, connects in turn;
    /// and the plain C baseline on the same ngtcp2 + GnuTLS layer (`QUICBaseline`, one `sendto` per
    /// datagram, same windows), its downloads interleaved with ours run by run.
    private func measureQUIC(
        _ settings: Settings, into report: inout BenchmarkReport, clientGroup: EventLoopGroup,
        serverGroup: EventLoopGroup, configuration: Host.Configuration, logger: Logger
    ) async throws {
        progress(
            "QUIC: \(settings.runs) × (perf 1 stream with and without GSO, C baseline) \(settings.bytes) bytes, \(settings.pings) pings, "
                + "\(settings.handshakes) connects, \(settings.handshakes) C handshakes")
        let pair = try await HostPair.start(
            client: clientGroup, server: serverGroup, configuration: configuration, logger: logger,
            listen: "/ip4/127.0.0.1/udp/0/quic-v1")
        // The same with UDP GSO (opt-in; the default sends each datagram as a sendmmsg entry).
        var plainConfiguration = configuration
        plainConfiguration.quicSegmentationOffload = true
        let plain: HostPair
        do {
            plain = try await HostPair.start(
                client: clientGroup, server: serverGroup, configuration: plainConfiguration, logger: logger,
                listen: "/ip4/127.0.0.1/udp/0/quic-v1")
        } catch {
            await pair.shutdown()
            throw error
        }
        do {
            let windows = QUICWindows.windows(for: configuration.limits)
            _ = try await pair.perfDownload(bytes: min(settings.bytes, 16 << 20), streams: 1)
            _ = try await plain.perfDownload(bytes: min(settings.bytes, 16 << 20), streams: 1)
            _ = try await QUICBaseline.download(
                bytes: min(settings.bytes, 16 << 20), streamWindow: windows.stream,
                connectionWindow: windows.connection)
            let meter = LoopCPUMeter(client: clientGroup.next(), server: serverGroup.next())
            var single = 0.0
            var singleCPU = LoopCPUMeter.Reading()
            var c = 0.0
            var cCPU = (sender: 0.0, receiver: 0.0)
            var gso = 0.0
            var gsoCPU = LoopCPUMeter.Reading()
            for _ in 0..<settings.runs {
                single = max(
                    single,
                    try await meter.measure(into: &singleCPU) {
                        try await pair.perfDownload(bytes: settings.bytes, streams: 1)
                    })
                gso = max(
                    gso,
                    try await meter.measure(into: &gsoCPU) {
                        try await plain.perfDownload(bytes: settings.bytes, streams: 1)
                    })
                let download = try await QUICBaseline.download(
                    bytes: settings.bytes, streamWindow: windows.stream,
                    connectionWindow: windows.connection)
                c = max(c, download.rate)
                cCPU.sender += download.senderCPU
                cCPU.receiver += download.receiverCPU
            }
            let moved = Double(settings.bytes * settings.runs)
            let ping = try await pair.pingRoundTrips(count: settings.pings)
            let connects = try await HandshakeBenchmark.hostConnects(
                count: settings.handshakes, dialers: 1, to: pair.serverAddress, group: clientGroup, logger: logger)
            let cHandshakes = try await QUICBaseline.handshakes(count: settings.handshakes)

            report.add(
                "baseline.quic.c", tag: "Q", "plain C QUIC (same ngtcp2 + GnuTLS), 1 stream, sendto each", c,
                .bytesPerSecond)
            report.add(
                "baseline.quic.c.sender-cpu", tag: "Qs", "  sender thread: bytes per CPU-second", moved / cCPU.sender,
                .bytesPerSecond)
            report.add(
                "baseline.quic.c.receiver-cpu", tag: "Qr", "  receiver thread: bytes per CPU-second", moved / cCPU.receiver,
                .bytesPerSecond)
            report.add(
                "quic.perf.1", "QUIC: perf download, 1 stream", single, .bytesPerSecond,
                over: ["baseline.quic.c", "ours.perf.single"])
            report.add(
                "quic.perf.1.sender-cpu", "  sender loop: bytes per CPU-second", moved / singleCPU.server,
                .bytesPerSecond, over: ["baseline.quic.c.sender-cpu"])
            report.add(
                "quic.perf.1.receiver-cpu", "  receiver loop: bytes per CPU-second", moved / singleCPU.client,
                .bytesPerSecond, over: ["baseline.quic.c.receiver-cpu"])
            let offload = System.supportsUDPSegmentationOffload ? "" : " (this system has no GSO: same path)"
            report.add(
                "quic.perf.1.gso", "QUIC with UDP GSO (opt-in): perf download, 1 stream\(offload)", gso,
                .bytesPerSecond, over: ["baseline.quic.c"])
            report.add(
                "quic.perf.1.gso.sender-cpu", "  sender loop: bytes per CPU-second",
                moved / gsoCPU.server, .bytesPerSecond, over: ["baseline.quic.c.sender-cpu"])
            report.add(
                "quic.perf.1.gso.receiver-cpu", "  receiver loop: bytes per CPU-second",
                moved / gsoCPU.client, .bytesPerSecond, over: ["baseline.quic.c.receiver-cpu"])
            report.add("quic.ping.median", "QUIC: ping RTT, median", median(ping), .seconds, over: ["ours.ping.median"])
            report.add(
                "baseline.quic.c.handshake", tag: "QH", "plain C QUIC: dial → handshake complete, median",
                median(cHandshakes.times), .seconds)
            report.add(
                "baseline.quic.c.connect", tag: "QC", "plain C QUIC: handshake + close, in turn",
                cHandshakes.perSecond, .perSecond)
            report.add(
                "quic.connect.sequential", "QUIC: Host.connect + close, in turn", connects, .perSecond,
                over: ["baseline.quic.c.connect", "ours.connect.sequential"])
            let ratio = single / c
            report.note(
                String(
                    format: "Issue #13: QUIC 1-stream throughput ≥ 0.8 × Q (the plain C baseline): %@ (%.2f). "
                        + "CPU per GB, sender/receiver: ours %.2f/%.2f s, C %.2f/%.2f s.",
                    ratio >= 0.8 ? "met" : "NOT met", ratio, singleCPU.server / moved * 1e9,
                    singleCPU.client / moved * 1e9, cCPU.sender / moved * 1e9, cCPU.receiver / moved * 1e9))
        } catch {
            await plain.shutdown()
            await pair.shutdown()
            throw error
        }
        await plain.shutdown()
        await pair.shutdown()
    }

    private func measureSessions(
        _ settings: Settings, into report: inout BenchmarkReport, pair: HostPair, clientGroup: EventLoopGroup,
        serverGroup: EventLoopGroup, logger: Logger
    ) async throws {
        let crypto = try await measureThroughput(
            settings, into: &report, pair: pair, clientGroup: clientGroup, serverGroup: serverGroup)
        try await measureRoundTrips(
            settings, into: &report, pair: pair, clientGroup: clientGroup, serverGroup: serverGroup)
        try await measureHandshakes(
            settings, crypto: crypto, into: &report, pair: pair, clientGroup: clientGroup, serverGroup: serverGroup,
            logger: logger)
    }

    /// Baselines A and B and our perf downloads, interleaved run by run; returns the crypto figures,
    /// which the handshake bounds need.
    private func measureThroughput(
        _ settings: Settings, into report: inout BenchmarkReport, pair: HostPair, clientGroup: EventLoopGroup,
        serverGroup: EventLoopGroup
    ) async throws -> CryptoBaselines {
        let cryptoSeconds = settings.cryptoSeconds / Double(settings.runs)
        progress(
            "\(settings.runs) × (crypto, \(String(format: "%.2f", cryptoSeconds)) s per figure; plain TCP, 1 stream, "
                + "\(streams) streams, \(settings.bytes) bytes each)")
        // Warm up allocators, windows and the connection before anything is timed.
        _ = try await TCPBaseline.throughput(
            bytes: min(settings.bytes, 16 << 20), client: clientGroup, server: serverGroup)
        _ = try await pair.perfDownload(bytes: min(settings.bytes, 16 << 20), streams: 1)

        // Best rate of the runs; CPU time summed over them (a cost per byte depends less on load).
        let meter = LoopCPUMeter(client: clientGroup.next(), server: serverGroup.next())
        var crypto = CryptoBaselines()
        var tcp = 0.0
        var single = 0.0
        var multi = 0.0
        var tcpCPU = LoopCPUMeter.Reading()
        var singleCPU = LoopCPUMeter.Reading()
        for _ in 0..<settings.runs {
            crypto.keepBest(try CryptoBaselines.measure(seconds: cryptoSeconds))
            let tcpRate = try await meter.measure(into: &tcpCPU) {
                try await TCPBaseline.throughput(bytes: settings.bytes, client: clientGroup, server: serverGroup)
            }
            let singleRate = try await meter.measure(into: &singleCPU) {
                try await pair.perfDownload(bytes: settings.bytes, streams: 1)
            }
            tcp = max(tcp, tcpRate)
            single = max(single, singleRate)
            multi = max(multi, try await pair.perfDownload(bytes: settings.bytes, streams: streams))
        }
        let moved = Double(settings.bytes * settings.runs)

        let message = CryptoBaselines.messageLength
        report.add(
            "baseline.aead", tag: "A", "ChaCha20-Poly1305 seal, \(message) B (sealFrame)", crypto.sealFrame,
            .bytesPerSecond)
        report.add(
            "raw.aead.encrypt", "  libsodium encrypt_detached, \(message) B", crypto.rawEncrypt, .bytesPerSecond,
            over: ["baseline.aead"])
        report.add(
            "raw.aead.decrypt", "  libsodium decrypt_detached, \(message) B", crypto.rawDecrypt, .bytesPerSecond,
            over: ["baseline.aead"])
        // In the TCP baseline the client sends; in a perf download the server does.
        report.add("baseline.tcp", tag: "B", "plain NIO TCP, 1 connection, 64 KiB writes", tcp, .bytesPerSecond)
        report.add(
            "baseline.tcp.sender-cpu", "  sender loop: bytes per CPU-second", moved / tcpCPU.client, .bytesPerSecond)
        report.add(
            "baseline.tcp.receiver-cpu", "  receiver loop: bytes per CPU-second", moved / tcpCPU.server,
            .bytesPerSecond)
        report.add(
            "baseline.tcp.process-cpu", tag: "Bc", "  all threads: bytes per CPU-second", moved / tcpCPU.process,
            .bytesPerSecond)
        // A stream's sender seals and writes on one event loop thread: its bytes cost the AEAD plus
        // what plain TCP costs its sender (on loopback that includes the kernel's receive path).
        let senderBound = 1 / (1 / crypto.sealFrame + tcpCPU.client / moved)
        report.add(
            "bound.stream", tag: "G", "bound: 1 sender core, AEAD + plain TCP send", senderBound, .bytesPerSecond)
        report.add(
            "ours.perf.single", "ours: perf download, 1 stream", single, .bytesPerSecond,
            over: ["baseline.aead", "baseline.tcp", "bound.stream"])
        report.add(
            "ours.perf.single.sender-cpu", "  sender loop: bytes per CPU-second", moved / singleCPU.server,
            .bytesPerSecond, over: ["baseline.aead", "bound.stream"])
        report.add(
            "ours.perf.single.receiver-cpu", "  receiver loop: bytes per CPU-second", moved / singleCPU.client,
            .bytesPerSecond, over: ["baseline.aead"])
        report.add(
            "ours.perf.single.process-cpu", "  all threads: bytes per CPU-second", moved / singleCPU.process,
            .bytesPerSecond, over: ["baseline.aead", "baseline.tcp.process-cpu"])
        report.add(
            "ours.perf.multi", "ours: perf download, \(streams) streams, 1 connection", multi, .bytesPerSecond,
            over: ["baseline.tcp", "baseline.aead"])
        return crypto
    }

    /// Baseline C and our ping.
    private func measureRoundTrips(
        _ settings: Settings, into report: inout BenchmarkReport, pair: HostPair, clientGroup: EventLoopGroup,
        serverGroup: EventLoopGroup
    ) async throws {
        progress("round trips: \(settings.pings) over plain TCP, \(settings.pings) pings")
        let tcp = try await TCPBaseline.echoRoundTrips(count: settings.pings, client: clientGroup, server: serverGroup)
        let ping = try await pair.pingRoundTrips(count: settings.pings)
        report.add("baseline.rtt.median", tag: "C", "plain NIO TCP echo of 32 B, median", median(tcp), .seconds)
        report.add("baseline.rtt.p99", tag: "C99", "plain NIO TCP echo of 32 B, p99", percentile(tcp, 0.99), .seconds)
        report.add("ours.ping.median", "ours: ping RTT, median", median(ping), .seconds, over: ["baseline.rtt.median"])
        report.add("ours.ping.p99", "ours: ping RTT, p99", percentile(ping, 0.99), .seconds, over: ["baseline.rtt.p99"])
    }

    /// The public-key operations, the bounds D, E and F they set, and our handshakes against them.
    private func measureHandshakes(
        _ settings: Settings, crypto: CryptoBaselines, into report: inout BenchmarkReport, pair: HostPair,
        clientGroup: EventLoopGroup, serverGroup: EventLoopGroup, logger: Logger
    ) async throws {
        progress("handshakes: \(settings.handshakes) each, in turn and \(concurrency) at once")
        let count = settings.handshakes
        let tcpConnects = try await TCPBaseline.connects(count: count, client: clientGroup, server: serverGroup)
        let upgradesInTurn = try await HandshakeBenchmark.upgrades(
            count: count, concurrency: 1, client: clientGroup, server: serverGroup)
        let upgradesOverlapped = try await HandshakeBenchmark.upgrades(
            count: count, concurrency: concurrency, client: clientGroup, server: serverGroup)
        let connectsInTurn = try await HandshakeBenchmark.hostConnects(
            count: count, dialers: 1, to: pair.serverAddress, group: clientGroup, logger: logger)
        let connectsOverlapped = try await HandshakeBenchmark.hostConnects(
            count: count, dialers: concurrency, to: pair.serverAddress, group: clientGroup, logger: logger)

        let signed = CryptoBaselines.signedLength
        report.add("crypto.x25519", tag: "X", "X25519 scalarmult", crypto.x25519, .perSecond)
        report.add("crypto.x25519.base", "X25519 key pair (scalarmult_base)", crypto.x25519Base, .perSecond)
        report.add("crypto.ed25519.sign", "Ed25519 sign, \(signed) B", crypto.sign, .perSecond)
        report.add("crypto.ed25519.verify", "Ed25519 verify, \(signed) B", crypto.verify, .perSecond)
        report.add(
            "crypto.x25519.identity", "  X25519 DH via X25519.PrivateKey.sharedSecret", crypto.identityDH, .perSecond,
            over: ["crypto.x25519"])
        report.add(
            "bound.handshake.sequential", tag: "D", "bound: handshakes in turn, 1 core per side",
            crypto.sequentialBound, .perSecond)
        report.add(
            "bound.handshake.concurrent", tag: "E", "bound: handshakes overlapped, 1 core per side",
            crypto.concurrentBound, .perSecond)
        report.add("bound.handshake.onecore", tag: "F", "bound: both sides on 1 core", crypto.oneCoreBound, .perSecond)
        report.add("baseline.tcp.connect", tag: "T", "plain NIO TCP connect + close, in turn", tcpConnects, .perSecond)
        report.add(
            "bound.handshake.tcp", tag: "H", "bound: TCP connect, then D's crypto, in turn",
            1 / (1 / tcpConnects + 1 / crypto.sequentialBound), .perSecond)
        report.add(
            "ours.handshake.memory", "ours: Noise XX in memory, both sides, 1 core", crypto.inMemoryHandshakes,
            .perSecond, over: ["bound.handshake.onecore"])
        report.add(
            "ours.upgrade.sequential", "ours: upgrades in turn (no Host)", upgradesInTurn, .perSecond,
            over: ["bound.handshake.sequential", "bound.handshake.tcp"])
        report.add(
            "ours.upgrade.concurrent", "ours: upgrades, \(concurrency) at once (no Host)", upgradesOverlapped,
            .perSecond, over: ["bound.handshake.concurrent"])
        report.add(
            "ours.connect.sequential", "ours: Host.connect + close, in turn", connectsInTurn, .perSecond,
            over: ["bound.handshake.sequential", "bound.handshake.tcp"])
        report.add(
            "ours.connect.concurrent", "ours: Host.connect + close, \(concurrency) dialers", connectsOverlapped,
            .perSecond, over: ["bound.handshake.concurrent"])
    }

    private func comparePython(_ settings: Settings, into report: inout BenchmarkReport, pair: HostPair) async throws {
        guard !noPython else {
            report.note("py-libp2p comparison skipped (--no-python).")
            return
        }
        guard let (python, script) = PyLibp2pBenchmark.locate(root: repositoryRoot()) else {
            report.note(
                "py-libp2p comparison skipped: no .venv/bin/python3 and Tests/Interop/py/peer.py under "
                    + "\(repositoryRoot().path) (run scripts/install-deps.sh, or pass --root).")
            return
        }
        let py = PyLibp2pBenchmark(
            python: python, script: script, bytes: settings.pyBytes, pings: settings.pyPings, timeout: .seconds(300))
        progress("py-libp2p: py → ours and py → py, \(settings.pyBytes) bytes and \(py.pings) pings each")
        let pyToOurs = try await py.pyClient(against: pair.serverAddress)
        let pyToPy = try await py.pyToPy()

        guard let ours = report.value("ours.perf.single"), let ourRTT = report.value("ours.ping.median") else { return }
        for (key, label, pairing) in [
            ("py.to-ours", "py client → ours", pyToOurs), ("py.to-py", "py client → py", pyToPy),
        ] {
            report.add(
                "\(key).perf", "\(label): perf download, 1 stream", pairing.perfDownload, .bytesPerSecond,
                extra: [.init(name: "ours÷py", value: ours / pairing.perfDownload)])
            if !pairing.pingRoundTrips.isEmpty {
                let rtt = median(pairing.pingRoundTrips)
                report.add(
                    "\(key).ping.median", "\(label): ping RTT, median", rtt, .seconds,
                    extra: [.init(name: "py÷ours", value: rtt / ourRTT)])
            }
        }
        report.note(
            "py-libp2p figures are py's own clocks (perf includes opening its stream); \(settings.pyBytes) bytes per run."
        )
    }

    private func addTargets(to report: inout BenchmarkReport) {
        report.note(
            "÷X: the figure divided by baseline X (for times, above 1 is slower); ours÷py, py÷ours: above 1 means ours is ahead."
        )
        if let single = report.value("ours.perf.single"), let aead = report.value("baseline.aead") {
            let ratio = single / aead
            report.note(
                String(
                    format: "DESIGN §6: 1-stream throughput ≥ 0.60 × A: %@ (%.2f); issue #11: ≥ 0.75 × A: %@.",
                    ratio >= 0.6 ? "met" : "NOT met", ratio, ratio >= 0.75 ? "met" : "NOT met"))
        }
        if let others = report.otherProcessesCores, others > 0.2 {
            report.note(
                String(
                    format: "Other processes used %.2f cores meanwhile: rates that need both cores are understated; ",
                    others)
                    + "the bytes-per-CPU-second rows much less so.")
        }
        if quick { report.note("--quick: small sizes, figures are indicative only.") }
    }

    // MARK: Helpers

    private func progress(_ text: String) {
        FileHandle.standardError.write(Data("agent-bench: \(text)\n".utf8))
    }

    private func repositoryRoot() -> URL { PyPeerProcess.repositoryRoot(root) }
}

/// The median of `values` (which must not be empty).
func median(_ values: [Double]) -> Double { percentile(values, 0.5) }

/// The `fraction` percentile of `values` by nearest rank (`values` must not be empty).
func percentile(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}
