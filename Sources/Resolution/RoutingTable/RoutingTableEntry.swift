import NIOCore

/// One peer in a routing table, generic over the peer handle (see `RoutingTablePeer`).
public struct KBucketEntry<Peer: RoutingTablePeer>: Hashable, Sendable {
    /// The peer, with the addresses it was last seen with (at most
    /// `RoutingTable.Configuration.maximumAddressesPerPeer`).
    public internal(set) var peer: Peer
    /// When the peer was last heard from: an answer, an inbound server-mode stream or a passed
    /// liveness check. Buckets are ordered by it.
    public internal(set) var lastSeen: NIODeadline
    /// When the peer entered the table (or its replacement cache).
    public let firstSeen: NIODeadline
    /// Whether the caller reported an open connection to the peer (`RoutingTable.setConnected`).
    /// Informational: eviction goes by `lastSeen`.
    public internal(set) var isConnected: Bool
    /// How the peer proved it serves the DHT when last seen.
    public internal(set) var evidence: RoutingTableEvidence

    /// The peer's key.
    public var key: KademliaKey { peer.key }
}

/// An entry of agentd's routing table: a peer id with its addresses.
public typealias RoutingTableEntry = KBucketEntry<KademliaPeer>
