import Identity

/// Peers whose connections the connection manager must keep: never trimmed, never closed by the
/// idle timeout (spec/session.md §5). The model is go-libp2p's connection manager
/// `Protect(peer, tag)` / `Unprotect(peer, tag)`: each part of the node protects under its own tag
/// (a relay reservation, a conversation waiting for a response, a mailbox transfer), and a peer
/// stays protected while any tag holds. Protection belongs to the peer, not to one connection: it
/// covers a reconnection too, and lasts until the tag is removed.
///
/// Not thread-safe: `HostCore` keeps it under its lock.
struct ConnectionProtection {
    private var tags: [PeerID: Set<String>] = [:]

    mutating func protect(_ peer: PeerID, tag: String) {
        tags[peer, default: []].insert(tag)
    }

    /// Removes `tag`; whether the peer is still protected (by another tag).
    mutating func unprotect(_ peer: PeerID, tag: String) -> Bool {
        guard var held = tags[peer] else { return false }
        held.remove(tag)
        tags[peer] = held.isEmpty ? nil : held
        return !held.isEmpty
    }

    /// Whether `peer` is protected under `tag`, or under any tag when `tag` is nil.
    func isProtected(_ peer: PeerID, tag: String? = nil) -> Bool {
        guard let held = tags[peer] else { return false }
        guard let tag else { return true }
        return held.contains(tag)
    }
}
