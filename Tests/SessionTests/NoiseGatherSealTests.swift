import AgentTesting
import Identity
import NIOCore
import Testing

@testable import Session

/// Sealing plaintext given in pieces (a yamux header and its payload, not joined) must put exactly
/// the bytes on the wire that sealing the joined plaintext does: checked against libsodium's
/// one-call AEAD for seeded random cuts, every alignment of a piece to the 64-byte key-stream
/// blocks, and whole transports with rekeying.
@Suite("Noise: sealing gathered pieces equals sealing the joined plaintext")
struct NoiseGatherSealTests {
    static func cipherPair(seed: UInt64) -> (NoiseCipherState, NoiseCipherState) {
        var random = SeededGenerator(seed: seed)
        var first = Self.bytes(32, &random)
        var second = first
        return (
            NoiseCipherState(key: SecretBytes(consuming: &first, protection: .heap)),
            NoiseCipherState(key: SecretBytes(consuming: &second, protection: .heap))
        )
    }

    /// `count` seeded random bytes, eight at a time (per byte is slow in a debug build).
    static func bytes(_ count: Int, _ random: inout SeededGenerator) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count + 8)
        while bytes.count < count { withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) } }
        return Array(bytes.prefix(count))
    }

    /// `bytes` cut at `cuts` (sorted offsets) into views of one buffer, as the connection writes them.
    static func pieces(of bytes: [UInt8], cuts: [Int]) -> [ByteBuffer] {
        let whole = ByteBuffer(bytes: bytes)
        var result: [ByteBuffer] = []
        var start = 0
        for end in cuts + [bytes.count] {
            result.append(whole.getSlice(at: start, length: end - start)!)
            start = end
        }
        return result
    }

    @Test(
        "seeded random messages cut at random places seal to the same bytes, and open",
        arguments: [1, 2, 3] as [UInt64])
    func randomCuts(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var (gathered, joined) = Self.cipherPair(seed: seed)
        var (opener, _) = Self.cipherPair(seed: seed)
        for _ in 0..<100 {
            let length = Int.random(in: 0...NoiseCipherState.maximumPlaintextLength, using: &random)
            let plaintext = Self.bytes(length, &random)
            let cutCount = length == 0 ? 0 : Int.random(in: 0...6, using: &random)
            let cuts = (0..<cutCount).map { _ in Int.random(in: 0...length, using: &random) }.sorted()
            var expected = ByteBuffer()
            try joined.sealFrame(ByteBuffer(bytes: plaintext), into: &expected)
            var actual = ByteBuffer()
            try gathered.sealFrame(gathering: Self.pieces(of: plaintext, cuts: cuts), into: &actual)
            #expect(actual == expected, "seed \(seed), \(length) bytes cut at \(cuts)")
            var message = actual
            guard let body = SecureTransport.readFrame(&message) else {
                Issue.record("no whole message")
                return
            }
            #expect(Array(buffer: try opener.openFrame(body)) == plaintext)
        }
    }

    @Test("a 12-byte header before a payload, and pieces starting at every offset of a key-stream block")
    func everyAlignment() throws {
        var random = SeededGenerator(seed: 7)
        var (gathered, joined) = Self.cipherPair(seed: 7)
        for head in [0, 1, 12, 52, 63, 64, 65, 127, 128, 200] {
            for length in [head, head + 1, head + 63, head + 64, head + 1000, NoiseCipherState.maximumPlaintextLength] {
                let plaintext = Self.bytes(length, &random)
                var expected = ByteBuffer()
                try joined.sealFrame(ByteBuffer(bytes: plaintext), into: &expected)
                var actual = ByteBuffer()
                try gathered.sealFrame(gathering: Self.pieces(of: plaintext, cuts: [head]), into: &actual)
                #expect(actual == expected, "first piece \(head) of \(length) bytes")
            }
        }
    }

    @Test("a transport seals gathered writes into the same messages as one joined buffer, rekeys included")
    func transportGathering() throws {
        var random = SeededGenerator(seed: 11)
        let policy = NoiseRekeyPolicy(messages: 3, interval: .hours(1))
        let (sendA, receiveA) = Self.cipherPair(seed: 21)
        let (sendB, receiveB) = Self.cipherPair(seed: 21)
        let now = NIODeadline.uptimeNanoseconds(1)
        var gathered = SecureTransport(send: sendA, receive: receiveA, rekeyPolicy: policy, now: now)
        var joined = SecureTransport(send: sendB, receive: receiveB, rekeyPolicy: policy, now: now)
        for _ in 0..<20 {
            // A pump's writes: headers and payloads of random sizes, some empty, crossing messages.
            var writes = CircularBuffer<ByteBuffer>()
            var all = ByteBuffer()
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let size = Bool.random(using: &random) ? 12 : Int.random(in: 0...70_000, using: &random)
                var piece = ByteBuffer(bytes: Self.bytes(size, &random))
                writes.append(piece)
                all.writeBuffer(&piece)
            }
            let byteCount = all.readableBytes
            let expected = try joined.seal(&all, now: now, allocator: ByteBufferAllocator())
            let actual = try gathered.seal(
                gathering: &writes, byteCount: byteCount, now: now, allocator: ByteBufferAllocator())
            #expect(actual == expected)
            #expect(writes.isEmpty)
        }
        #expect(gathered.rekeysSent == joined.rekeysSent)
        #expect(gathered.rekeysSent > 0)
    }
}
