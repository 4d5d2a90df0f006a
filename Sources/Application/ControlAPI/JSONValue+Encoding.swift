import NIOCore

extension JSONValue {
    /// Compact JSON text: no whitespace, object keys sorted, integers exact, every control character
    /// escaped, so the text never contains a newline (it is one control API line as it stands).
    public var jsonText: String {
        var buffer = ByteBuffer()
        buffer.writeJSONValue(self)
        return String(buffer: buffer)
    }

    /// Indented JSON text (two spaces, keys sorted), for people; not for the wire.
    public func formatted() -> String {
        var buffer = ByteBuffer()
        buffer.writeJSONValue(self, indent: 0)
        return String(buffer: buffer)
    }
}

extension ByteBuffer {
    /// Writes `value` as compact JSON (see ``JSONValue/jsonText``). Returns the number of bytes written.
    @discardableResult
    public mutating func writeJSONValue(_ value: JSONValue) -> Int {
        let start = writerIndex
        writeJSONValue(value, indent: nil)
        return writerIndex - start
    }

    mutating func writeJSONValue(_ value: JSONValue, indent: Int?) {
        switch value {
        case .null: writeStaticString("null")
        case .bool(let flag): writeStaticString(flag ? "true" : "false")
        case .number(let number): writeString(number.description)
        case .string(let text): writeJSONString(text)
        case .array(let elements):
            guard !elements.isEmpty else {
                writeStaticString("[]")
                return
            }
            writeInteger(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { writeInteger(UInt8(ascii: ",")) }
                writeNewline(indent: indent.map { $0 + 1 })
                writeJSONValue(element, indent: indent.map { $0 + 1 })
            }
            writeNewline(indent: indent)
            writeInteger(UInt8(ascii: "]"))
        case .object(let members):
            guard !members.isEmpty else {
                writeStaticString("{}")
                return
            }
            writeInteger(UInt8(ascii: "{"))
            for (position, key) in members.keys.sorted().enumerated() {
                if position > 0 { writeInteger(UInt8(ascii: ",")) }
                writeNewline(indent: indent.map { $0 + 1 })
                writeJSONString(key)
                writeInteger(UInt8(ascii: ":"))
                if indent != nil { writeInteger(UInt8(ascii: " ")) }
                writeJSONValue(members[key]!, indent: indent.map { $0 + 1 })
            }
            writeNewline(indent: indent)
            writeInteger(UInt8(ascii: "}"))
        }
    }

    private mutating func writeNewline(indent: Int?) {
        guard let indent else { return }
        writeInteger(UInt8(ascii: "\n"))
        writeRepeatingByte(UInt8(ascii: " "), count: indent * 2)
    }

    /// RFC 8259 §7: `"` and `\` escaped, and every control character below U+0020; everything else
    /// as UTF-8.
    mutating func writeJSONString(_ text: String) {
        writeInteger(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { writeEscapedJSONBytes($0) }
        writeInteger(UInt8(ascii: "\""))
    }

    private mutating func writeEscapedJSONBytes(_ bytes: some Collection<UInt8>) {
        let hex: StaticString = "0123456789abcdef"
        var runStart = bytes.startIndex
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                index = bytes.index(after: index)
                continue
            }
            writeBytes(bytes[runStart..<index])
            switch byte {
            case UInt8(ascii: "\""): writeStaticString("\\\"")
            case UInt8(ascii: "\\"): writeStaticString("\\\\")
            case 0x0A: writeStaticString("\\n")
            case 0x0D: writeStaticString("\\r")
            case 0x09: writeStaticString("\\t")
            case 0x08: writeStaticString("\\b")
            case 0x0C: writeStaticString("\\f")
            default:
                writeStaticString("\\u00")
                writeInteger(hex.utf8Start[Int(byte >> 4)])
                writeInteger(hex.utf8Start[Int(byte & 0x0F)])
            }
            index = bytes.index(after: index)
            runStart = index
        }
        writeBytes(bytes[runStart..<index])
    }
}
