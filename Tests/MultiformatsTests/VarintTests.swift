import AgentTesting
import NIOCore
import Testing

@testable import Multiformats

@Suite("unsigned varint (multiformats/unsigned-varint)")
struct VarintTests {
    @Test("spec examples encode and decode", arguments: try TestVectors.array("multibase.json", "varint"))
    func examples(vector: Vector) throws {
        let value = try #require(UInt64(try vector.string("value")))
        let bytes = try vector.hex("hex")
        #expect(UVarint.encode(value) == bytes)
        #expect(UVarint.encodedLength(value) == bytes.count)
        let decoded = try #require(try UVarint.decode(bytes))
        #expect(decoded.value == value)
        #expect(decoded.length == bytes.count)
        var buffer = ByteBuffer(bytes: bytes)
        #expect(try buffer.readUVarint() == value)
        #expect(buffer.readableBytes == 0)
        var written = ByteBuffer()
        #expect(written.writeUVarint(value) == bytes.count)
        #expect(Array(written.readableBytesView) == bytes)
    }

    @Test("non-minimal, overlong and truncated varints are refused")
    func invalid() throws {
        for vector in try TestVectors.array("multibase.json", "varint_invalid") {
            let bytes = try vector.hex("hex")
            let reason = try vector.string("reason")
            var index = 0
            #expect(throws: MultiformatsError.self, "\(reason)") {
                _ = try UVarint.read(bytes, at: &index)
            }
        }
        #expect(throws: MultiformatsError(.invalidVarint, "varint is not minimally encoded")) {
            _ = try UVarint.decode([0x81, 0x00])
        }
        // Nine bytes with the continuation bit on the last can never become a valid varint.
        #expect(throws: MultiformatsError.self) { _ = try UVarint.decode([UInt8](repeating: 0xff, count: 9)) }
    }

    @Test("a partial varint in a ByteBuffer means 'need more bytes' and consumes nothing")
    func partial() throws {
        var buffer = ByteBuffer(bytes: [0x80, 0x80])
        #expect(try buffer.readUVarint() == nil)
        #expect(buffer.readableBytes == 2)
        buffer.writeInteger(UInt8(0x01))
        #expect(try buffer.readUVarint() == 16384)
    }

    @Test("round trip across the whole 63-bit range")
    func roundTrip() throws {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<5000 {
            let value = UInt64.random(in: 0...UVarint.maximumValue, using: &generator) >> UInt64.random(in: 0...62, using: &generator)
            let bytes = UVarint.encode(value)
            let decoded = try #require(try UVarint.decode(bytes))
            #expect(decoded.value == value && decoded.length == bytes.count)
        }
    }

    @Test("random bytes never crash the decoder (seed 1, 20000 cases)")
    func hostile() {
        var generator = SeededGenerator(seed: 1)
        for _ in 0..<20_000 {
            let bytes = generator.bytes(Int.random(in: 0...12, using: &generator))
            do {
                if let (value, length) = try UVarint.decode(bytes) {
                    #expect(value <= UVarint.maximumValue && length <= 9)
                }
            } catch {
                #expect(error.kind == .invalidVarint)
            }
        }
    }
}
