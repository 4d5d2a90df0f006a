import Multiformats
import Network

/// Everything `AgentNode` needs to run, resolved from the command line and defaults.
public struct NodeConfiguration: Sendable {
    /// Default listen addresses (issue #3): all IPv4 and IPv6 interfaces, port 4001.
    public static let defaultListenAddresses = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]

    public var dataDirectory: DataDirectory
    /// Addresses to listen on; `/tcp/0` picks a free port.
    public var listenAddresses: [Multiaddr]
    /// The control API socket (default: DATA_DIR/agentd.sock).
    public var apiSocketPath: String
    public var host = Network.Host.Configuration()

    public init(dataDirectory: DataDirectory, listenAddresses: [Multiaddr], apiSocketPath: String? = nil) {
        self.dataDirectory = dataDirectory
        self.listenAddresses = listenAddresses
        self.apiSocketPath = apiSocketPath ?? dataDirectory.apiSocketPath
    }
}
