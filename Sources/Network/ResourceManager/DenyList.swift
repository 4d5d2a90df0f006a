import Identity

/// Peers and networks the node refuses: at accept (the address, before any handshake work), after
/// the handshake (the peer id), and at dial (both). `agentctl block PEER_ID|CIDR` adds an entry.
///
/// A value: the node keeps it in its `ResourceManager` and persists it in the data directory
/// (`AgentNode`'s `DenyListFile`), as text lines of the entries.
public struct DenyList: Hashable, Sendable {
    /// Most entries of each kind: a list the node consults on every accept stays small.
    public static let maximumEntries = 4096

    public private(set) var peers: Set<PeerID> = []
    public private(set) var networks: [IPNetwork] = []

    public init() {}

    /// One entry: a peer id or an IP network.
    public enum Entry: Hashable, Sendable, CustomStringConvertible {
        case peer(PeerID)
        case network(IPNetwork)

        /// Parses a peer id (`12D3KooW…`, `Qm…`) or an IP network / address (`10.0.0.0/8`, `::1`).
        /// - Throws: `NetworkError.invalidAddress` saying what either reading found wrong.
        public init(_ text: String) throws(NetworkError) {
            if text.contains(".") || text.contains(":") || text.contains("/") {
                self = .network(try IPNetwork(text))
                return
            }
            do {
                self = .peer(try PeerID(text))
            } catch {
                throw NetworkError(
                    .invalidAddress,
                    "\"\(ResourceLimits.printable(text))\" is neither a peer id nor an IP network (CIDR): \(error.message)"
                )
            }
        }

        public var description: String {
            switch self {
            case .peer(let peer): peer.description
            case .network(let network): network.description
            }
        }
    }

    /// Every entry, peers first, each kind sorted by its text.
    public var entries: [Entry] {
        peers.sorted { $0.description < $1.description }.map(Entry.peer)
            + networks.sorted { $0.description < $1.description }.map(Entry.network)
    }

    /// Adds `entry`; false if it was there already.
    /// - Throws: `NetworkError.resourceLimit` past `maximumEntries`.
    @discardableResult
    public mutating func insert(_ entry: Entry) throws(NetworkError) -> Bool {
        switch entry {
        case .peer(let peer):
            guard !peers.contains(peer) else { return false }
            guard peers.count < Self.maximumEntries else {
                throw NetworkError(.resourceLimit, "the deny list holds \(Self.maximumEntries) peers, its maximum")
            }
            peers.insert(peer)
        case .network(let network):
            guard !networks.contains(network) else { return false }
            guard networks.count < Self.maximumEntries else {
                throw NetworkError(.resourceLimit, "the deny list holds \(Self.maximumEntries) networks, its maximum")
            }
            networks.append(network)
        }
        return true
    }

    /// Removes `entry`; false if it was not there.
    @discardableResult
    public mutating func remove(_ entry: Entry) -> Bool {
        switch entry {
        case .peer(let peer):
            return peers.remove(peer) != nil
        case .network(let network):
            guard let index = networks.firstIndex(of: network) else { return false }
            networks.remove(at: index)
            return true
        }
    }

    /// Whether `peer` is denied.
    public func contains(_ peer: PeerID) -> Bool { peers.contains(peer) }

    /// The first denied network that holds `address`.
    public func network(containing address: IPAddress) -> IPNetwork? {
        networks.first { $0.contains(address) }
    }
}
