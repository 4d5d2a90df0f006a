import AgentTesting
import NIOCore
import Testing

@testable import Session

@Suite("multistream-select 1.0")
struct MultistreamTests {
    static func message(_ text: String) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeMultistreamMessage(text)
        return Array(buffer.readableBytesView)
    }

    static func bytes(_ actions: [MultistreamNegotiation.Action]) -> [UInt8] {
        actions.flatMap { action -> [UInt8] in
            if case .send(let buffer) = action { return Array(buffer.readableBytesView) }
            return []
        }
    }

    static func negotiated(_ actions: [MultistreamNegotiation.Action]) -> String? {
        for case .negotiated(let id) in actions { return id }
        return nil
    }

    @Test("message framing matches the spec: varint length including the newline")
    func framing() {
        #expect(Self.message("/multistream/1.0.0") == [0x13] + Array("/multistream/1.0.0\n".utf8))
        #expect(Self.message("na") == [0x03, 0x6e, 0x61, 0x0a])
    }

    /// Runs a dialer against a listener, shuttling bytes until both settle.
    static func run(dialer: inout MultistreamNegotiation, listener: inout MultistreamNegotiation) throws -> (String?, String?) {
        var toListener = ByteBuffer(bytes: bytes(dialer.start()))
        var toDialer = ByteBuffer(bytes: bytes(listener.start()))
        var dialerResult: String?
        var listenerResult: String?
        for _ in 0..<10 {
            let fromListener = try listener.receive(&toListener)
            listenerResult = listenerResult ?? negotiated(fromListener)
            toDialer.writeBytes(bytes(fromListener))
            let fromDialer = try dialer.receive(&toDialer)
            dialerResult = dialerResult ?? negotiated(fromDialer)
            toListener.writeBytes(bytes(fromDialer))
            if dialerResult != nil && listenerResult != nil { break }
        }
        return (dialerResult, listenerResult)
    }

    @Test("first choice accepted; pipelined header and proposal")
    func firstChoice() throws {
        var dialer = MultistreamNegotiation(dialerProposing: ["/noise"])
        var listener = MultistreamNegotiation(listenerSupporting: ["/noise", "/tls/1.0.0"])
        #expect(Self.bytes(dialer.start()) == Self.message("/multistream/1.0.0") + Self.message("/noise"))
        dialer = MultistreamNegotiation(dialerProposing: ["/noise"])
        let (d, l) = try Self.run(dialer: &dialer, listener: &listener)
        #expect(d == "/noise" && l == "/noise")
    }

    @Test("na then the next proposal; bytes after the agreement are left for the next protocol")
    func fallback() throws {
        var dialer = MultistreamNegotiation(dialerProposing: ["/mplex/6.7.0", "/yamux/1.0.0"])
        _ = dialer.start()
        var input = ByteBuffer(bytes: Self.message("/multistream/1.0.0") + Self.message("na"))
        #expect(Self.bytes(try dialer.receive(&input)) == Self.message("/yamux/1.0.0"))
        input.writeBytes(Self.message("/yamux/1.0.0") + [0x00, 0x01, 0x02])
        let actions = try dialer.receive(&input)
        #expect(Self.negotiated(actions) == "/yamux/1.0.0")
        #expect(Array(input.readableBytesView) == [0x00, 0x01, 0x02])
    }

    @Test("no common protocol fails with negotiationFailed on both sides")
    func noCommonProtocol() throws {
        var dialer = MultistreamNegotiation(dialerProposing: ["/a", "/b"])
        var listener = MultistreamNegotiation(listenerSupporting: ["/c"])
        do {
            _ = try Self.run(dialer: &dialer, listener: &listener)
            Issue.record("negotiation succeeded")
        } catch let error as SessionError {
            #expect(error.kind == .negotiationFailed)
            #expect(error.message.contains("/b"))
        }
    }

    @Test("a listener stops answering after 32 proposals")
    func proposalLimit() throws {
        var listener = MultistreamNegotiation(listenerSupporting: ["/x"])
        _ = listener.start()
        var input = ByteBuffer(bytes: Self.message("/multistream/1.0.0"))
        for index in 0..<40 { input.writeBytes(Self.message("/p\(index)")) }
        #expect(throws: SessionError.self) { _ = try listener.receive(&input) }
    }

    @Test("garbage instead of the header is a protocol violation")
    func garbageHeader() {
        var listener = MultistreamNegotiation(listenerSupporting: ["/x"])
        _ = listener.start()
        var input = ByteBuffer(bytes: Self.message("GET / HTTP/1.1"))
        #expect(throws: SessionError(.protocolViolation, "expected multistream header /multistream/1.0.0, got \"GET / HTTP/1.1\"")) {
            _ = try listener.receive(&input)
        }
    }

    @Test("a 10 MB 'line' is refused from its length prefix, before it is buffered")
    func hugeLine() {
        var buffer = ByteBuffer()
        buffer.writeUVarint(10_000_000)
        buffer.writeBytes([UInt8](repeating: 0x41, count: 100))
        #expect(throws: SessionError.self) { _ = try buffer.readMultistreamMessage() }
        // Even the first two bytes of such a prefix are enough to refuse it.
        var partial = ByteBuffer(bytes: [0x80, 0xad])
        #expect(throws: SessionError.self) { _ = try partial.readMultistreamMessage() }
    }

    @Test("partial messages wait for more bytes without consuming")
    func partial() throws {
        let whole = Self.message("/noise")
        for cut in 0..<whole.count {
            var buffer = ByteBuffer(bytes: whole.prefix(cut))
            #expect(try buffer.readMultistreamMessage() == nil)
            #expect(buffer.readableBytes == cut)
        }
    }

    @Test("missing newline, empty and non-UTF-8 messages are refused")
    func malformed() {
        for bytes: [UInt8] in [[0x02, 0x61, 0x62], [0x00], [0x03, 0xff, 0xfe, 0x0a]] {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(throws: SessionError.self, "\(bytes)") { _ = try buffer.readMultistreamMessage() }
        }
    }

    @Test("random bytes never crash a listener or dialer (seed 12, 10000 cases)")
    func hostile() {
        var generator = SeededGenerator(seed: 12)
        let valid = Self.message("/multistream/1.0.0") + Self.message("/noise")
        for round in 0..<10_000 {
            let input = round % 2 == 0 ? generator.mutate(valid) : generator.bytes(Int.random(in: 0...64, using: &generator))
            var listener = MultistreamNegotiation(listenerSupporting: ["/noise"])
            _ = listener.start()
            var buffer = ByteBuffer(bytes: input)
            do { _ = try listener.receive(&buffer) } catch { #expect(!error.message.isEmpty) }
            var dialer = MultistreamNegotiation(dialerProposing: ["/noise"])
            _ = dialer.start()
            buffer = ByteBuffer(bytes: input)
            do { _ = try dialer.receive(&buffer) } catch { #expect(!error.message.isEmpty) }
        }
    }
}
