/// A strict RFC 8259 JSON parser with a nesting limit, for request lines from untrusted clients.
///
/// Why not `JSONSerialization`: on Linux it recurses once per nesting level with its own limit
/// and turns numbers into `NSNumber`, which blurs `1` and `1.0` and large integers. This parser
/// checks the nesting depth *before* it descends (so `[[[[…` a million levels deep is refused at
/// level ``maxDepth``, never overflows the stack), keeps integers exact (``JSONNumber``), validates
/// UTF-8 up front, and refuses duplicate object keys (two parsers may otherwise disagree on which
/// one counts). Everything it refuses is a `parseError` with the byte offset.
struct JSONParser {
    /// The maximum nesting of arrays and objects. A value that is not an array or object has depth 0.
    let maxDepth: Int

    init(maxDepth: Int) {
        precondition(maxDepth >= 1, "maxDepth must be at least 1")
        self.maxDepth = maxDepth
    }

    /// Parses one JSON text: exactly one value, optionally surrounded by whitespace.
    func parse(_ bytes: some Collection<UInt8>) throws(ControlAPIError) -> JSONValue {
        let result: Result<JSONValue, ControlAPIError>? = bytes.withContiguousStorageIfAvailable { buffer in
            parse(UnsafeRawBufferPointer(buffer))
        }
        if let result { return try result.get() }
        let copy = Array(bytes)
        return try copy.withUnsafeBytes { parse($0) }.get()
    }

    func parse(_ bytes: UnsafeRawBufferPointer) -> Result<JSONValue, ControlAPIError> {
        if let offset = UTF8Validation.firstInvalidOffset(in: bytes) {
            return .failure(ControlAPIError(.parseError, "invalid JSON: not valid UTF-8 at byte \(offset)"))
        }
        var cursor = Cursor(bytes: bytes, maxDepth: maxDepth)
        do throws(ControlAPIError) {
            cursor.skipWhitespace()
            let value = try cursor.parseValue(depth: 0)
            cursor.skipWhitespace()
            if !cursor.isAtEnd { throw cursor.error("unexpected \(cursor.describeCurrent()) after the value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }
}

extension JSONValue {
    /// Parses JSON text. Throws `parseError` for anything that is not exactly one valid JSON value,
    /// or that nests arrays and objects deeper than `maxDepth`.
    public init(parsing text: String, maxDepth: Int = ControlAPIConfiguration.defaultMaxNestingDepth)
        throws(ControlAPIError)
    {
        self = try JSONParser(maxDepth: maxDepth).parse(Array(text.utf8))
    }

    /// Parses JSON bytes (UTF-8). See ``init(parsing:maxDepth:)-(String,_)``.
    public init(parsing bytes: some Collection<UInt8>, maxDepth: Int = ControlAPIConfiguration.defaultMaxNestingDepth)
        throws(ControlAPIError)
    {
        self = try JSONParser(maxDepth: maxDepth).parse(bytes)
    }
}

/// The parser's position in the input.
private struct Cursor {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    var index = 0

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    var isAtEnd: Bool { index >= bytes.count }

    func error(_ what: String) -> ControlAPIError {
        ControlAPIError(.parseError, "invalid JSON at byte \(index): \(what)")
    }

    func describeCurrent() -> String {
        guard index < bytes.count else { return "end of input" }
        let byte = bytes[index]
        if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
        return "byte 0x\(String(byte, radix: 16))"
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): index += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(ControlAPIError) -> JSONValue {
        guard index < bytes.count else { throw error("expected a value, found the end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("expected a value, found \(describeCurrent())")
        }
    }

    mutating func checkDepth(_ depth: Int) throws(ControlAPIError) {
        // Checked before descending: the recursion is bounded by maxDepth, whatever the input.
        if depth > maxDepth { throw error("arrays and objects nested deeper than \(maxDepth) levels") }
    }

    mutating func parseObject(depth: Int) throws(ControlAPIError) -> JSONValue {
        try checkDepth(depth)
        index += 1  // "{"
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if index < bytes.count && bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw error("expected a string key, found \(describeCurrent())")
            }
            let keyOffset = index
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                throw error("expected ':' after an object key, found \(describeCurrent())")
            }
            index += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            if members.updateValue(value, forKey: key) != nil {
                index = keyOffset
                throw error("duplicate object key \"\(key)\"")
            }
            skipWhitespace()
            guard index < bytes.count else { throw error("unterminated object") }
            switch bytes[index] {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                return .object(members)
            default: throw error("expected ',' or '}' in an object, found \(describeCurrent())")
            }
        }
    }

    mutating func parseArray(depth: Int) throws(ControlAPIError) -> JSONValue {
        try checkDepth(depth)
        index += 1  // "["
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count && bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            guard index < bytes.count else { throw error("unterminated array") }
            switch bytes[index] {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                return .array(elements)
            default: throw error("expected ',' or ']' in an array, found \(describeCurrent())")
            }
        }
    }

    mutating func expectLiteral(_ literal: StaticString) throws(ControlAPIError) {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw error("expected '\(literal)'") }
        for offset in 0..<count where bytes[index + offset] != literal.utf8Start[offset] {
            throw error("expected '\(literal)'")
        }
        index += count
    }

    mutating func parseString() throws(ControlAPIError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes. The input is valid UTF-8 (checked up front), so the bytes decode exactly.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("unescaped control character 0x\(String(byte, radix: 16)) in a string") }
            index += 1
        }
        var scratch = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: scratch, as: UTF8.self)
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scratch.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): scratch.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "/"): scratch.append(UInt8(ascii: "/"))
                case UInt8(ascii: "b"): scratch.append(0x08)
                case UInt8(ascii: "f"): scratch.append(0x0C)
                case UInt8(ascii: "n"): scratch.append(0x0A)
                case UInt8(ascii: "r"): scratch.append(0x0D)
                case UInt8(ascii: "t"): scratch.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try parseUnicodeEscape()
                    scratch.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    index -= 1
                    throw error("invalid escape '\\\(describeCurrent())'")
                }
            default:
                if byte < 0x20 { throw error("unescaped control character 0x\(String(byte, radix: 16)) in a string") }
                scratch.append(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    /// After `\u`: four hex digits, and for a high surrogate the `\uDC00`–`\uDFFF` that must follow.
    /// A lone surrogate is refused: it is not a Unicode scalar and no Swift `String` can hold it.
    mutating func parseUnicodeEscape() throws(ControlAPIError) -> Unicode.Scalar {
        let first = try parseHex4()
        if (0xD800...0xDBFF).contains(first) {
            guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
            else { throw error("high surrogate \\u\(String(first, radix: 16)) without a low surrogate") }
            index += 2
            let second = try parseHex4()
            guard (0xDC00...0xDFFF).contains(second) else {
                throw error("high surrogate \\u\(String(first, radix: 16)) followed by \\u\(String(second, radix: 16))")
            }
            let value = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            return Unicode.Scalar(value)!
        }
        guard let scalar = Unicode.Scalar(first) else {
            throw error("lone low surrogate \\u\(String(first, radix: 16))")
        }
        return scalar
    }

    mutating func parseHex4() throws(ControlAPIError) -> UInt32 {
        guard bytes.count - index >= 4 else { throw error("expected four hex digits after \\u") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("expected a hex digit in \\u escape, found \(describeCurrent())")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`. Integers are kept exact.
    mutating func parseNumber() throws(ControlAPIError) -> JSONNumber {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count && isDigit(bytes[index]) { throw error("leading zero in a number") }
        } else {
            while index < bytes.count && isDigit(bytes[index]) { index += 1 }
        }
        var isInteger = true
        if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit after '.'") }
            while index < bytes.count && isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
            isInteger = false
            index += 1
            if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) {
                index += 1
            }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit in the exponent") }
            while index < bytes.count && isDigit(bytes[index]) { index += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if isInteger {
            if let value = Int64(text) { return JSONNumber(value) }
            if let value = UInt64(text) { return JSONNumber(value) }
            // spec/control-api.md §4: an integer is an exact 64-bit value. Rounding a larger one to
            // a Double would answer an id of 2^64 as 1.8446744073709552e+19, a different id.
            index = start
            throw error("integer \(text.prefix(40)) does not fit in 64 bits")
        }
        guard let value = Double(text), value.isFinite else {
            index = start
            throw error("number \(text.prefix(40)) is out of range")
        }
        return JSONNumber(value)
    }

    func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
}

/// Strict UTF-8 validation (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
enum UTF8Validation {
    /// The offset of the first byte that starts an invalid sequence, or `nil` when all is valid.
    static func firstInvalidOffset(in bytes: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0  // no overlong 3-byte forms
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F  // no UTF-16 surrogates
            case 0xF0: length = 4; lower = 0x90  // no overlong 4-byte forms
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F  // nothing above U+10FFFF
            default: return index
            }
            guard count - index >= length else { return index }
            let second = bytes[index + 1]
            guard second >= lower && second <= upper else { return index }
            for offset in 2..<max(length, 2) where bytes[index + offset] & 0xC0 != 0x80 {
                return index
            }
            index += length
        }
        return nil
    }
}
