import NIOCore

/// One peer in a routing table, generic over the peer handle (see `RoutingTablePeer`). Its times are
/// stored as the handle's `Timestamp` (for the simulator's handles, 4 bytes each: the whole entry is
/// 16 bytes) and read as `NIODeadline`s.
public struct KBucketEntry<Peer: RoutingTablePeer>: Hashable, Sendable {
    /// The peer, with the addresses it was last seen with (at most
    /// `RoutingTable.Configuration.maximumAddressesPerPeer`).
    public internal(set) var peer: Peer
    var lastSeenStamp: Peer.Timestamp
    let firstSeenStamp: Peer.Timestamp
    /// Whether the caller reported an open connection to the peer (`RoutingTable.setConnected`).
    /// Informational: eviction goes by `lastSeen`.
    public internal(set) var isConnected: Bool
    /// How the peer proved it serves the DHT when last seen.
    public internal(set) var evidence: RoutingTableEvidence

    init(peer: Peer, lastSeen: NIODeadline, firstSeen: NIODeadline, isConnected: Bool, evidence: RoutingTableEvidence) {
        self.peer = peer
        self.lastSeenStamp = Peer.timestamp(lastSeen)
        self.firstSeenStamp = Peer.timestamp(firstSeen)
        self.isConnected = isConnected
        self.evidence = evidence
    }

    /// When the peer was last heard from: an answer, an inbound server-mode stream or a passed
    /// liveness check. Buckets are ordered by it.
    public internal(set) var lastSeen: NIODeadline {
        get { Peer.deadline(lastSeenStamp) }
        set { lastSeenStamp = Peer.timestamp(newValue) }
    }

    /// When the peer entered the table (or its replacement cache).
    public var firstSeen: NIODeadline { Peer.deadline(firstSeenStamp) }
}

extension KBucketEntry where Peer == KademliaPeer {
    /// The peer's key.
    public var key: KademliaKey { peer.key }
}

/// An entry of agentd's routing table: a peer id with its addresses.
public typealias RoutingTableEntry = KBucketEntry<KademliaPeer>
