import Foundation

/// Loads the JSON test vectors in `Tests/Vectors/` (each file names its sources; spec/ cites them).
public enum TestVectors {
    /// The repository root, found from this file's location (Sources/AgentTesting/TestVectors.swift).
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The parsed JSON object of `Tests/Vectors/<name>`.
    public static func load(_ name: String) throws -> [String: Any] {
        let url = repositoryRoot.appendingPathComponent("Tests/Vectors").appendingPathComponent(name)
        let data = try Data(contentsOf: url)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw VectorError("\(name) is not a JSON object")
        }
        return object
    }

    /// The array of objects under `key` in `Tests/Vectors/<name>`, each flattened to its string and
    /// number fields.
    public static func array(_ name: String, _ key: String = "vectors") throws -> [Vector] {
        guard let array = try load(name)[key] as? [[String: Any]] else {
            throw VectorError("\(name) has no array of objects under \"\(key)\"")
        }
        return array.map(Vector.init)
    }

    /// The array of strings under `key` in `Tests/Vectors/<name>`.
    public static func strings(_ name: String, _ key: String) throws -> [String] {
        guard let array = try load(name)[key] as? [String] else {
            throw VectorError("\(name) has no array of strings under \"\(key)\"")
        }
        return array
    }
}

/// A malformed vector file.
public struct VectorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One test vector: the string and number fields of a JSON object (numbers as their decimal text).
public struct Vector: Sendable, CustomStringConvertible {
    public let fields: [String: String]

    init(_ object: [String: Any]) {
        var fields: [String: String] = [:]
        for (key, value) in object {
            if let text = value as? String {
                fields[key] = text
            } else if let number = value as? NSNumber {
                fields[key] = number.stringValue
            }
        }
        self.fields = fields
    }

    public subscript(_ key: String) -> String? { fields[key] }

    public var description: String { fields["name"] ?? fields["text"] ?? fields["hex"] ?? "\(fields)" }
}

extension Vector {
    /// The string under `key`, or a `VectorError`.
    public func string(_ key: String) throws -> String {
        guard let value = self[key] else { throw VectorError("vector has no string \"\(key)\": \(self)") }
        return value
    }

    /// The hex-decoded bytes under `key`, or a `VectorError`.
    public func hex(_ key: String) throws -> [UInt8] {
        try Hex.decode(string(key))
    }
}
