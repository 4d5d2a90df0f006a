import NIOCore
import Testing

@testable import Session

/// The session's memory budgets (issue #10, finding 3): initial windows count, queued bytes count at
/// what their buffers cost, and the caller's ceiling (`memoryLimit`) holds.
@Suite("yamux memory budgets")
struct YamuxMemoryBudgetTests {
    static let kib = 1024
    static let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func syn(_ id: UInt32) -> ByteBuffer {
        ByteBuffer(bytes: yamuxEncode([.windowUpdate(YamuxStreamID(id), delta: 0, flags: .syn)]))
    }

    @Test("a SYN whose initial window does not fit the receive-window budget is reset")
    func synBeyondBudget() throws {
        var configuration = YamuxConfiguration()
        configuration.sessionReceiveWindowBudget = 4 * 256 * Self.kib
        var server = YamuxSession(role: .server, configuration: configuration)
        var opened: [YamuxStreamID] = []
        for index in 0..<6 {
            var bytes = Self.syn(UInt32(2 * index + 1))
            for case .streamOpened(let id) in try server.receive(bytes: &bytes, now: Self.now) { opened.append(id) }
        }
        #expect(opened == [1, 3, 5, 7])
        #expect(server.totalReceiveWindow == 4 * 256 * Self.kib)
        #expect(server.refusedForMemory == 2)
        let frames = server.nextOutboundFrames(maximumBytes: 1 << 20).frames
        #expect(frames.contains(.windowUpdate(9, delta: 0, flags: .rst)))
        #expect(frames.contains(.windowUpdate(11, delta: 0, flags: .rst)))
        // Our own streams are held to it too.
        #expect(throws: SessionError.self) { _ = try server.openStream() }
        // A stream that ends gives its window back.
        server.reset(1)
        var again = Self.syn(13)
        #expect(try server.receive(bytes: &again, now: Self.now).contains(.streamOpened(13)))
    }

    @Test("the caller's memory ceiling refuses SYNs and stops writes")
    func memoryCeiling() throws {
        var server = YamuxSession(role: .server)
        server.memoryLimit = 300 * Self.kib
        var first = Self.syn(1)
        #expect(try server.receive(bytes: &first, now: Self.now).contains(.streamOpened(1)))
        var second = Self.syn(3)
        #expect(!(try server.receive(bytes: &second, now: Self.now).contains(.streamOpened(3))))
        #expect(server.refusedForMemory == 1)
        // 44 KiB of room left under the ceiling: a write may use it, then writes wait.
        #expect(server.writableBytesOrWait(on: 1) > 0)
        try server.write(ByteBuffer(repeating: 1, count: 64 * Self.kib), to: 1)
        #expect(server.writableBytesOrWait(on: 1) == 0)
        server.memoryLimit = 1 << 30
        #expect(server.retryWaitingWriters() == [.writable(1)])
    }

    @Test("10,000 small echoes sliced from 256 KiB read buffers cost about their bytes, not their buffers")
    func smallSlicesCostTheirBytes() throws {
        var configuration = YamuxConfiguration()
        configuration.maximumQueuedBytesPerStream = 1 << 20
        var server = YamuxSession(role: .server, configuration: configuration)
        var syn = Self.syn(1)
        _ = try server.receive(bytes: &syn, now: Self.now)
        _ = server.nextOutboundFrames(maximumBytes: 1 << 20)
        var readBuffer = ByteBuffer(repeating: 0x33, count: 256 * Self.kib)
        for _ in 0..<10_000 {
            // As a ping echo: 32 bytes read from (a view of) a large socket read buffer.
            if readBuffer.readableBytes < 32 { readBuffer = ByteBuffer(repeating: 0x33, count: 256 * Self.kib) }
            try server.write(readBuffer.readSlice(length: 32)!, to: 1)
        }
        #expect(server.queuedBytes(on: 1) == 320_000)
        // Were each echo a view, they would pin two 256 KiB buffers, and 10,000 buffer headers.
        #expect(server.totalSendQueueCost < 2 * 320_000)
        #expect(server.totalSendQueueCost >= 320_000)
    }

    @Test("the send-queue budget: writes wait once it is reached and resume when it drained by half")
    func sendQueueBudget() throws {
        var configuration = YamuxConfiguration()
        configuration.sessionSendQueueBudget = 512 * Self.kib
        var pair = YamuxPair(server: configuration)
        pair.autoConsume = [false, false]
        var streams: [YamuxStreamID] = []
        for _ in 0..<4 { streams.append(try pair.server.openStream()) }
        try pair.run()
        // Each stream's window (256 KiB) goes out; the peer reads nothing, so the rest stays queued.
        for id in streams { try pair.server.write(ByteBuffer(repeating: 7, count: 400 * Self.kib), to: id) }
        try pair.run()
        #expect(pair.server.totalSendQueueCost >= 512 * Self.kib)
        for id in streams { #expect(pair.server.writableBytesOrWait(on: id) == 0) }
        // The peer reads everything: the queues drain, and every waiting writer hears of it.
        for id in streams { pair.consume(.client, pair.receivedCount(.client, on: id), on: id) }
        try pair.run()
        #expect(pair.server.totalSendQueueCost == 0)
        let writable = pair.events(.server).compactMap { action -> YamuxStreamID? in
            if case .writable(let id) = action { return id } else { return nil }
        }
        #expect(Set(writable).isSuperset(of: streams))
    }
}
