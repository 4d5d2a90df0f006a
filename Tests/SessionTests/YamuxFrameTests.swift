import AgentTesting
import NIOCore
import Testing

@testable import Session

@Suite("yamux frames")
struct YamuxFrameTests {
    static let hello = ByteBuffer(string: "hello")

    /// Hand-written from the spec's field table: version, type, flags, stream id, length, big endian.
    static let vectors: [(String, YamuxFrame)] = [
        // Data with SYN on stream 1, 5 bytes: the header the spec's field table gives, then "hello".
        ("00 00 00 01 00 00 00 01 00 00 00 05 68 65 6c 6c 6f", .data(1, hello, flags: .syn)),
        ("00 00 00 00 00 00 00 03 00 00 00 00", .data(3, ByteBuffer())),
        ("00 00 00 04 00 00 00 02 00 00 00 05 68 65 6c 6c 6f", .data(2, hello, flags: .fin)),
        ("00 00 00 08 00 00 00 07 00 00 00 00", .data(7, ByteBuffer(), flags: .rst)),
        ("00 01 00 01 00 00 00 01 00 00 00 00", .windowUpdate(1, delta: 0, flags: .syn)),
        ("00 01 00 02 00 00 00 01 00 00 00 00", .windowUpdate(1, delta: 0, flags: .ack)),
        ("00 01 00 00 ff ff ff fe 00 04 00 00", .windowUpdate(0xffff_fffe, delta: 256 * 1024)),
        ("00 01 00 0c 00 00 00 09 00 00 00 00", .windowUpdate(9, delta: 0, flags: [.fin, .rst])),
        ("00 02 00 01 00 00 00 00 12 34 56 78", .ping(opaque: 0x1234_5678, ack: false)),
        ("00 02 00 02 00 00 00 00 12 34 56 78", .ping(opaque: 0x1234_5678, ack: true)),
        ("00 03 00 00 00 00 00 00 00 00 00 00", .goAway(.normal)),
        ("00 03 00 00 00 00 00 00 00 00 00 01", .goAway(.protocolError)),
        ("00 03 00 00 00 00 00 00 00 00 00 02", .goAway(.internalError)),
    ]

    @Test("spec byte vectors decode and encode", arguments: 0..<vectors.count)
    func vector(index: Int) throws {
        let (hex, frame) = Self.vectors[index]
        let bytes = yamuxBytes(hex)
        var buffer = ByteBuffer(bytes: bytes)
        let decoded = try buffer.readYamuxFrame(maximumPayload: 1 << 20)
        #expect(decoded == frame)
        #expect(buffer.readableBytes == 0)
        #expect(yamuxEncode([frame]) == bytes)
        #expect(frame.encodedSize == bytes.count)
    }

    @Test("every type with every flag combination round-trips")
    func roundTrips() throws {
        for type in YamuxFrame.FrameType.allCases {
            for rawFlags in UInt16(0)...0xf {
                for id: UInt32 in [0, 1, 2, 0x7fff_ffff, .max] {
                    let flags = YamuxFrame.Flags(rawValue: rawFlags)
                    let frame =
                        type == .data
                        ? YamuxFrame.data(YamuxStreamID(id), yamuxPattern(Int(id % 300)), flags: flags)
                        : YamuxFrame(type: type, flags: flags, streamID: YamuxStreamID(id), length: id ^ 0x5a5a_5a5a)
                    var buffer = ByteBuffer(bytes: yamuxEncode([frame]))
                    #expect(try buffer.readYamuxFrame(maximumPayload: 300) == frame)
                    #expect(buffer.readableBytes == 0)
                }
            }
        }
    }

    @Test("flag bits the spec does not define are kept")
    func unknownFlags() throws {
        var buffer = ByteBuffer(bytes: yamuxBytes("00 01 80 03 00 00 00 05 00 00 00 10"))
        let frame = try #require(try buffer.readYamuxFrame(maximumPayload: 0))
        #expect(frame.flags.contains([.syn, .ack]))
        #expect(frame.flags.rawValue == 0x8003)
        #expect(yamuxEncode([frame]) == yamuxBytes("00 01 80 03 00 00 00 05 00 00 00 10"))
    }

    @Test("a partial frame returns nil and consumes nothing, at every cut")
    func partial() throws {
        let frames: [YamuxFrame] = [
            .data(1, Self.hello, flags: .syn), .windowUpdate(1, delta: 7), .ping(opaque: 9, ack: false),
            .data(1, yamuxPattern(100)), .goAway(.normal),
        ]
        let bytes = yamuxEncode(frames)
        for cut in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<cut])
            var decoded: [YamuxFrame] = []
            while true {
                let before = buffer.readerIndex
                guard let frame = try buffer.readYamuxFrame(maximumPayload: 1024) else {
                    #expect(buffer.readerIndex == before)
                    break
                }
                decoded.append(frame)
            }
            // Whole frames come out; the rest stays for later.
            #expect(decoded == Array(frames.prefix(decoded.count)))
            #expect(yamuxEncode(decoded).count + buffer.readableBytes == cut)
            buffer.writeBytes(bytes[cut...])
            while let frame = try buffer.readYamuxFrame(maximumPayload: 1024) { decoded.append(frame) }
            #expect(decoded == frames)
        }
    }

    @Test("a data payload is a slice of the input, not a copy")
    func payloadIsSlice() throws {
        var buffer = ByteBuffer(bytes: yamuxBytes("00 00 00 00 00 00 00 01 00 00 00 05 68 65 6c 6c 6f 00"))
        let frame = try #require(try buffer.readYamuxFrame(maximumPayload: 5))
        #expect(frame.payload == Self.hello)
        #expect(frame.length == 5)
        #expect(buffer.readableBytes == 1)
    }

    @Test("a version other than 0 is refused from its first byte")
    func badVersion() {
        for version: UInt8 in [1, 2, 0x80, 0xff] {
            var buffer = ByteBuffer(bytes: [version])
            let error = #expect(throws: SessionError.self) { try buffer.readYamuxFrame(maximumPayload: 10) }
            #expect(error?.kind == .protocolViolation)
        }
    }

    @Test("an unknown type is refused from its second byte")
    func badType() {
        for type: UInt8 in [4, 5, 0x10, 0xff] {
            var buffer = ByteBuffer(bytes: [0, type])
            let error = #expect(throws: SessionError.self) { try buffer.readYamuxFrame(maximumPayload: 10) }
            #expect(error?.kind == .protocolViolation)
        }
    }

    @Test("a data length over the limit is refused before its payload arrives")
    func dataTooLong() throws {
        // Only the header is there: the parser must not wait for 16 MiB + 1 bytes.
        var buffer = ByteBuffer(bytes: yamuxBytes("00 00 00 00 00 00 00 01 01 00 00 01"))
        let error = #expect(throws: SessionError.self) { try buffer.readYamuxFrame(maximumPayload: 16 << 20) }
        #expect(error?.kind == .messageTooLarge)
        // Exactly the limit is fine: it waits for the payload.
        var atLimit = ByteBuffer(bytes: yamuxBytes("00 00 00 00 00 00 00 01 01 00 00 00"))
        #expect(try atLimit.readYamuxFrame(maximumPayload: 16 << 20) == nil)
        // Window updates, pings and GoAways carry no payload: any length value is fine.
        var update = ByteBuffer(bytes: yamuxBytes("00 01 00 00 00 00 00 01 ff ff ff ff"))
        #expect(try update.readYamuxFrame(maximumPayload: 0) == .windowUpdate(1, delta: .max))
    }

    @Test("frames print what they are")
    func descriptions() {
        #expect(YamuxFrame.windowUpdate(1, delta: 0, flags: [.syn, .ack]).description.contains("[SYN|ACK]"))
        #expect(YamuxFrame.GoAwayCode(rawValue: 7).description == "code 7")
        #expect(YamuxFrame.GoAwayCode.protocolError.description == "protocol error")
    }

    @Test("10,000 seeded random and mutated inputs: frames that re-encode exactly, or a typed error")
    func hostileBytes() {
        var random = SeededGenerator(seed: 0x7961_6d75_7800)
        let valid = yamuxEncode([
            .windowUpdate(1, delta: 0, flags: .syn), .data(1, Self.hello), .ping(opaque: 3, ack: false),
            .data(1, yamuxPattern(40), flags: .fin), .goAway(.normal),
        ])
        for round in 0..<10_000 {
            var input: [UInt8]
            if round % 2 == 0 {
                input = random.bytes(Int.random(in: 0..<80, using: &random))
                // Mostly version 0 and known types, so the parser gets past the first two bytes.
                if input.count > 1, Bool.random(using: &random) {
                    input[0] = 0
                    input[1] %= 5
                }
            } else {
                input = valid
                for _ in 0..<Int.random(in: 1...4, using: &random) { input = random.mutate(input) }
            }
            var buffer = ByteBuffer(bytes: input)
            var consumed = 0
            do {
                while let frame = try buffer.readYamuxFrame(maximumPayload: 64) {
                    // What the parser consumed is exactly the frame's encoding.
                    let encoded = yamuxEncode([frame])
                    #expect(Array(input[consumed..<(consumed + encoded.count)]) == encoded, "round \(round)")
                    consumed += encoded.count
                }
                #expect(consumed + buffer.readableBytes == input.count)
            } catch {
                #expect([.protocolViolation, .messageTooLarge].contains(error.kind), "round \(round): \(error)")
            }
        }
    }
}
