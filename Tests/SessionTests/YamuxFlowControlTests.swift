import NIOCore
import Testing

@testable import Session

@Suite("yamux flow control")
struct YamuxFlowControlTests {
    static let kib = 1024
    static let mib = 1024 * 1024
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test("a sender stops at exactly 256 KiB unacknowledged and resumes as the reader consumes")
    func stopsAtWindow() throws {
        var pair = YamuxPair()
        pair.autoConsume = [true, false]
        let id = try pair.client.openStream()
        let payload = yamuxPattern(Self.mib)
        try pair.client.write(payload, to: id)
        try pair.run()
        #expect(pair.receivedCount(.server, on: id) == 256 * Self.kib)
        #expect(pair.client.sendWindow(of: id) == 0)
        #expect(pair.client.queuedBytes(on: id) == 768 * Self.kib)
        // Data frames never exceed 16 KiB of payload.
        #expect(pair.sent(.client).allSatisfy { $0.payload.readableBytes <= 16 * Self.kib })

        // Reading less than half a window gives nothing back; the sender stays put.
        pair.consume(.server, 128 * Self.kib - 1, on: id)
        try pair.run()
        #expect(pair.receivedCount(.server, on: id) == 256 * Self.kib)
        #expect(!pair.sent(.server).contains { $0.type == .windowUpdate && $0.length > 0 })
        // One more byte: a 128 KiB update, and exactly 128 KiB more arrive.
        pair.consume(.server, 1, on: id)
        try pair.run()
        #expect(pair.sent(.server).last { $0.type == .windowUpdate } == .windowUpdate(id, delta: 128 * UInt32(Self.kib)))
        // An RTT probe goes with the update (auto-tuning measures the loop under load).
        #expect(pair.sent(.server).last?.type == .ping)
        #expect(pair.receivedCount(.server, on: id) == 384 * Self.kib)
        #expect(pair.client.sendWindow(of: id) == 0)

        // The reader catches up; everything arrives, in order, and never more than a window is held.
        while pair.unconsumed(.server, on: id) > 0 {
            #expect(pair.unconsumed(.server, on: id) <= 256 * Self.kib)
            pair.consume(.server, pair.unconsumed(.server, on: id), on: id)
            try pair.run()
        }
        #expect(pair.received(.server, on: id) == Array(payload.readableBytesView))
        // Without an RTT measurement the window never grew.
        #expect(pair.server.receiveWindow(of: id) == 256 * UInt32(Self.kib))
    }

    @Test("a FIN waits behind data that waits for window")
    func finWaitsForData() throws {
        var pair = YamuxPair()
        pair.autoConsume = [true, false]
        let id = try pair.client.openStream()
        try pair.client.write(yamuxPattern(300 * Self.kib), to: id)
        try pair.client.closeWrite(id)
        try pair.run()
        #expect(!pair.events(.server).contains(.remoteClosedWrite(id)))
        pair.consume(.server, 256 * Self.kib, on: id)
        try pair.run()
        #expect(pair.receivedCount(.server, on: id) == 300 * Self.kib)
        #expect(pair.events(.server).last == .remoteClosedWrite(id))
    }

    @Test("a peer that ignores the window gets flowControlViolation")
    func peerIgnoresWindow() throws {
        var server = YamuxSession(role: .server)
        _ = try yamuxFeed(&server, [.windowUpdate(1, delta: 0, flags: .syn)])
        for _ in 0..<16 { _ = try yamuxFeed(&server, [.data(1, yamuxPattern(16 * Self.kib))]) }  // exactly 256 KiB
        let error = #expect(throws: SessionError.self) { try yamuxFeed(&server, [.data(1, yamuxPattern(1))]) }
        #expect(error?.kind == .flowControlViolation)
        #expect(error?.message.contains("stream 1") == true)
        #expect(server.failure == error)
        #expect(yamuxDrain(&server) == [.goAway(.protocolError)])
        #expect(
            (#expect(throws: SessionError.self) { try server.receive(.ping(opaque: 1, ack: false), now: Self.t0) })
                == error)
    }

    @Test("a stream opened with more data than the initial window is a violation, accepted or refused")
    func oversizedSYN() throws {
        var server = YamuxSession(role: .server)
        let error = #expect(throws: SessionError.self) {
            try yamuxFeed(&server, [.data(1, yamuxPattern(256 * Self.kib + 1), flags: .syn)])
        }
        #expect(error?.kind == .flowControlViolation)

        var configuration = YamuxConfiguration()
        configuration.maximumStreams = 1
        var full = YamuxSession(role: .server, configuration: configuration)
        _ = try yamuxFeed(&full, [.windowUpdate(1, delta: 0, flags: .syn)])
        let refused = #expect(throws: SessionError.self) {
            try yamuxFeed(&full, [.data(3, yamuxPattern(256 * Self.kib + 1), flags: .syn)])
        }
        #expect(refused?.kind == .flowControlViolation)
    }

    @Test("a data frame larger than any window is refused by the parser inside the session")
    func frameLargerThanMaximumWindow() throws {
        var server = YamuxSession(role: .server)
        // No SYN, no live stream: only the largest window bounds it.
        var bytes = ByteBuffer(bytes: yamuxBytes("00 00 00 00 00 00 00 01 01 00 00 01"))
        let error = #expect(throws: SessionError.self) { try server.receive(bytes: &bytes, now: Self.t0) }
        #expect(error?.kind == .messageTooLarge)
        #expect(server.failure != nil)
    }

    @Test("window overflow: credit up to 2^32-1 is fine, one byte more is a violation")
    func windowOverflow() throws {
        var client = YamuxSession(role: .client)
        let id = try client.openStream()
        let room = UInt32.max - 256 * UInt32(Self.kib)
        _ = try yamuxFeed(&client, [.windowUpdate(id, delta: room, flags: .ack)])
        #expect(client.sendWindow(of: id) == .max)
        let error = #expect(throws: SessionError.self) { try yamuxFeed(&client, [.windowUpdate(id, delta: 1)]) }
        #expect(error?.kind == .flowControlViolation)
    }

    @Test("many small window updates (py-libp2p sends one per read) just add up")
    func smallUpdates() throws {
        var client = YamuxSession(role: .client)
        let id = try client.openStream()
        for _ in 0..<10_000 { _ = try client.receive(.windowUpdate(id, delta: 32), now: Self.t0) }
        #expect(client.sendWindow(of: id) == UInt32(256 * 1024 + 320_000))
    }

    /// Sends `total` bytes client → server on a fresh stream, each round of the loop taking `step` of
    /// virtual time; the client sends all its credit allows each round (a sender held back by the
    /// window only). The server reads at once, or `readPerStep` bytes per round. Returns the server's
    /// window sizes, in order of change, and the largest credit the client ever had.
    static func bulkTransfer(
        _ pair: inout YamuxPair, total: Int, step: TimeAmount, readPerStep: Int? = nil
    ) throws -> (windows: [UInt32], largestCredit: UInt32) {
        pair.keepsBytes = false
        pair.autoConsume[YamuxPair.Side.server.rawValue] = readPerStep == nil
        let id = try pair.client.openStream()
        let chunk = yamuxPattern(Self.mib)
        var windows: [UInt32] = []
        var largestCredit: UInt32 = 0
        var written = 0
        while pair.receivedCount(.server, on: id) < total {
            repeat {
                if written < total { written += try pair.write(.client, chunk, on: id) }
                try pair.flush(.client)
            } while written < total && (pair.client.sendWindow(of: id) ?? 0) > 0
            pair.now = pair.now + step
            if let readPerStep {
                pair.consume(.server, min(readPerStep, pair.unconsumed(.server, on: id)), on: id)
            }
            try pair.flush(.server)
            if let window = pair.server.receiveWindow(of: id), window != windows.last { windows.append(window) }
            largestCredit = max(largestCredit, pair.client.sendWindow(of: id) ?? 0)
        }
        return (windows, largestCredit)
    }

    @Test("auto-tuning doubles the window while updates come faster than 2 RTTs, up to 16 MiB and no further")
    func autoTuneGrows() throws {
        var pair = YamuxPair()
        try pair.measureRTT(from: .server, rtt: .milliseconds(10))
        let (windows, largestCredit) = try Self.bulkTransfer(&pair, total: 64 * Self.mib, step: .milliseconds(1))
        let kib = UInt32(Self.kib)
        #expect(windows == [256 * kib, 512 * kib, 1024 * kib, 2048 * kib, 4096 * kib, 8192 * kib, 16384 * kib])
        #expect(largestCredit <= 16 * UInt32(Self.mib))
        #expect(pair.server.totalReceiveWindow == 16 * Self.mib)
    }

    @Test("auto-tuning keeps the window for a reader that takes longer than 2 RTTs per half window")
    func autoTuneSlowReader() throws {
        var pair = YamuxPair()
        try pair.measureRTT(from: .server, rtt: .milliseconds(10))
        // 32 KiB per 10 ms: half a window (128 KiB) takes 40 ms, more than 2 RTTs.
        let (windows, _) = try Self.bulkTransfer(
            &pair, total: 4 * Self.mib, step: .milliseconds(10), readPerStep: 32 * Self.kib)
        #expect(windows == [256 * UInt32(Self.kib)])
    }

    @Test("auto-tuning stops at three quarters of the session's receive window budget")
    func autoTuneBudget() throws {
        var configuration = YamuxConfiguration()
        configuration.sessionReceiveWindowBudget = Self.mib
        var pair = YamuxPair(server: configuration)
        try pair.measureRTT(from: .server, rtt: .milliseconds(10))
        let (windows, _) = try Self.bulkTransfer(&pair, total: 8 * Self.mib, step: .milliseconds(1))
        // The last quarter stays for new streams' initial windows.
        #expect(windows == [256 * UInt32(Self.kib), 512 * UInt32(Self.kib), 768 * UInt32(Self.kib)])
    }
}

@Suite("yamux flow control before the payload")
struct YamuxEarlyWindowTests {
    @Test("a data header beyond the stream's credit is refused before its payload arrives")
    func headerBeyondCredit() throws {
        var server = YamuxSession(role: .server)
        var bytes = ByteBuffer(bytes: yamuxEncode([.windowUpdate(1, delta: 0, flags: .syn)]))
        _ = try server.receive(bytes: &bytes, now: .uptimeNanoseconds(0))
        // Stream 1 has 256 KiB of credit; a header announcing one byte more fails at once.
        bytes.writeBytes(yamuxBytes("00 00 00 00 00 00 00 01 00 04 00 01"))
        let error = #expect(throws: SessionError.self) { try server.receive(bytes: &bytes, now: .uptimeNanoseconds(0)) }
        #expect(error?.kind == .flowControlViolation)
        // A SYN may use the spec's initial window only.
        var fresh = YamuxSession(role: .server)
        var syn = ByteBuffer(bytes: yamuxBytes("00 00 00 01 00 00 00 03 00 04 00 01"))
        let synError = #expect(throws: SessionError.self) { try fresh.receive(bytes: &syn, now: .uptimeNanoseconds(0)) }
        #expect(synError?.kind == .flowControlViolation)
        // Exactly the credit waits for its payload.
        var exact = YamuxSession(role: .server)
        var full = ByteBuffer(bytes: yamuxBytes("00 00 00 01 00 00 00 03 00 04 00 00"))
        #expect(try exact.receive(bytes: &full, now: .uptimeNanoseconds(0)) == [])
        #expect(full.readableBytes == 12)
    }
}
