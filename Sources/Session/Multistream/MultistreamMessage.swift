import Multiformats
import NIOCore

/// multistream-select 1.0 messages (libp2p/specs `connections/README.md`, "Protocol Negotiation";
/// multiformats/multistream-select): `uvarint(len) ‖ UTF-8 text ‖ '\n'`, where `len` counts the
/// newline.
public enum MultistreamMessage {
    /// The protocol id of multistream-select itself, sent first by both sides.
    public static let protocolID = "/multistream/1.0.0"
    /// The refusal of a proposed protocol.
    public static let notAvailable = "na"
    /// Longest message accepted, newline included. go-multistream and rust-libp2p cap messages at
    /// 1024 bytes; a longer "line" is an attack or garbage, and is refused before it is buffered.
    public static let maximumLength = 1024

    /// Whether `id` can be sent as a protocol id: 1 to 1023 bytes, no newline.
    public static func isValidProtocolID(_ id: String) -> Bool {
        let count = id.utf8.count
        return count > 0 && count < maximumLength && !id.utf8.contains(UInt8(ascii: "\n"))
    }
}

extension ByteBuffer {
    /// Writes one multistream message: `uvarint(len + 1) ‖ text ‖ '\n'`.
    public mutating func writeMultistreamMessage(_ text: String) {
        precondition(MultistreamMessage.isValidProtocolID(text), "invalid multistream message \(text.debugDescription)")
        writeUVarint(UInt64(text.utf8.count + 1))
        writeString(text)
        writeInteger(UInt8(ascii: "\n"))
    }

    /// Reads one multistream message and returns its text without the newline.
    ///
    /// - Returns: `nil`, consuming nothing, when the buffer holds only part of a message.
    /// - Throws: `SessionError.messageTooLarge` as soon as the length prefix exceeds
    ///   `MultistreamMessage.maximumLength` (before the body arrives), `.protocolViolation` for a bad
    ///   varint, a missing newline or invalid UTF-8.
    public mutating func readMultistreamMessage() throws(SessionError) -> String? {
        var peek = self
        let length: UInt64
        do {
            guard let value = try peek.readUVarint() else {
                // Two bytes of varint already exceed the limit; don't wait for more of a hostile one.
                if peek.readableBytes >= 2 {
                    throw SessionError(.messageTooLarge, "multistream message length is over \(MultistreamMessage.maximumLength) bytes")
                }
                return nil
            }
            length = value
        } catch let error as MultiformatsError {
            throw SessionError(.protocolViolation, "multistream message has a bad length prefix: \(error.message)")
        } catch let error as SessionError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
        guard length <= UInt64(MultistreamMessage.maximumLength) else {
            throw SessionError(
                .messageTooLarge, "multistream message of \(length) bytes is over the \(MultistreamMessage.maximumLength)-byte limit")
        }
        guard length > 0 else {
            throw SessionError(.protocolViolation, "empty multistream message")
        }
        guard peek.readableBytes >= Int(length) else { return nil }
        let body = peek.readSlice(length: Int(length))!
        guard body.getInteger(at: body.readerIndex + Int(length) - 1, as: UInt8.self) == UInt8(ascii: "\n") else {
            throw SessionError(.protocolViolation, "multistream message does not end with a newline")
        }
        guard let text = body.getString(at: body.readerIndex, length: Int(length) - 1),
            String(validating: body.readableBytesView.dropLast(), as: UTF8.self) != nil
        else {
            throw SessionError(.protocolViolation, "multistream message is not valid UTF-8")
        }
        self = peek
        return text
    }
}
