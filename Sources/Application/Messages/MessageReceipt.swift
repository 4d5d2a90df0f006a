/// The receiver's answer to one message on `/agent/msg/1.0.0` (spec/messages.md §8.2):
/// `Receipt { bytes id = 1; string code = 2; string text = 3; }`, canonical as the envelope.
public struct MessageReceipt: Hashable, Sendable {
    /// Largest receipt frame.
    public static let maximumLength = 2048

    /// The message's id; nil when the message did not decode.
    public var id: MessageID?
    /// nil: accepted. Otherwise why not (a receipt kind, `MessageError.Kind.isReceiptCode`).
    public var refusal: MessageError?

    public init(id: MessageID?, refusal: MessageError?) {
        precondition(refusal.map { $0.kind.isReceiptCode } ?? true, "\(refusal!.kind) is not a receipt code")
        self.id = id
        self.refusal = refusal
    }

    public var isAccepted: Bool { refusal == nil }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        if let id { ProtobufWriter.appendBytesField(1, id.bytes, to: &bytes) }
        if let refusal {
            ProtobufWriter.appendBytesField(2, refusal.kind.rawValue.utf8, to: &bytes)
            // Cut on a character boundary to the limit.
            var text = Substring(refusal.message)
            while text.utf8.count > MessageLimits.maximumErrorText { text = text.dropLast() }
            ProtobufWriter.appendBytesField(3, text.utf8, to: &bytes)
        }
        return bytes
    }

    /// - Throws: `.protocolViolation` for anything but a canonical receipt with a known code.
    public init(bytes: [UInt8]) throws(MessageError) {
        var reader = ProtobufReader(bytes: bytes, what: "receipt")
        var id: MessageID?
        var code: MessageError.Kind?
        var text = ""
        do throws(MessageError) {
            while !reader.isAtEnd {
                let (number, value) = try reader.readField(
                    schema: [1: .lengthDelimited, 2: .lengthDelimited, 3: .lengthDelimited],
                    names: [1: "id", 2: "code", 3: "text"],
                    limit: { number in
                        (
                            number == 1 ? MessageID.byteCount : number == 2 ? 64 : MessageLimits.maximumErrorText,
                            .malformed
                        )
                    })
                guard case .bytes(let range) = value else { preconditionFailure("length-delimited fields only") }
                switch number {
                case 1: id = try MessageID(bytes: bytes[range])
                case 2:
                    let raw = String(decoding: bytes[range], as: UTF8.self)
                    guard let kind = MessageError.Kind(rawValue: raw), kind.isReceiptCode else {
                        throw MessageError(.malformed, "receipt code \"\(raw.prefix(64))\" is not a receipt kind")
                    }
                    code = kind
                default:
                    guard let decoded = String(validating: bytes[range], as: UTF8.self) else {
                        throw MessageError(.malformed, "receipt text is not UTF-8")
                    }
                    text = decoded
                }
            }
            if code == nil, !text.isEmpty { throw MessageError(.malformed, "receipt has text but no code") }
        } catch {
            throw MessageError(.protocolViolation, "bad receipt: \(error.message)")
        }
        self.id = id
        self.refusal = code.map { MessageError($0, text) }
    }
}
