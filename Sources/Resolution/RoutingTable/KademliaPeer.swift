import Identity
import Multiformats

/// A DHT peer as the routing table and the lookup see it: its id, its key (computed once from the
/// id, so the two can never disagree) and the addresses it was reported with. The addresses are
/// opaque here; whoever dials the peer interprets them.
public struct KademliaPeer: Hashable, Sendable, CustomStringConvertible {
    /// The peer id.
    public let id: PeerID
    /// `KademliaKey(peer: id)`.
    public let key: KademliaKey
    /// Addresses to dial the peer at, as last reported.
    public var addresses: [Multiaddr]

    /// A peer and its addresses; hashes the id once to place it in the keyspace.
    public init(id: PeerID, addresses: [Multiaddr] = []) {
        self.id = id
        self.key = KademliaKey(peer: id)
        self.addresses = addresses
    }

    public var description: String { id.description }
}

/// The DHT mode a peer runs in (libp2p kad-dht spec, "Client and server mode").
public enum KademliaMode: String, Hashable, Sendable {
    /// Queries the DHT but neither accepts kad streams nor advertises the kad protocol; never
    /// enters anyone's routing table.
    case client
    /// Accepts kad streams and advertises the protocol through identify.
    case server
}

/// What a routing table holds for a peer (the `TVal` of rust-libp2p's `KBucketsTable<TKey, TVal>`):
/// its key, and the addresses the subnet limits look at. agentd's table holds `KademliaPeer` (a peer
/// id and its addresses); the simulator holds a handle of a few bytes that shares one key object per
/// virtual node, so that a routing table of a simulated network costs little per entry.
public protocol RoutingTablePeer: Hashable, Sendable {
    /// The peer's place in the keyspace; the table's identity of a peer (two handles with one key
    /// are the same peer).
    var key: KademliaKey { get }
    /// Addresses to dial the peer at, as last reported; the subnet limits count the peer in the
    /// subnet of the first. Empty for a peer without addresses, which no subnet limit counts.
    var addresses: [Multiaddr] { get }
    /// The same peer with `addresses` instead; a handle without addresses returns itself.
    func withAddresses(_ addresses: [Multiaddr]) -> Self
}

extension KademliaPeer: RoutingTablePeer {
    public func withAddresses(_ addresses: [Multiaddr]) -> KademliaPeer {
        var copy = self
        copy.addresses = addresses
        return copy
    }
}
