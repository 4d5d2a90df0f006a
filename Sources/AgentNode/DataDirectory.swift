import Foundation

/// Where a node keeps its files (DESIGN §5): `identity.key`, `agentd.db`, `agentd.sock`.
public struct DataDirectory: Hashable, Sendable {
    /// The directory path.
    public let path: String

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// The data directory to use: `explicit` when given, else `$AGENTD_HOME`, else `~/.agentd`.
    public static func resolve(
        explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment
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
}
