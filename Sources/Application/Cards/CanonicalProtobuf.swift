/// The canonical subset of protobuf wire format that cards use (spec/cards.md §5.2, the same rules
/// as spec/messages.md §3.2): fields in strictly increasing number order, a repeated field's
/// elements consecutive, no unknown fields, no default values, minimal varints. Writing produces
/// exactly that; reading refuses anything else as `.malformed`, so a signature covers one byte string.
struct CanonicalProtobufWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// A varint field, left out when 0.
    mutating func field(_ number: UInt64, _ value: UInt64) {
        guard value != 0 else { return }
        varint(number << 3)
        varint(value)
    }

    /// A length-delimited field, left out when empty.
    mutating func field(_ number: UInt64, _ value: some Collection<UInt8>) {
        guard !value.isEmpty else { return }
        varint(number << 3 | 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func field(_ number: UInt64, _ value: String) { field(number, Array(value.utf8)) }
}

/// Reads a canonical message field by field; `what` names the message in errors.
struct CanonicalProtobufReader {
    enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
    }

    private let bytes: ArraySlice<UInt8>
    private var index: Int
    private var lastField: UInt64 = 0
    private let what: String

    init(_ bytes: ArraySlice<UInt8>, what: String) {
        self.bytes = bytes
        self.index = bytes.startIndex
        self.what = what
    }

    var isAtEnd: Bool { index == bytes.endIndex }

    private mutating func varint(_ field: String) throws(CardError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var count = 0
        while true {
            guard index < bytes.endIndex else { throw CardError(.malformed, "\(what): truncated varint in \(field)") }
            let byte = bytes[index]
            index += 1
            count += 1
            guard count <= 10, shift < 64, !(shift == 63 && byte > 1) else {
                throw CardError(.malformed, "\(what): varint of \(field) is over 64 bits")
            }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                // Minimal: no final zero byte after others.
                guard byte != 0 || count == 1 else {
                    throw CardError(.malformed, "\(what): non-minimal varint in \(field)")
                }
                return value
            }
            shift += 7
        }
    }

    /// The next field: its number and value, after checking the canonical rules against `schema`
    /// (field number → (wire type length-delimited?, repeated?)). Nil at the end.
    /// - Parameter limit: the largest length a length-delimited field of that number may have,
    ///   checked before the bytes are taken.
    mutating func next(
        schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)]
    ) throws(CardError) -> (number: UInt64, value: Value)? {
        guard !isAtEnd else { return nil }
        let key = try varint("a field key")
        let number = key >> 3
        let wireType = key & 7
        guard let rule = schema[number] else {
            throw CardError(.malformed, "\(what): unknown field \(number)")
        }
        guard number > lastField || (number == lastField && rule.repeated) else {
            throw CardError(.malformed, "\(what): field \(number) after field \(lastField) (fields in increasing order, each once)")
        }
        lastField = number
        switch (wireType, rule.lengthDelimited) {
        case (0, false):
            let value = try varint("field \(number)")
            guard value != 0 else { throw CardError(.malformed, "\(what): field \(number) holds its default value") }
            return (number, .varint(value))
        case (2, true):
            let length = try varint("the length of field \(number)")
            guard length <= UInt64(rule.limit) else {
                throw CardError(.malformed, "\(what): field \(number) is \(length) bytes, over its limit of \(rule.limit)")
            }
            guard length <= UInt64(bytes.endIndex - index) else {
                throw CardError(.malformed, "\(what): field \(number) is \(length) bytes, but only \(bytes.endIndex - index) remain")
            }
            guard length > 0 else { throw CardError(.malformed, "\(what): field \(number) is empty (its default value)") }
            let value = bytes[index..<index + Int(length)]
            index += Int(length)
            return (number, .bytes(value))
        default:
            throw CardError(.malformed, "\(what): field \(number) has wire type \(wireType)")
        }
    }
}

extension CanonicalProtobufReader.Value {
    var bytesValue: ArraySlice<UInt8> {
        if case .bytes(let value) = self { return value }
        preconditionFailure("the schema gives this field bytes")
    }

    var varintValue: UInt64 {
        if case .varint(let value) = self { return value }
        preconditionFailure("the schema gives this field a varint")
    }
}
