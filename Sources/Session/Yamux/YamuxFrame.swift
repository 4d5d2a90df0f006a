import NIOCore

/// One yamux frame: the 12-byte header and, for data frames, the payload that follows it.
///
/// yamux spec, "Framing": "Each frame contains a header like: Version (8 bits), Type (8 bits),
/// Flags (16 bits), StreamID (32 bits), Length (32 bits) ... All fields are encoded in network order
/// (big endian)." The meaning of `length` depends on the type (spec, "Length Field"): the payload size
/// of a data frame, the window delta of a window update, the opaque value of a ping, the error code of
/// a GoAway. Only data frames carry bytes after the header.
public struct YamuxFrame: Hashable, Sendable {
    /// yamux spec, "Version Field": "At the current time, the field is always set to 0".
    public static let version: UInt8 = 0
    /// yamux spec, "Framing": "each header has a 12 byte overhead".
    public static let headerSize = 12

    /// yamux spec, "Type Field".
    public enum FrameType: UInt8, Hashable, Sendable, CaseIterable {
        /// 0x0 "Used to transmit data. May transmit zero length payloads depending on the flags."
        case data = 0
        /// 0x1 "Used to updated the senders receive window size."
        case windowUpdate = 1
        /// 0x2 "Used to measure RTT. It can also be used to heart-beat and do keep-alives over TCP."
        case ping = 2
        /// 0x3 "Used to close a session."
        case goAway = 3
    }

    /// yamux spec, "Flag Field". Bits the spec does not define are kept as they came and otherwise
    /// ignored, so that a future flag does not break the session.
    public struct Flags: OptionSet, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16

        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// 0x1 "Signals the start of a new stream." On a ping: a request.
        public static let syn = Flags(rawValue: 0x1)
        /// 0x2 "Acknowledges the start of a new stream." On a ping: the response.
        public static let ack = Flags(rawValue: 0x2)
        /// 0x4 "Performs a half-close of a stream."
        public static let fin = Flags(rawValue: 0x4)
        /// 0x8 "Reset a stream immediately."
        public static let rst = Flags(rawValue: 0x8)

        public var description: String {
            let names = [(Flags.syn, "SYN"), (.ack, "ACK"), (.fin, "FIN"), (.rst, "RST")]
                .filter { contains($0.0) }.map(\.1)
            return names.isEmpty ? "[]" : "[" + names.joined(separator: "|") + "]"
        }
    }

    /// The error code of a GoAway frame. yamux spec, "Session termination": "0x0 Normal termination,
    /// 0x1 Protocol error, 0x2 Internal error". Other values are passed through as they came.
    public struct GoAwayCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt32

        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let normal = GoAwayCode(rawValue: 0)
        public static let protocolError = GoAwayCode(rawValue: 1)
        public static let internalError = GoAwayCode(rawValue: 2)

        public var description: String {
            switch self {
            case .normal: "normal termination"
            case .protocolError: "protocol error"
            case .internalError: "internal error"
            default: "code \(rawValue)"
            }
        }
    }

    public var type: FrameType
    public var flags: Flags
    public var streamID: YamuxStreamID
    /// Data: payload size (must equal `payload.readableBytes`); window update: delta; ping: opaque
    /// value; GoAway: error code.
    public var length: UInt32
    /// The bytes after the header; empty for every type but data.
    public var payload: ByteBuffer

    public init(
        type: FrameType, flags: Flags, streamID: YamuxStreamID, length: UInt32, payload: ByteBuffer = ByteBuffer()
    ) {
        self.type = type
        self.flags = flags
        self.streamID = streamID
        self.length = length
        self.payload = payload
    }

    /// A data frame carrying `payload` (at most 2^32-1 bytes).
    public static func data(_ streamID: YamuxStreamID, _ payload: ByteBuffer, flags: Flags = []) -> YamuxFrame {
        guard let length = UInt32(exactly: payload.readableBytes) else {
            preconditionFailure("a yamux data frame carries at most 2^32-1 bytes, not \(payload.readableBytes)")
        }
        return YamuxFrame(type: .data, flags: flags, streamID: streamID, length: length, payload: payload)
    }

    /// A window update granting `delta` more bytes (flags may add SYN, ACK, FIN or RST).
    public static func windowUpdate(_ streamID: YamuxStreamID, delta: UInt32, flags: Flags = []) -> YamuxFrame {
        YamuxFrame(type: .windowUpdate, flags: flags, streamID: streamID, length: delta)
    }

    /// A ping request (SYN) or response (ACK) on the session. yamux spec, "StreamID Field": "Both Ping
    /// and Go Away messages should always use the 0 StreamID."
    public static func ping(opaque: UInt32, ack: Bool) -> YamuxFrame {
        YamuxFrame(type: .ping, flags: ack ? .ack : .syn, streamID: .session, length: opaque)
    }

    /// A GoAway on the session with `code`.
    public static func goAway(_ code: GoAwayCode) -> YamuxFrame {
        YamuxFrame(type: .goAway, flags: [], streamID: .session, length: code.rawValue)
    }

    /// Bytes on the wire: header plus payload.
    public var encodedSize: Int { YamuxFrame.headerSize + payload.readableBytes }
}

extension YamuxFrame: CustomStringConvertible {
    public var description: String {
        "yamux \(type) \(flags) stream \(streamID) length \(length)"
    }
}

extension ByteBuffer {
    /// Reads one yamux frame.
    ///
    /// Returns `nil`, consuming nothing, when the buffer does not yet hold the whole frame. The header
    /// is validated as soon as it is complete, before waiting for any payload, so a peer cannot make
    /// us buffer a payload we would refuse anyway.
    ///
    /// - Parameter maximumPayload: the largest data payload accepted. A session passes its largest
    ///   receive window: any larger data frame breaks flow control, whatever the stream.
    /// - Throws: `SessionError` `.protocolViolation` for a version other than 0 or an unknown type;
    ///   `.messageTooLarge` for a data frame whose length exceeds `maximumPayload`.
    public mutating func readYamuxFrame(maximumPayload: Int) throws(SessionError) -> YamuxFrame? {
        precondition(maximumPayload >= 0, "maximumPayload must not be negative")
        // Checked as soon as their bytes are there: a peer speaking something else fails at once.
        guard let version: UInt8 = getInteger(at: readerIndex) else { return nil }
        guard version == YamuxFrame.version else {
            throw SessionError(.protocolViolation, "yamux frame has version \(version); only version 0 exists")
        }
        guard let rawType: UInt8 = getInteger(at: readerIndex + 1) else { return nil }
        guard let type = YamuxFrame.FrameType(rawValue: rawType) else {
            throw SessionError(.protocolViolation, "yamux frame has unknown type \(rawType)")
        }
        guard readableBytes >= YamuxFrame.headerSize,
            let rawFlags: UInt16 = getInteger(at: readerIndex + 2),
            let rawStreamID: UInt32 = getInteger(at: readerIndex + 4),
            let length: UInt32 = getInteger(at: readerIndex + 8)
        else { return nil }

        var payload = ByteBuffer()
        if type == .data {
            guard UInt64(length) <= UInt64(maximumPayload) else {
                throw SessionError(
                    .messageTooLarge,
                    "yamux data frame on stream \(rawStreamID) announces \(length) bytes; at most \(maximumPayload) fit a window"
                )
            }
            // `length` ≤ maximumPayload, an Int: the sum cannot overflow.
            guard readableBytes - YamuxFrame.headerSize >= Int(length) else { return nil }
            moveReaderIndex(forwardBy: YamuxFrame.headerSize)
            payload = readSlice(length: Int(length))!
        } else {
            moveReaderIndex(forwardBy: YamuxFrame.headerSize)
        }
        return YamuxFrame(
            type: type, flags: YamuxFrame.Flags(rawValue: rawFlags), streamID: YamuxStreamID(rawStreamID),
            length: length, payload: payload)
    }

    /// Writes the 12-byte header of `frame` (for a glue that writes the payload separately, without
    /// copying it). Returns the number of bytes written.
    @discardableResult
    public mutating func writeYamuxHeader(_ frame: YamuxFrame) -> Int {
        precondition(
            frame.type != .data || Int(frame.length) == frame.payload.readableBytes,
            "a yamux data frame's length (\(frame.length)) must equal its payload size (\(frame.payload.readableBytes))"
        )
        precondition(frame.type == .data || frame.payload.readableBytes == 0, "only data frames carry a payload")
        var written = writeInteger(YamuxFrame.version)
        written += writeInteger(frame.type.rawValue)
        written += writeInteger(frame.flags.rawValue)
        written += writeInteger(frame.streamID.rawValue)
        written += writeInteger(frame.length)
        return written
    }

    /// Writes `frame`, header and payload. Returns the number of bytes written.
    @discardableResult
    public mutating func writeYamuxFrame(_ frame: YamuxFrame) -> Int {
        writeYamuxHeader(frame) + writeImmutableBuffer(frame.payload)
    }
}
