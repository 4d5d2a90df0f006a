import Identity
import NIOCore
import NIOEmbedded
import Testing

@testable import Session

/// The handler above (the connection) wakes a stream's waiting reader at read-complete, with all
/// that the reads brought: one thread hand-off per socket read loop. So read-complete goes up once
/// per loop (NIO reads a socket up to `maxMessagesPerRead` times per readable event), not once per
/// read, and before an error or the end, so that what was delivered is never left unannounced.
@Suite("SecureConnectionHandler: one read-complete per read loop")
struct SecureConnectionReadCompleteTests {
    /// An established pair and 200 KB sealed by the client (four Noise messages), on the wire.
    static func establishedWithWire() throws -> (SecureConnectionHandlerTests.Pair, ByteBuffer, ByteBuffer) {
        let pair = try SecureConnectionHandlerTests.Pair()
        try pair.activate()
        try pair.shuttle()
        let payload = ByteBuffer(bytes: (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        pair.client.write(payload, promise: nil)
        pair.client.flush()
        var wire = ByteBuffer()
        while var bytes = try pair.client.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&bytes) }
        pair.serverRecorder.readCompletes = 0
        return (pair, wire, payload)
    }

    @Test("three reads of one loop deliver everything and complete once, at the loop's end")
    func oneCompletePerLoop() throws {
        let (pair, wire, payload) = try Self.establishedWithWire()
        var rest = wire
        for size in [70_000, 70_000, rest.readableBytes - 140_000] {
            pair.server.pipeline.fireChannelRead(NIOAny(rest.readSlice(length: size)!))
        }
        #expect(pair.serverRecorder.received == payload, "delivered as decrypted, before the loop ends")
        #expect(pair.serverRecorder.readCompletes == 0)
        pair.server.pipeline.fireChannelReadComplete()
        #expect(pair.serverRecorder.readCompletes == 1)
        pair.server.pipeline.fireChannelReadComplete()
        #expect(pair.serverRecorder.readCompletes == 1, "nothing new delivered: nothing to complete")
        _ = try pair.client.finish()
        _ = try pair.server.finish()
    }

    @Test("a forged message after good ones completes the good ones before the error")
    func completeBeforeError() throws {
        let (pair, wire, _) = try Self.establishedWithWire()
        var forged = wire
        // Flip a byte of the second message's ciphertext (the first is 2 + 65535 bytes long).
        let at = forged.readerIndex + 65537 + 10
        forged.setInteger(forged.getInteger(at: at, as: UInt8.self)! ^ 1, at: at)
        pair.server.pipeline.fireChannelRead(NIOAny(forged))
        #expect(pair.serverRecorder.received.readableBytes == 65519, "the first message was delivered")
        #expect(pair.serverRecorder.readCompletes == 1)
        #expect((pair.serverRecorder.errors.first as? SessionError)?.kind == .decryptionFailed)
        _ = try? pair.client.finish()
        _ = try? pair.server.finish()
    }
}
