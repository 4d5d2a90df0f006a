import AgentTesting
import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network
@testable import Session

#if canImport(Glibc)
    import Glibc
#endif

/// Memory one connection can make the node hold (issue #10, finding 3): receive windows, queued
/// echoes and perf answers, counted at what the buffers cost.
@Suite("Memory budgets: one connection cannot grow the node without bound", .serialized)
struct MemoryBudgetTests {
    /// This process's resident set (`VmRSS`), after handing free heap pages back (glibc keeps up to
    /// 64 MiB of them otherwise, see `MemoryTuning`).
    static func residentBytes() throws -> Int {
        #if os(Linux)
            typealias MallocTrim = @convention(c) (Int) -> Int32
            if let handle = dlopen(nil, RTLD_NOW) {
                if let symbol = dlsym(handle, "malloc_trim") { _ = unsafeBitCast(symbol, to: MallocTrim.self)(0) }
                dlclose(handle)
            }
        #endif
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        return try #require(Int(fields[1])) * 1024
    }

    /// The multistream-select opening of a stream that asks for `protocolID`, without waiting for
    /// the answer (as a lazy dialer).
    static func opening(_ protocolID: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultistreamMessage(MultistreamMessage.protocolID)
        buffer.writeMultistreamMessage(protocolID)
        return buffer
    }

    @Test(
        "300 ping streams filled to their windows and 300 perf streams asking 2^63 bytes, no window updates: RSS grows < 64 MiB, the accounting stays within its budgets",
        .timeLimit(.minutes(5)))
    func pingAndPerfFlood() async throws {
        // The attacker's 75 MiB queue ahead of its ping answers in the TCP stream: the node reads
        // them late, and its ping timeout (a defence of its own) would end the connection before
        // the memory is measured. Here it waits; so does the identify deadline (the attacker never
        // answers identify, and filling 600 streams takes longer than 30 s on a slow machine).
        try await TestNetwork.run(configure: {
            $0.yamux.pingTimeout = .seconds(300)
            $0.identifyTimeout = .seconds(300)
        }) { net in
            Perf.register(on: net.victim)  // as `agentd --perf`
            let peer = try await RawYamuxPeer.connect(to: net, from: "127.0.0.2")
            try await peer.ping()
            // From here on the attacker sends no window update and drops what it receives; it only
            // answers pings (so that the connection stays up, as a patient attacker's would).
            let channel = peer.raw.channel
            try await channel.eventLoop.submit {
                let secure = try channel.pipeline.syncOperations.handler(type: SecureConnectionHandler.self)
                try channel.pipeline.syncOperations.addHandler(PingAnswerer(), position: .after(secure))
            }.get()
            let before = try Self.residentBytes()

            let window = Int(YamuxConfiguration.specInitialWindow)
            for index in 0..<300 {
                // Client streams are odd. Ping and perf alternate, so that refused perf streams free
                // their windows for the next ping stream.
                let ping = YamuxStreamID(UInt32(4 * index + 1))
                let perf = YamuxStreamID(UInt32(4 * index + 3))
                var first = Self.opening(Ping.protocolID)
                let echoes = window - first.readableBytes
                first.writeBytes([UInt8](repeating: 0x70, count: 16 * 1024 - first.readableBytes))
                var frames: [YamuxFrame] = [.data(ping, first, flags: .syn)]
                var sent = 16 * 1024 - Self.opening(Ping.protocolID).readableBytes
                while sent < echoes {
                    let size = min(16 * 1024, echoes - sent)
                    frames.append(.data(ping, ByteBuffer(repeating: 0x70, count: size)))
                    sent += size
                }
                var request = Self.opening(Perf.protocolID)
                request.writeInteger(UInt64(1) << 63)
                frames.append(.data(perf, request, flags: [.syn, .fin]))
                do {
                    try await peer.send(frames)
                } catch {
                    Issue.record("the node closed the connection at stream \(index): \(error)\nnode log:\n\(net.log)")
                    throw error
                }
            }

            // Wait until the node has taken all of it: its accounting stops changing.
            let connection = try #require(net.victim.connection(to: peer.peerID))
            var last = try await connection.eventLoop.submit { connection.memoryUsage() }.get()
            var stableFor = 0
            let deadline = ContinuousClock.now + .seconds(60)
            while stableFor < 5, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                let now = try await connection.eventLoop.submit { connection.memoryUsage() }.get()
                stableFor = now == last ? stableFor + 1 : 0
                last = now
            }
            let after = try Self.residentBytes()
            print("memory flood: RSS +\((after - before) >> 20) MiB, accounting \(last)")
            let limits = net.victim.resources.limits
            let usage = last
            #expect(usage.receiveWindows <= limits.connectionReceiveWindowMemory)
            // A write may take the queue past its budget by itself (at most one stream's queue).
            #expect(usage.sendQueueCost <= limits.connectionSendQueueMemory + limits.streamSendQueueBytes)
            // Reserved from the node: one granule of headroom, rounded up, given back beyond three.
            #expect(usage.reserved <= usage.receiveWindows + usage.sendQueueCost + 3 * ResourceManager.memoryGranule)
            let system = try #require(
                net.victim.resources.usage().first { $0.scope == "system" && $0.resource == "memory" })
            #expect(system.used <= system.limit)
            #expect(system.used == usage.reserved)
            // A budget was what stopped the flood, and the accounting says which: the windows' (new
            // streams refused) or the send queues' (full of perf data and ping echoes, so the node
            // stopped reading). Which one comes first depends on how the node's reads and the
            // attacker's writes interleave: under load a CI run saw 104 windows live (26 MiB) and
            // the send queues full, with no stream refused.
            let windowsRefused = net.victim.resources.refusals(.connectionReceiveWindowMemory)
            #expect(
                windowsRefused > 0 || usage.sendQueueCost >= limits.connectionSendQueueMemory,
                "neither budget reached: \(windowsRefused) streams refused for windows, accounting \(usage)")
            #expect(after - before < 64 << 20, "RSS grew by \((after - before) >> 20) MiB; node accounting \(usage)")
        }
    }

    @Test("perf refuses a request beyond its maximum with a reset", .timeLimit(.minutes(1)))
    func perfMaximum() async throws {
        try await TestNetwork.run { net in
            Perf.register(on: net.victim, maximumBytes: 1 << 20)
            let client = net.makeGoodHost()
            _ = try await client.connect(to: net.address)
            let small = try await Perf.run(client, peer: net.victim.peerID, upload: 1000, download: 1 << 20)
            #expect(small.downloadBytes == 1 << 20)
            await #expect(throws: (any Error).self) {
                _ = try await Perf.run(client, peer: net.victim.peerID, upload: 0, download: (1 << 20) + 1)
            }
            await #expect(throws: (any Error).self) {
                _ = try await Perf.run(client, peer: net.victim.peerID, upload: (1 << 20) + 1, download: 0)
            }
        }
    }

    @Test("a host serves no perf unless registered (agentd --perf)")
    func perfOffByDefault() async throws {
        try await TestNetwork.run { net in
            #expect(!net.victim.protocols.contains(Perf.protocolID))
            let client = net.makeGoodHost()
            _ = try await client.connect(to: net.address)
            await #expect(throws: (any Error).self) {
                _ = try await Perf.run(client, peer: net.victim.peerID, upload: 0, download: 1)
            }
        }
    }
}

/// Reads the node's yamux frames from an upgraded raw connection, answers its pings, and drops
/// everything else (it never grants window, and holds nothing). On the streams the node credits
/// (ping streams whose handler read), it sends more pings, up to `extraPerStream` bytes each: the
/// echoes then outgrow the window the attacker never updates, and queue at the node.
private final class PingAnswerer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let extraPerStream = 512 * 1024
    private var buffer = ByteBuffer()
    private var extraSent: [YamuxStreamID: Int] = [:]

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        var answers = ByteBuffer()
        while let frame = try? buffer.readYamuxFrame(maximumPayload: 16 << 20) {
            if frame.type == .ping, frame.flags == .syn {
                answers.writeYamuxFrame(.ping(opaque: frame.length, ack: true))
            }
            if frame.type == .windowUpdate, frame.streamID.isClientInitiated, frame.length > 0,
                !frame.flags.contains(.rst)
            {
                var credit = min(Int(frame.length), Self.extraPerStream - extraSent[frame.streamID, default: 0])
                extraSent[frame.streamID, default: 0] += max(credit, 0)
                while credit > 0 {
                    let size = min(credit, 16 * 1024)
                    answers.writeYamuxFrame(.data(frame.streamID, ByteBuffer(repeating: 0x70, count: size)))
                    credit -= size
                }
            }
        }
        buffer.discardReadBytes()
        if answers.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(answers), promise: nil) }
    }
}
