import Application
import Identity
import Network
import Resolution

/// `agentd --limits FILE`: a JSON object with one object per scope, each naming resources and
/// their limits, e.g. `{"ip": {"connections": 64}, "system": {"memory": 2147483648}}`. Entries not
/// named keep their defaults (spec/session.md §7 lists them all). The `dht` scope holds the routing
/// table's subnet limits (spec/dht.md §4): `subnet_entries_per_bucket`, `subnet_entries`, and
/// `loopback_exempt` (1: loopback entries are never counted, 0: always counted; unnamed: not counted
/// when the node listens only on loopback).
public enum LimitsFile {
    /// The resources of the `dht` scope.
    static let dhtResources = ["subnet_entries_per_bucket", "subnet_entries", "loopback_exempt"]

    /// Larger files are refused unread: a limits file is a few hundred bytes.
    public static let maximumSize = 64 * 1024

    /// Reads `path` and applies it to `limits` (a `dht` scope is checked, and applied nowhere).
    /// - Throws: `NodeError.invalidConfiguration` naming the file and the problem; `.fileSystem`.
    public static func load(_ path: String, into limits: ResourceLimits = ResourceLimits()) throws(NodeError)
        -> ResourceLimits
    {
        var dht = DHTConfiguration()
        return try load(path, into: limits, dht: &dht)
    }

    /// Reads `path` and applies it: the `dht` scope to `dht`, the other scopes to `limits`.
    /// - Throws: `NodeError.invalidConfiguration` naming the file and the problem; `.fileSystem`.
    public static func load(_ path: String, into limits: ResourceLimits = ResourceLimits(), dht: inout DHTConfiguration)
        throws(NodeError) -> ResourceLimits
    {
        let bytes: [UInt8]
        do {
            bytes = try PrivateFile.read(path, limit: maximumSize, requirePrivate: false)
        } catch {
            throw NodeError(.fileSystem, "cannot read the limits file: \(error.message)")
        }
        do {
            return try parse(bytes, into: limits, dht: &dht)
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
        var dht = DHTConfiguration()
        return try parse(bytes, into: limits, dht: &dht)
    }

    /// Applies the JSON text `bytes`: the `dht` scope to `dht`, the other scopes to `limits`.
    /// - Throws: as `parse(_:into:)`.
    public static func parse(
        _ bytes: some Collection<UInt8>, into limits: ResourceLimits = ResourceLimits(), dht: inout DHTConfiguration
    ) throws(NodeError) -> ResourceLimits {
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
                if scope == "dht" {
                    try apply(resource, limit, to: &dht)
                    continue
                }
                do {
                    try limits.set(scope: scope, resource: resource, to: limit)
                } catch {
                    let message = ResourceLimits.scopes.contains(scope) ? error.message : error.message + ", dht"
                    throw NodeError(.invalidConfiguration, message)
                }
            }
        }
        return limits
    }

    private static func apply(_ resource: String, _ value: Int, to dht: inout DHTConfiguration) throws(NodeError) {
        switch resource {
        case "subnet_entries_per_bucket", "subnet_entries":
            guard value >= 1 else {
                throw NodeError(.invalidConfiguration, "dht.\(resource) must be at least 1, not \(value)")
            }
            if resource == "subnet_entries" {
                dht.routingTable.maximumEntriesPerSubnet = value
            } else {
                dht.routingTable.maximumEntriesPerSubnetPerBucket = value
            }
        case "loopback_exempt":
            guard value == 0 || value == 1 else {
                throw NodeError(.invalidConfiguration, "dht.loopback_exempt must be 0 or 1, not \(value)")
            }
            dht.loopbackExemption = value == 1 ? .always : .never
        default:
            throw NodeError(
                .invalidConfiguration,
                "unknown resource \"\(printable(resource))\" in scope dht; it has \(dhtResources.joined(separator: ", "))")
        }
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
