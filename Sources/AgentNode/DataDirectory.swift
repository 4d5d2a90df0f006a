#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a node keeps its files (DESIGN §5): `identity.key`, `agentd.db`, `agentd.sock`.
public struct DataDirectory: Hashable, Sendable {
    /// The directory path.
    public let path: String

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// The data directory to use: `explicit` when given, else `$AGENTD_HOME`, else `~/.agentd`.
    public static func resolve(
        explicit: String?, environment: [String: String] = DataDirectory.processEnvironment()
    ) -> DataDirectory {
        if let explicit, !explicit.isEmpty { return DataDirectory(path: explicit) }
        if let home = environment["AGENTD_HOME"], !home.isEmpty { return DataDirectory(path: home) }
        let userHome = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "."
        return DataDirectory(path: userHome + "/.agentd")
    }

    /// The identity key file.
    public var identityKeyPath: String { path + "/identity.key" }
    /// The SQLite database.
    public var databasePath: String { path + "/agentd.db" }
    /// The control API socket.
    public var apiSocketPath: String { path + "/agentd.sock" }
    /// A bootstrap list kept in the data directory.
    public var bootstrapPath: String { path + "/bootstrap-nodes.json" }

    /// The process environment as a dictionary.
    public static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
