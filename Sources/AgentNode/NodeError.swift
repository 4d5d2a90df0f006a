/// The one error type of the `AgentNode` module (configuration, data directory, bootstrap list).
public struct NodeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// A configuration file (e.g. `bootstrap-nodes.json`) is malformed or inconsistent.
        case invalidConfiguration = "invalid_configuration"
        /// A file could not be read.
        case fileSystem = "file_system"
        /// The data directory or the database could be changed by another user (owner, mode,
        /// symlink): refused before anything in it is used.
        case unsafeDataDirectory = "unsafe_data_directory"
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
