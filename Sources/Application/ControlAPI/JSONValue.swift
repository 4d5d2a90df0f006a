/// A JSON value, as the control API carries it: request params, results, notification params.
///
/// Numbers keep their exact text value where it is an integer: `18446744073709551615` stays a
/// `UInt64` and `-9223372036854775808` an `Int64`, never rounded through `Double` (see
/// ``JSONNumber``). Objects are unordered; the encoder writes keys sorted, so output is stable.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

/// A JSON number: an exact signed or unsigned 64-bit integer, or a `Double`.
///
/// The parser produces an integer for every number written without a fraction or exponent that
/// fits in `Int64` (or, above `Int64.max`, in `UInt64`), and a `Double` otherwise. `1` and `1.0`
/// are different values: they are written back as they came.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    enum Storage: Sendable, Hashable {
        case int(Int64)
        /// Only for values above `Int64.max`; smaller ones are stored as `.int`.
        case uint(UInt64)
        case double(Double)
    }

    let storage: Storage

    public init(_ value: Int64) { storage = .int(value) }
    public init(_ value: Int) { storage = .int(Int64(value)) }
    public init(_ value: UInt64) { storage = value <= UInt64(Int64.max) ? .int(Int64(value)) : .uint(value) }
    public init(_ value: Double) { storage = .double(value) }

    /// The value as `Int64` when it is an integer in range (a `Double` only when it converts exactly).
    public var int64Value: Int64? {
        switch storage {
        case .int(let value): return value
        case .uint: return nil
        case .double(let value): return Int64(exactly: value)
        }
    }

    /// The value as `UInt64` when it is a non-negative integer in range.
    public var uint64Value: UInt64? {
        switch storage {
        case .int(let value): return UInt64(exactly: value)
        case .uint(let value): return value
        case .double(let value): return UInt64(exactly: value)
        }
    }

    /// The value as `Int` when it is an integer in range.
    public var intValue: Int? { int64Value.flatMap { Int(exactly: $0) } }

    /// The value as `Double` (large integers round to the nearest `Double`).
    public var doubleValue: Double {
        switch storage {
        case .int(let value): return Double(value)
        case .uint(let value): return Double(value)
        case .double(let value): return value
        }
    }

    /// True when the number was written (or made) as an integer.
    public var isInteger: Bool {
        if case .double = storage { return false }
        return true
    }

    /// The JSON text of the number. A non-finite `Double` (not representable in JSON) is `null`.
    public var description: String {
        switch storage {
        case .int(let value): return String(value)
        case .uint(let value): return String(value)
        case .double(let value):
            // Swift prints the shortest text that reads back as the same Double ("0.1", "1e-07",
            // "1.0"), which is always valid JSON number syntax for finite values.
            return value.isFinite ? String(value) : "null"
        }
    }
}

// MARK: - Literals

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .number(JSONNumber(value)) }
    public init(floatLiteral value: Double) { self = .number(JSONNumber(value)) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }

    /// A later duplicate key replaces an earlier one.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

extension JSONValue {
    /// A number value from an integer.
    public static func number(_ value: Int) -> JSONValue { .number(JSONNumber(value)) }
    /// A number value from an `Int64`.
    public static func number(_ value: Int64) -> JSONValue { .number(JSONNumber(value)) }
    /// A number value from a `UInt64`, kept exact above `Int64.max`.
    public static func number(_ value: UInt64) -> JSONValue { .number(JSONNumber(value)) }
    /// A number value from a `Double`.
    public static func number(_ value: Double) -> JSONValue { .number(JSONNumber(value)) }
}

// MARK: - Access

extension JSONValue {
    /// The member `key` of an object; `nil` when this is not an object or has no such member.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// The element at `index` of an array; `nil` when this is not an array or the index is out of range.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let elements) = self, elements.indices.contains(index) { return elements[index] }
        return nil
    }

    public var isNull: Bool { self == .null }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    public var numberValue: JSONNumber? {
        if case .number(let value) = self { return value }
        return nil
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The value as `Int` when it is an integer number in range.
    public var intValue: Int? { numberValue?.intValue }
    /// The value as `Int64` when it is an integer number in range.
    public var int64Value: Int64? { numberValue?.int64Value }
    /// The value as `UInt64` when it is a non-negative integer number in range.
    public var uint64Value: UInt64? { numberValue?.uint64Value }
    /// The value as `Double` when it is a number.
    public var doubleValue: Double? { numberValue?.doubleValue }

    /// The JSON type name, for error messages: "null", "boolean", "number", "string", "array", "object".
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}
