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
