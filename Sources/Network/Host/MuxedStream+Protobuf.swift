import Multiformats
import NIOCore
import SwiftProtobuf

/// One unsigned-varint-length-prefixed protobuf message at a time, as circuit relay v2 (hop,
/// stop), DCUtR and AutoNAT v1 frame theirs ("every message is an unsigned varint length
/// followed by the protobuf").
///
/// Hostile input gets a `NetworkError.protocolViolation` naming the message type and the peer,
/// never a crash or an unbounded wait for bytes: a length prefix that is not a varint, a length
/// over `maximumSize` (refused before its body is read), a stream that ends inside a message, and
/// a body that is not the protobuf.
extension MuxedStream {
    /// Reads one message of at most `maximumSize` bytes; nil when the stream ends cleanly before a
    /// message begins.
    public func readMessage<Message: SwiftProtobuf.Message>(
        _ type: Message.Type, maximumSize: Int
    ) async throws -> Message? {
        let frame: ByteBuffer?
        do {
            frame = try await readLengthPrefixed(maximumLength: maximumSize)
        } catch let error as NetworkError where error.kind == .protocolViolation {
            throw NetworkError(.protocolViolation, "\(Message.protoMessageName) from \(remotePeer): \(error.message)")
        } catch let error as MultiformatsError {
            throw NetworkError(
                .protocolViolation, "\(Message.protoMessageName) from \(remotePeer): bad length prefix: \(error)")
        }
        guard let frame else { return nil }
        do {
            return try Message(serializedBytes: Array(frame.readableBytesView))
        } catch {
            throw NetworkError(.protocolViolation, "malformed \(Message.protoMessageName) from \(remotePeer): \(error)")
        }
    }

    /// Writes one message. One that serialises to more than `maximumSize` bytes is not sent (the
    /// peer would refuse it): `NetworkError.protocolViolation` says so.
    public func writeMessage(_ message: some SwiftProtobuf.Message, maximumSize: Int) async throws {
        let bytes: [UInt8] = try message.serializedBytes()
        guard bytes.count <= maximumSize else {
            throw NetworkError(
                .protocolViolation,
                "\(type(of: message).protoMessageName) of \(bytes.count) bytes is over the \(maximumSize)-byte limit; not sent"
            )
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(bytes.count + 10)
        buffer.writeUVarint(UInt64(bytes.count))
        buffer.writeBytes(bytes)
        try await write(buffer)
    }
}
