import Multiformats
import NIOCore

/// Splits `/agent/msg/1.0.0` stream bytes into frames, `uvarint(len) ‖ len bytes`
/// (spec/messages.md §8.1). Sans-I/O: bytes in, frames out. The length is checked against the
/// limit as soon as its varint is complete, before any of the body is waited for.
struct MessageFrameDecoder {
    let maximumLength: Int
    private var buffer = ByteBuffer()

    init(maximumLength: Int) {
        self.maximumLength = maximumLength
    }

    /// Bytes received and not yet returned as a frame.
    var bufferedBytes: Int { buffer.readableBytes }

    mutating func append(_ bytes: inout ByteBuffer) {
        buffer.writeBuffer(&bytes)
    }

    /// The next complete frame, or nil when more bytes are needed.
    /// - Throws: `.oversized` for a declared length over the limit, `.malformed` for a bad varint.
    mutating func next() throws(MessageError) -> [UInt8]? {
        var peek = buffer
        let length: UInt64
        do {
            guard let value = try peek.readUVarint() else { return nil }
            length = value
        } catch {
            throw MessageError(.malformed, "frame length is not a valid varint")
        }
        guard length <= UInt64(maximumLength) else {
            throw MessageError(.oversized, "frame of \(length) bytes is over the \(maximumLength)-byte limit")
        }
        guard let frame = peek.readBytes(length: Int(length)) else { return nil }
        buffer = peek
        buffer.discardReadBytes()
        return frame
    }
}
