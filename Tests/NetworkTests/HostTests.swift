import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Session
import Testing

@testable import Network

/// Two or more hosts in one process talking over real TCP sockets on 127.0.0.1.
@Suite("Host over loopback TCP: Noise + yamux, ping, identify, perf")
struct HostTests {
    static func makeHost(_ group: EventLoopGroup) async throws -> (Host, Multiaddr) {
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        Perf.register(on: host)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        return (host, bound.appending(.p2p(host.peerID.multihash)))
    }

    /// `/test/echo/1.0.0`: everything read is written back; the end of the input closes our side.
    static func registerEcho(on host: Host) {
        host.handle("/test/echo/1.0.0") { stream in
            do {
                while let chunk = try await stream.read() { try await stream.write(chunk) }
                try await stream.closeWrite()
            } catch {
                stream.reset()
            }
        }
    }

    @Test("connect, ping, identify both ways, perf")
    func basics() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        let connection = try await a.connect(to: bAddress)
        #expect(connection.remotePeer == b.peerID)

        let rtts = try await Ping.ping(a, peer: b.peerID, count: 5)
        #expect(rtts.count == 5)

        // identify runs in the background on every new connection.
        var info: IdentifyInfo?
        for _ in 0..<100 where info == nil {
            info = a.peerInfo(b.peerID)
            if info == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let identified = try #require(info)
        #expect(identified.agentVersion.hasPrefix("agentd/"))
        #expect(identified.protocols.contains(Ping.protocolID))
        #expect(identified.protocols.contains(Perf.protocolID))
        #expect(identified.listenAddresses == b.listenAddresses)
        #expect(identified.observedAddress != nil)

        let result = try await Perf.run(a, peer: b.peerID, upload: 3_000_000, download: 5_000_000)
        #expect(result.uploadBytes == 3_000_000 && result.downloadBytes == 5_000_000)

        // A second connect reuses the connection.
        let again = try await a.connect(to: bAddress)
        #expect(again === connection)
        #expect(await a.connections().count == 1)

        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    /// The connection's stream count, polled for up to 2 s until it is zero.
    static func settledStreamCount(_ connection: Connection) async throws -> Int {
        var streams = Int.max
        for _ in 0..<100 {
            streams = try await connection.eventLoop.submit { connection.info()?.streams ?? -1 }.get()
            if streams == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return streams
    }

    @Test("streams closed both ways are freed, also when the last data and FIN arrive together")
    func closedStreamsAreFreed() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        let connection = try await a.connect(to: bAddress)
        // 3 MB downloads end with the last data frame and FIN in one Noise message while the reader
        // waits; 100-byte ones with the FIN alone. Both kinds must leave no stream state behind.
        for download in [3_000_000, 100, 3_000_000, 3_000_000, 100] {
            let result = try await Perf.run(a, peer: b.peerID, upload: 10, download: UInt64(download))
            #expect(result.downloadBytes == UInt64(download))
        }
        #expect(try await Self.settledStreamCount(connection) == 0)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a client that closes its stream after the answer frees it, whatever the peer sends after")
    func clientCloseFreesStream() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        b.handle("/test/chatty/1.0.0") { stream in
            _ = try? await stream.readLengthPrefixed(maximumLength: 100)
            try? await stream.writeLengthPrefixed(ByteBuffer(string: "answer"))
            // More than anyone asked for, then FIN.
            try? await stream.write(ByteBuffer(repeating: 7, count: 200_000))
        }
        let connection = try await a.connect(to: bAddress)
        for _ in 0..<3 {
            let stream = try await a.newStream(to: b.peerID, protocols: ["/test/chatty/1.0.0"])
            try await stream.writeLengthPrefixed(ByteBuffer(string: "question"))
            #expect(try await stream.readLengthPrefixed(maximumLength: 100) == ByteBuffer(string: "answer"))
            stream.close()
        }
        #expect(try await Self.settledStreamCount(connection) == 0)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("bytes that arrived before the peer reset the stream are read first, then the reset")
    func dataBeforeReset() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        b.handle("/test/reset/1.0.0") { stream in
            // The bytes and the RST leave in the same event loop turn, back to back (a `write`
            // followed by `reset()` could drop bytes still queued, as yamux's RST does).
            let raw = stream.raw
            try? await withCheckedThrowingContinuation { (written: CheckedContinuation<Void, Error>) in
                raw.connection.eventLoop.execute {
                    raw.connection.write(ByteBuffer(string: "last words"), on: raw.id, continuation: written)
                    raw.connection.reset(raw.id)
                }
            }
        }
        _ = try await a.connect(to: bAddress)
        for _ in 0..<20 {
            let stream = try await a.newStream(to: b.peerID, protocols: ["/test/reset/1.0.0"])
            var received = ByteBuffer()
            var failure: SessionError?
            do {
                while var chunk = try await stream.read() { received.writeBuffer(&chunk) }
            } catch {
                failure = error as? SessionError
            }
            #expect(received == ByteBuffer(string: "last words"))
            #expect(failure?.kind == .streamReset)
        }
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("dialling an address whose /p2p names another peer fails with both ids")
    func wrongPeer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        let impostor = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        var components = bAddress.components
        components[components.count - 1] = .p2p(impostor.multihash)
        do {
            _ = try await a.connect(to: Multiaddr(components))
            Issue.record("connected to the wrong peer")
        } catch {
            #expect("\(error)".contains(impostor.description))
            #expect("\(error)".contains(b.peerID.description))
        }
        #expect(await a.connections().isEmpty)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("an unsupported protocol is refused, the connection keeps serving")
    func unsupportedProtocol() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        _ = try await a.connect(to: bAddress)
        do {
            _ = try await a.newStream(to: b.peerID, protocols: ["/nope/1.0.0"])
            Issue.record("negotiated an unknown protocol")
        } catch let error as NetworkError {
            #expect(error.kind == .protocolNotSupported)
        }
        #expect(try await Ping.ping(a, peer: b.peerID).count == 1)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("many concurrent streams on one connection")
    func manyStreams() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, _) = try await Self.makeHost(group)
        let (b, bAddress) = try await Self.makeHost(group)
        _ = try await a.connect(to: bAddress)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for _ in 0..<16 {
                tasks.addTask {
                    let result = try await Perf.run(a, peer: b.peerID, upload: 1_000_000, download: 1_000_000)
                    #expect(result.downloadBytes == 1_000_000)
                }
            }
            try await tasks.waitForAll()
        }
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("connection manager")
struct ConnectionManagerTests {
    @Test("simultaneous dials leave one connection per peer, the same one on both sides")
    func simultaneousDial() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, aAddress) = try await HostTests.makeHost(group)
        let (b, bAddress) = try await HostTests.makeHost(group)
        async let fromA = a.connect(to: bAddress)
        async let fromB = b.connect(to: aAddress)
        _ = try await (fromA, fromB)
        var aConnections: [ConnectionInfo] = []
        var bConnections: [ConnectionInfo] = []
        for _ in 0..<100 {
            aConnections = await a.connections()
            bConnections = await b.connections()
            if aConnections.count == 1 && bConnections.count == 1 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(aConnections.count == 1 && bConnections.count == 1)
        // The kept connection is the same TCP connection seen from both ends.
        #expect(aConnections.first?.direction != bConnections.first?.direction)
        #expect(try await Ping.ping(a, peer: b.peerID).count == 1)
        #expect(try await Ping.ping(b, peer: a.peerID).count == 1)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a connection without streams is closed after the idle timeout")
    func idleTimeout() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = Host.Configuration()
        configuration.idleTimeout = .seconds(2)
        let a = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        let (b, bAddress) = try await HostTests.makeHost(group)
        let started = ContinuousClock.now
        let connection = try await a.connect(to: bAddress)
        #expect(connection.remotePeer == b.peerID)
        // Identify's stream ends at once; then nothing: closed by the idle timer, not before it
        // (no upper bound: a loaded machine only delays the close).
        try await connection.closeFuture.get()
        #expect(ContinuousClock.now - started >= .milliseconds(1900))
        #expect(await a.connections().isEmpty)
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("identify push")
struct IdentifyPushTests {
    @Test("a new listen address and a new protocol reach connected peers by identify push")
    func push() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (a, _) = try await HostTests.makeHost(group)
        let (b, bAddress) = try await HostTests.makeHost(group)
        _ = try await a.connect(to: bAddress)
        func view() -> IdentifyInfo? { a.peerInfo(b.peerID) }
        for _ in 0..<100 where view() == nil { try await Task.sleep(for: .milliseconds(20)) }
        #expect(view()?.listenAddresses.count == 1)

        let second = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        b.handle("/test/pushed/1.0.0") { stream in stream.reset() }
        var seen = false
        for _ in 0..<150 {
            if let info = view(), info.listenAddresses.contains(second), info.protocols.contains("/test/pushed/1.0.0") {
                seen = true
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(seen, "a's view of b after the push: \(String(describing: view()))")
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("advertised addresses")
struct AdvertisedAddressTests {
    @Test("a wildcard listen address is advertised as this host's interface addresses, loopback only without others")
    func wildcard() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Host(identity: Ed25519.PrivateKey(), group: group)
        let bound = try await host.listen(on: try Multiaddr("/ip4/0.0.0.0/tcp/0"))
        guard case .tcp(let port) = bound.components[1] else {
            Issue.record("no port in \(bound)")
            return
        }
        let advertised = host.advertisedAddresses
        #expect(!advertised.contains(bound))
        let others = LocalInterface.current().filter {
            $0.address.family == .v4 && AddressScope.of($0.address) != .loopback
        }
        #expect(advertised.contains(try Multiaddr("/ip4/127.0.0.1/tcp/\(port)")) == others.isEmpty)
        for interface in others {
            #expect(advertised.contains(Multiaddr([interface.address.multiaddrComponent, .tcp(port)])))
        }
        #expect(advertised.allSatisfy { address in
            guard case .ip4 = address.components[0], case .tcp(let p) = address.components[1] else { return false }
            return p == port
        })
        await host.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("Host: Noise rekeying over loopback TCP")
struct HostRekeyTests {
    @Test("rekeying every 8 messages: 8 MiB echoed on two streams at once arrives intact both ways")
    func echoUnderRekeying() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = Host.Configuration()
        configuration.rekey = NoiseRekeyPolicy(messages: 8)
        let a = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        let b = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        HostTests.registerEcho(on: b)
        let bound = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let connection = try await a.connect(to: bound.appending(.p2p(b.peerID.multihash)))

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for seed in 1...2 {
                tasks.addTask {
                    let size = 4 << 20
                    let payload = ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* (seed * 2 + 1) >> 3) })
                    let stream = try await a.newStream(to: b.peerID, protocols: ["/test/echo/1.0.0"])
                    async let echoed: ByteBuffer = {
                        var all = ByteBuffer()
                        while var chunk = try await stream.read() { all.writeBuffer(&chunk) }
                        return all
                    }()
                    var rest = payload
                    while rest.readableBytes > 0 {
                        try await stream.write(rest.readSlice(length: min(rest.readableBytes, 100_000))!)
                    }
                    try await stream.closeWrite()
                    #expect(try await echoed == payload)
                }
            }
            try await tasks.waitForAll()
        }
        // 8 MiB each way in 64 KiB messages: about 128 messages per direction, so at least 15
        // rekeys each way; the connection is still healthy afterwards.
        let rtts = try await Ping.ping(a, peer: b.peerID, count: 2)
        #expect(rtts.count == 2)
        #expect(connection.isClosing == false)
        let rekeys = try await connection.rekeys()
        #expect(rekeys.sent >= 15 && rekeys.received >= 15, "\(rekeys)")

        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("Host: connection trimming")
struct ConnectionTrimmingTests {
    @Test("above the high water mark idle connections are closed, longest idle first; busy ones stay")
    func trimsIdleConnections() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = Host.Configuration()
        configuration.connectionLowWater = 3
        configuration.connectionHighWater = 5
        configuration.connectionGracePeriod = .zero
        configuration.limits = .loopbackTestNetwork  // nine clients on 127.0.0.1
        let hub = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration)
        HostTests.registerEcho(on: hub)
        let bound = try await hub.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let hubAddress = bound.appending(.p2p(hub.peerID.multihash))
        var clients: [Host] = []
        var busy: [MuxedStream] = []
        for index in 0..<9 {
            let client = Host(identity: Ed25519.PrivateKey(), group: group)
            _ = try await client.connect(to: hubAddress)
            clients.append(client)
            // Two clients keep a stream open through everything (opened before the hub is crowded).
            if index == 1 || index == 3 {
                busy.append(try await client.newStream(to: hub.peerID, protocols: ["/test/echo/1.0.0"]))
            }
        }
        // Each registration above the high water mark trims; a connection still running identify
        // is busy then, so a trim may stop above the low water mark, but never above the high one.
        var count = Int.max
        for _ in 0..<100 {
            count = await hub.connections().count
            if count <= 5 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(count <= 5)
        // Once identify is done everywhere, a trim goes down to the low water mark: the two busy
        // connections and the one idle the shortest time.
        let busyPeers: Set<PeerID> = [clients[1].peerID, clients[3].peerID]
        for _ in 0..<100 {
            if await hub.connections().allSatisfy({ $0.streams == 0 || busyPeers.contains($0.remotePeer) }) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        count = await hub.connections().count
        if count > 3 { #expect(await hub.core.trim() == count - 3) }
        for _ in 0..<100 where await hub.connections().count > 3 {
            try await Task.sleep(for: .milliseconds(20))
        }
        let remaining = Set(await hub.connections().map(\.remotePeer))
        #expect(remaining.count == 3)
        #expect(remaining.isSuperset(of: busyPeers))
        // The busy streams never noticed.
        for stream in busy {
            try await stream.write(ByteBuffer(string: "still here"))
            #expect(try await stream.read() == ByteBuffer(string: "still here"))
        }
        // A trimmed peer simply connects again.
        let trimmed = try #require(clients.first { !remaining.contains($0.peerID) })
        let again = try await trimmed.connect(to: hubAddress)
        #expect(try await Ping.ping(trimmed, peer: hub.peerID, count: 1).count == 1)
        #expect(!again.isClosing)

        for client in clients { await client.shutdown() }
        await hub.shutdown()
        try await group.shutdownGracefully()
    }
}
