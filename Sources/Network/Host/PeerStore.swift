import Identity

/// What identify told us about each connected peer (spec/session.md §5).
///
/// Bounded by the connected set: an entry is written only while the peer has an established
/// connection, and dropped with the peer's last connection. Attack prevented: connect with a fresh
/// peer id, answer identify with 64 KiB of addresses, disconnect, repeat; a store that kept every
/// peer ever seen grew by megabytes a minute with no peer connected (issue #10, finding 2). Each
/// entry is itself capped at decoding (`IdentifyInfo` keeps at most `Identify.maximumListenAddresses`
/// addresses and `Identify.maximumProtocols` protocols, each of bounded length), so the store holds
/// at most `ResourceLimits.systemConnections` bounded entries.
///
/// Why not an LRU of recently seen peers: every reader (the DHT's admission of an inbound peer, the
/// control API's `peers`) asks about a connected peer; what a disconnected peer claimed is stale
/// and unauthenticated beyond its connection, and the DHT keeps the addresses it needs in its own
/// table. Identify runs again on the next connection.
///
/// Not thread-safe: `HostCore` keeps it under its lock, together with the registry it follows.
struct PeerStore {
    private var infos: [PeerID: IdentifyInfo] = [:]

    /// How many peers have an entry.
    var count: Int { infos.count }

    func info(for peer: PeerID) -> IdentifyInfo? { infos[peer] }

    /// Stores `info` for `peer`; the caller checked that the peer is connected.
    mutating func set(_ info: IdentifyInfo, for peer: PeerID) { infos[peer] = info }

    /// Forgets `peer` (its last connection closed).
    mutating func remove(_ peer: PeerID) { infos[peer] = nil }

    mutating func removeAll() { infos.removeAll() }
}
