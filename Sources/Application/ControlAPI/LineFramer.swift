import NIOCore

/// Splits a byte stream into lines ending in `\n` (a `\r` before it is dropped too), refusing a line
/// longer than ``maxLineLength`` as soon as that many bytes are buffered without a newline: a
/// client can never make it hold more than the limit plus the last read.
///
/// Sans-I/O: bytes in with ``append(_:)``, lines out with ``nextLine()``. The search for the newline
/// resumes where the last one stopped, so a long line arriving a byte at a time costs linear time.
struct LineFramer {
    let maxLineLength: Int
    private var buffer = ByteBuffer()
    /// Bytes after the reader index already searched and known to hold no newline.
    private var searched = 0

    init(maxLineLength: Int) {
        precondition(maxLineLength > 0, "maxLineLength must be positive")
        self.maxLineLength = maxLineLength
    }

    /// Bytes buffered and not yet returned as lines.
    var bufferedByteCount: Int { buffer.readableBytes }

    mutating func append(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer.clear()
            searched = 0
        }
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next complete line, without its `\n` or `\r\n`; `nil` when no complete line is buffered.
    /// Throws `invalidRequest` (`line_too_long`) when the line is longer than ``maxLineLength``;
    /// after that the framer must not be used again.
    mutating func nextLine() throws(ControlAPIError) -> ByteBuffer? {
        let view = buffer.readableBytesView
        let searchStart = view.index(view.startIndex, offsetBy: searched)
        guard let newline = view[searchStart...].firstIndex(of: UInt8(ascii: "\n")) else {
            searched = view.count
            // One byte of slack for a "\r" that may precede the newline still to come.
            if view.count > maxLineLength + 1 { throw tooLong(atLeast: view.count) }
            return nil
        }
        let terminated = view.distance(from: view.startIndex, to: newline)
        var length = terminated
        if length > 0 && view[view.index(before: newline)] == UInt8(ascii: "\r") { length -= 1 }
        if length > maxLineLength { throw tooLong(atLeast: length) }
        let line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: terminated + 1 - length)
        searched = 0
        if buffer.readableBytes == 0 {
            buffer.clear()
        } else if buffer.readerIndex >= 64 * 1024 {
            buffer.discardReadBytes()
        }
        return line
    }

    /// The error for a line of at least `length` bytes, over ``maxLineLength``.
    func tooLong(atLeast length: Int) -> ControlAPIError {
        ControlAPIError(
            .invalidRequest,
            "line longer than \(maxLineLength) bytes (\(length) bytes without a newline so far); the connection is closed",
            detail: "line_too_long")
    }
}
