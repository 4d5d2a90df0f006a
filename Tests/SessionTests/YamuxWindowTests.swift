import NIOCore
import Testing

@testable import Session

@Suite("yamux flow-control arithmetic")
struct YamuxWindowTests {
    static let kib: UInt32 = 1024
    static let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)

    @Test("credit grows with updates and shrinks with data, to exactly zero")
    func window() throws {
        var window = YamuxWindow(size: 256 * Self.kib)
        try window.consume(256 * Self.kib)
        #expect(window.size == 0)
        try window.increase(by: 10)
        try window.consume(10)
        #expect(window.size == 0)
        window.grant(5)
        window.spend(5)
        #expect(window.size == 0)
    }

    @Test("data beyond the credit is a flow-control violation and changes nothing")
    func overrun() {
        var window = YamuxWindow(size: 100)
        let error = #expect(throws: SessionError.self) { try window.consume(101) }
        #expect(error?.kind == .flowControlViolation)
        #expect(window.size == 100)
    }

    @Test("a window past 2^32-1 is a flow-control violation; exactly 2^32-1 is fine")
    func overflow() throws {
        var window = YamuxWindow(size: 256 * Self.kib)
        try window.increase(by: UInt32.max - 256 * Self.kib)
        #expect(window.size == .max)
        let error = #expect(throws: SessionError.self) { try window.increase(by: 1) }
        #expect(error?.kind == .flowControlViolation)
        #expect(window.size == .max)
    }

    @Test("a receive window starts with the spec's 256 KiB of credit")
    func receiveInitial() throws {
        var window = YamuxReceiveWindow(initialSize: 256 * Self.kib)
        #expect(window.size == 256 * Self.kib && window.credit.size == 256 * Self.kib && window.pendingCredit == 0)
        try window.receive(256 * Self.kib, now: Self.t0)
        #expect(window.credit.size == 0 && window.unconsumed == 256 * Self.kib)
        let error = #expect(throws: SessionError.self) { try window.receive(1, now: Self.t0) }
        #expect(error?.kind == .flowControlViolation)
    }

    @Test("a larger initial window is owed to the peer at once (it goes with our SYN or ACK)")
    func receiveLargerInitial() {
        var window = YamuxReceiveWindow(initialSize: 1024 * Self.kib)
        #expect(window.credit.size == 256 * Self.kib)
        #expect(window.pendingCredit == 768 * Self.kib)
        #expect(window.updateIsDue)
        #expect(window.takePendingCredit() == 768 * Self.kib)
        #expect(window.credit.size == 1024 * Self.kib)
    }

    @Test("an update falls due once half the window was read, not before")
    func updateThreshold() throws {
        var window = YamuxReceiveWindow(initialSize: 256 * Self.kib)
        try window.receive(200 * Self.kib, now: Self.t0)
        window.consume(128 * Self.kib - 1)
        #expect(!window.updateIsDue)
        window.consume(1)
        #expect(window.updateIsDue)
        #expect(window.takePendingCredit() == 128 * Self.kib)
        // credit + unconsumed + pending == size, always.
        #expect(window.credit.size + window.unconsumed + window.pendingCredit == window.size)
        #expect(window.credit.size == 184 * Self.kib && window.unconsumed == 72 * Self.kib)
    }

    @Test("auto-tuning doubles when updates come within 2 RTTs, up to the limit and no further")
    func autoTuneGrows() throws {
        var window = YamuxReceiveWindow(initialSize: 256 * Self.kib)
        let rtt = TimeAmount.milliseconds(10)
        var now = Self.t0
        var sizes: [UInt32] = []
        for _ in 0..<10 {
            try window.receive(window.credit.size, now: now)
            window.consume(window.unconsumed)
            now = now + .milliseconds(19)
            _ = window.autoTune(now: now, rtt: rtt, limit: 4096 * Self.kib)
            _ = window.takePendingCredit()
            #expect(window.credit.size + window.unconsumed + window.pendingCredit == window.size)
            sizes.append(window.size / Self.kib)
        }
        #expect(sizes == [512, 1024, 2048, 4096, 4096, 4096, 4096, 4096, 4096, 4096])
    }

    @Test("auto-tuning keeps the window for a slow reader, without an RTT, and before any data")
    func autoTuneKeeps() throws {
        var window = YamuxReceiveWindow(initialSize: 256 * Self.kib)
        // No data yet: no epoch to measure.
        #expect(window.autoTune(now: Self.t0, rtt: .milliseconds(10), limit: .max) == 0)
        try window.receive(1, now: Self.t0)
        // Exactly 2 RTTs is not "faster than" 2 RTTs.
        #expect(window.autoTune(now: Self.t0 + .milliseconds(20), rtt: .milliseconds(10), limit: .max) == 0)
        #expect(window.autoTune(now: Self.t0 + .milliseconds(21), rtt: nil, limit: .max) == 0)
        #expect(
            window.autoTune(now: Self.t0 + .milliseconds(22), rtt: .milliseconds(10), limit: .max) == 256 * Self.kib)
        #expect(
            window.autoTune(now: Self.t0 + .milliseconds(23), rtt: .milliseconds(10), limit: 600 * Self.kib) == 88
                * Self.kib)
        #expect(window.size == 600 * Self.kib)
    }

    @Test("the send queue slices large writes and gathers small ones")
    func sendQueue() {
        var queue = YamuxSendQueue()
        queue.append(yamuxPattern(40_000))
        queue.append(ByteBuffer())
        #expect(queue.count == 40_000)
        #expect(queue.dequeue(upTo: 16_384) == yamuxPattern(40_000).getSlice(at: 0, length: 16_384))
        #expect(queue.count == 23_616)
        for seed: UInt8 in 1...5 { queue.append(yamuxPattern(10, seed: seed)) }
        #expect(queue.dequeue(upTo: 30_000).readableBytes == 23_616)  // the rest of the big buffer, alone
        var gathered = queue.dequeue(upTo: 25)
        #expect(gathered.readBytes(length: 10) == Array(yamuxPattern(10, seed: 1).readableBytesView))
        #expect(gathered.readBytes(length: 10) == Array(yamuxPattern(10, seed: 2).readableBytesView))
        #expect(gathered.readBytes(length: 5) == Array(yamuxPattern(10, seed: 3).readableBytesView.prefix(5)))
        #expect(queue.count == 25)
        #expect(queue.dequeue(upTo: 100).readableBytes == 25)
        #expect(queue.isEmpty)
    }

    @Test("the closed-stream memory forgets the oldest id first")
    func closedStreams() {
        var closed = YamuxClosedStreams(capacity: 3)
        for id: YamuxStreamID in [1, 3, 5, 3] { closed.insert(id) }
        #expect(closed.count == 3 && !closed.hasForgotten)
        closed.insert(7)
        #expect(!closed.contains(1) && closed.contains(3) && closed.contains(7))
        #expect(closed.count == 3 && closed.hasForgotten)
    }
}
