/// Reads the canonical subset of the protobuf wire format that messages and receipts use
/// (spec/messages.md §3): fields in strictly increasing number order, each at most once, only the
/// numbers and wire types the schema lists, minimal varints, and no field holding its default
/// value (0, false, empty). Anything else is `malformed`, so exactly one byte string encodes each
/// message and a signature covers exactly one encoding.
struct ProtobufReader {
    enum WireType: UInt8 {
        case varint = 0
        case lengthDelimited = 2
    }

    /// A field as read: its number and its value (a varint, or the range of its bytes).
    enum Value {
        case varint(UInt64)
        case bytes(Range<Int>)
    }

    let bytes: [UInt8]
    let what: String
    private(set) var index: Int
    let end: Int
    private var lastField: UInt64 = 0

    init(bytes: [UInt8], range: Range<Int>? = nil, what: String) {
        self.bytes = bytes
        self.what = what
        self.index = range?.lowerBound ?? 0
        self.end = range?.upperBound ?? bytes.count
    }

    var isAtEnd: Bool { index == end }

    /// Reads a minimal varint of at most 10 bytes whose value fits 64 bits.
    mutating func readVarint(_ field: String) throws(MessageError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var count = 0
        while true {
            guard index < end else { throw MessageError(.malformed, "\(what) ends inside its \(field)") }
            let byte = bytes[index]
            index += 1
            count += 1
            if count == 10, byte > 1 {
                throw MessageError(.malformed, "\(what) \(field) is a varint over 64 bits")
            }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 {
                // A last byte of 0 after others is padding: the same value has a shorter encoding.
                if count > 1, byte == 0 {
                    throw MessageError(.malformed, "\(what) \(field) is a non-minimal varint")
                }
                return value
            }
            shift += 7
        }
    }

    /// Reads the next field, checking order, number, wire type and the no-default rule; `limit` is
    /// the largest length allowed for a length-delimited field (a longer one throws `overLimit`'s
    /// kind, `.malformed` unless given).
    /// - Parameter schema: the wire type of each known field number.
    mutating func readField(
        schema: [UInt64: WireType], names: [UInt64: String], limit: (UInt64) -> (Int, MessageError.Kind)
    ) throws(MessageError) -> (field: UInt64, value: Value) {
        let key = try readVarint("field key")
        let number = key >> 3
        guard let expected = schema[number] else {
            throw MessageError(.malformed, "\(what) has unknown field \(number)")
        }
        let name = names[number] ?? "\(number)"
        guard key & 7 == UInt64(expected.rawValue) else {
            throw MessageError(
                .malformed, "\(what) field \(name) has wire type \(key & 7), expected \(expected.rawValue)")
        }
        guard number > lastField else {
            throw MessageError(
                .malformed,
                number == lastField
                    ? "\(what) field \(name) appears twice"
                    : "\(what) field \(name) is out of order (fields must appear in increasing number order)")
        }
        lastField = number
        switch expected {
        case .varint:
            let value = try readVarint(name)
            guard value != 0 else {
                throw MessageError(.malformed, "\(what) field \(name) holds its default value 0 (defaults are omitted)")
            }
            return (number, .varint(value))
        case .lengthDelimited:
            let length = try readVarint("\(name) length")
            let (maximum, kind) = limit(number)
            guard length <= UInt64(maximum) else {
                throw MessageError(kind, "\(what) field \(name) is \(length) bytes; the limit is \(maximum)")
            }
            guard length <= UInt64(end - index) else {
                throw MessageError(
                    .malformed, "\(what) ends inside its \(name) (needs \(length) bytes, \(end - index) left)")
            }
            guard length > 0 else {
                throw MessageError(.malformed, "\(what) field \(name) is empty (empty fields are omitted)")
            }
            let range = index..<(index + Int(length))
            index += Int(length)
            return (number, .bytes(range))
        }
    }
}

/// Writes canonical protobuf fields into a byte array.
enum ProtobufWriter {
    static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// Appends a varint field unless `value` is 0 (the default, which is omitted).
    static func appendVarintField(_ number: UInt64, _ value: UInt64, to bytes: inout [UInt8]) {
        guard value != 0 else { return }
        appendVarint(number << 3, to: &bytes)
        appendVarint(value, to: &bytes)
    }

    /// Appends a length-delimited field unless `value` is empty.
    static func appendBytesField<Bytes: Collection<UInt8>>(_ number: UInt64, _ value: Bytes, to bytes: inout [UInt8]) {
        guard !value.isEmpty else { return }
        appendVarint(number << 3 | 2, to: &bytes)
        appendVarint(UInt64(value.count), to: &bytes)
        bytes.append(contentsOf: value)
    }
}
