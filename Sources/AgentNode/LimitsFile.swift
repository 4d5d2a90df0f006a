import Application
import Identity
import Network

/// `agentd --limits FILE`: a JSON object with one object per scope, each naming resources and
/// their limits, e.g. `{"ip": {"connections": 64}, "system": {"memory": 2147483648}}`. Entries not
/// named keep their defaults (spec/session.md §7 lists them all).
public enum LimitsFile {
    /// Larger files are refused unread: a limits file is a few hundred bytes.
    public static let maximumSize = 64 * 1024

    /// Reads `path` and applies it to `limits`.
    /// - Throws: `NodeError.invalidConfiguration` naming the file and the problem; `.fileSystem`.
    public static func load(_ path: String, into limits: ResourceLimits = ResourceLimits()) throws(NodeError)
        -> ResourceLimits
    {
        let bytes: [UInt8]
        do {
            bytes = try PrivateFile.read(path, limit: maximumSize, requirePrivate: false)
        } catch {
            throw NodeError(.fileSystem, "cannot read the limits file: \(error.message)")
        }
        do {
            return try parse(bytes, into: limits)
        } catch {
            throw NodeError(.invalidConfiguration, "limits file \(path): \(error.message)")
        }
    }

    /// Applies the JSON text `bytes` to `limits`.
    /// - Throws: `NodeError.invalidConfiguration`: not JSON, not an object of objects, an unknown
    ///   scope or resource, a value that is not an integer or is below the resource's minimum.
    public static func parse(_ bytes: some Collection<UInt8>, into limits: ResourceLimits = ResourceLimits())
        throws(NodeError) -> ResourceLimits
    {
        let document: JSONValue
        do {
            document = try JSONValue(parsing: bytes, maxDepth: 4)
        } catch {
            throw NodeError(.invalidConfiguration, "not valid JSON: \(error.message)")
        }
        guard case .object(let scopes) = document else {
            throw NodeError(
                .invalidConfiguration,
                "must be a JSON object with one object per scope, e.g. {\"ip\": {\"connections\": 64}}")
        }
        var limits = limits
        for (scope, value) in scopes.sorted(by: { $0.key < $1.key }) {
            guard case .object(let resources) = value else {
                throw NodeError(
                    .invalidConfiguration, "scope \"\(printable(scope))\" must map to an object of resource limits")
            }
            for (resource, value) in resources.sorted(by: { $0.key < $1.key }) {
                guard case .number(let number) = value, let limit = number.intValue else {
                    throw NodeError(
                        .invalidConfiguration,
                        "\(printable(scope)).\(printable(resource)) must be a whole number, not \(describe(value))")
                }
                do {
                    try limits.set(scope: scope, resource: resource, to: limit)
                } catch {
                    throw NodeError(.invalidConfiguration, error.message)
                }
            }
        }
        return limits
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        case .number(let number): number.intValue == nil ? "\(number)" : "a number"
        }
    }

    private static func printable(_ text: String) -> String {
        let head = text.prefix(64).unicodeScalars.map {
            $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f && $0 != "\"" ? Character($0) : "?"
        }
        return String(head) + (text.count > 64 ? "…" : "")
    }
}
