import AgentTesting
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// The node's limits over QUIC (spec/network.md, "QUIC limits"): the per-connection stream limit
/// as QUIC MAX_STREAMS, the connection window reserved from the node's memory budget, and the
/// identify deadline. Real hosts over loopback UDP; every wait is for an event, bounded generously.
@Suite("QUIC: stream limit, memory budget, identify deadline")
struct QUICLimitsTests {
    static func listener(
        _ group: EventLoopGroup, log: LogRecorder? = nil, configure: (inout Host.Configuration) -> Void = { _ in }
    ) async throws -> (Host, Multiaddr) {
        var configuration = Host.Configuration()
        configure(&configuration)
        let logger: Logger = log?.logger ?? Logger(label: "agentd.host")
        let host = Host(identity: Ed25519.PrivateKey(), group: group, configuration: configuration, logger: logger)
        HostTests.registerEcho(on: host)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"))
        return (host, bound.appending(.p2p(host.peerID.multihash)))
    }

    /// Polls `condition` every 20 ms until it holds or `limit` passes; whether it held.
    static func eventually(within limit: TimeAmount = .seconds(20), _ condition: () async throws -> Bool)
        async rethrows -> Bool
    {
        let deadline = NIODeadline.now() + limit
        while NIODeadline.now() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    /// The node's reserved memory (`system.memory` usage).
    static func reservedMemory(_ host: Host) -> Int {
        let rows: [ResourceManager.Usage] = host.resources.usage()
        let memory = rows.filter { (row: ResourceManager.Usage) -> Bool in row.scope == "system" && row.resource == "memory" }
        return memory[0].used
    }

    @Test("streams past the peer's connection.streams limit are refused (MAX_STREAMS); the connection and node stay healthy")
    func streamFlood() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let limit = 8
        let (b, bAddress) = try await Self.listener(group) { $0.limits.connectionStreams = limit }
        let a = Host(identity: Ed25519.PrivateKey(), group: group)
        let connection = try await a.connect(to: bAddress)
        #expect(connection.quic != nil)
        // Identify's streams (ours to b counts against b's limit) end first.
        let identified = await Self.eventually { a.peerInfo(b.peerID) != nil && b.peerInfo(a.peerID) != nil }
        #expect(identified)

        var held: [MuxedStream] = []
        var refusals: [NetworkError] = []
        for _ in 0..<(limit * 4) {
            do {
                held.append(try await a.newStream(on: connection, protocols: ["/test/echo/1.0.0"]))
            } catch let error as NetworkError {
                refusals.append(error)
            }
        }
        // The limit is open (identify's stream may not have been credited back yet).
        #expect(held.count <= limit && held.count >= limit - 1, "\(held.count) streams open")
        #expect(refusals.count == limit * 4 - held.count)
        let kinds = Set(refusals.map(\.kind))
        #expect(kinds == [.resourceLimit], "\(refusals)")
        // The open streams still work.
        for (index, stream) in held.enumerated() {
            try await stream.write(ByteBuffer(string: "stream \(index)"))
            let back = try #require(try await stream.read())
            #expect(String(buffer: back) == "stream \(index)")
        }
        // Closing them gives the ids back (b sends MAX_STREAMS): new streams open on the same
        // connection, and ping works.
        for stream in held { stream.close() }
        var reopened: MuxedStream?
        _ = await Self.eventually {
            reopened = try? await a.newStream(on: connection, protocols: ["/test/echo/1.0.0"])
            return reopened != nil
        }
        let stream = try #require(reopened)
        stream.close()
        #expect(try await Ping.ping(a, peer: b.peerID, count: 2).count == 2)
        #expect(a.connection(to: b.peerID) === connection)
        // The node serves another peer meanwhile.
        let c = Host(identity: Ed25519.PrivateKey(), group: group)
        _ = try await c.connect(to: bAddress)
        #expect(try await Ping.ping(c, peer: b.peerID, count: 2).count == 2)
        await c.shutdown()
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("each QUIC connection reserves its connection window from the node's memory budget; a connection it cannot hold is refused")
    func memoryBudget() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // A 256 KiB window per connection, a 1 MiB budget: four connections fit.
        let window = 256 * 1024
        let (b, bAddress) = try await Self.listener(group) {
            $0.limits.connectionReceiveWindowMemory = window
            $0.limits.systemMemory = 4 * window
        }
        var clients: [Host] = []
        for _ in 0..<4 {
            let client = Host(identity: Ed25519.PrivateKey(), group: group)
            _ = try await client.connect(to: bAddress)
            clients.append(client)
        }
        let four = await Self.eventually { await b.connections().count == 4 }
        #expect(four)
        #expect(Self.reservedMemory(b) == 4 * window)
        // A fifth: its handshake completes, then b refuses it for want of memory and closes it.
        let fifth = Host(identity: Ed25519.PrivateKey(), group: group)
        if let connection = try? await fifth.connect(to: bAddress) {
            let closed = await HostCore.wait(for: connection.closeFuture, timeout: .seconds(20))
            #expect(closed)
        }
        #expect(b.resources.refusals(.systemMemory) >= 1)
        #expect(await b.connections().count == 4)
        #expect(Self.reservedMemory(b) == 4 * window)
        // One leaves: its window goes back, and the fifth gets in.
        await clients.removeFirst().shutdown()
        let three = await Self.eventually { Self.reservedMemory(b) == 3 * window }
        #expect(three)
        _ = try await fifth.connect(to: bAddress)
        #expect(try await Ping.ping(fifth, peer: b.peerID, count: 1).count == 1)
        #expect(Self.reservedMemory(b) == 4 * window)
        await fifth.shutdown()
        for client in clients { await client.shutdown() }
        let none = await Self.eventually { Self.reservedMemory(b) == 0 }
        #expect(none)
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a QUIC peer that completes the handshake but never identifies is closed at the identify deadline; identify cancels it")
    func identifyDeadline() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let log = LogRecorder()
        let (b, bAddress) = try await Self.listener(group, log: log) { $0.identifyTimeout = .seconds(3) }
        // A bare QUIC connection: the handshake authenticates both, but nothing on the client side
        // answers b's identify stream (the other host never wires the connection).
        let a = Host(identity: Ed25519.PrivateKey(), group: group)
        let core = try await a.core.quic.dial(bAddress, peer: b.peerID, on: group.next()).get()
        let registered = await Self.eventually { await b.connections().count == 1 }
        #expect(registered)
        // Closed by b well before its idle policy (300 s) or the QUIC idle timeout (30 s, and
        // keep-alive PINGs hold it open anyway).
        let closed = await Self.eventually { () async -> Bool in
            (try? await core.eventLoop.submit { core.isClosed }.get()) ?? false
        }
        #expect(closed)
        let gone = await Self.eventually { await b.connections().isEmpty }
        #expect(gone)
        #expect(log.lines(containing: "identify did not complete within 3000 ms").count == 1, "log:\n\(log)")
        // An honest peer's identify cancels the deadline (a state check, not a race with the clock).
        let c = Host(identity: Ed25519.PrivateKey(), group: group)
        _ = try await c.connect(to: bAddress)
        let identified = await Self.eventually { b.peerInfo(c.peerID) != nil }
        #expect(identified)
        let atB = try #require(b.connection(to: c.peerID))
        let quic = try #require(atB.quic)
        let cancelled = await Self.eventually { () async -> Bool in
            (try? await quic.eventLoop.submit { quic.identifyDeadline == nil }.get()) ?? false
        }
        #expect(cancelled)
        #expect(!atB.isClosing)
        #expect(log.lines(containing: "identify did not complete").count == 1)
        await c.shutdown()
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("the QUIC socket asks for 4 MiB receive and send buffers and gets what the kernel's caps allow")
    func socketBuffers() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let logger = Logger(label: "test")
        let configuration = QUICEndpoint.Configuration()
        let certificates = QUICCertificates(identity: Ed25519.PrivateKey(), configuration: configuration, logger: logger)
        let (channel, _) = try await QUICEndpoint.bind(
            host: "127.0.0.1", port: 0, group: group, certificates: certificates, configuration: configuration,
            logger: logger)
        // Linux grants twice what is asked, up to twice net.core.{r,w}mem_max.
        func expected(_ cap: String) throws -> Int {
            let text = try String(contentsOfFile: "/proc/sys/net/core/\(cap)", encoding: .utf8)
            let limit = try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
            return 2 * min(QUICEndpoint.socketBufferSize, limit)
        }
        let receive = try await channel.getOption(.socketOption(.so_rcvbuf)).get()
        let send = try await channel.getOption(.socketOption(.so_sndbuf)).get()
        #expect(Int(receive) == (try expected("rmem_max")))
        #expect(Int(send) == (try expected("wmem_max")))
        try await channel.close()
        try await group.shutdownGracefully()
    }
}
