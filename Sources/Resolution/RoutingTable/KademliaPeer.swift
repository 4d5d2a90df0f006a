import Identity
import Multiformats
import NIOCore

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
/// a handle from which the table gets the peer's key, and the addresses the subnet limits look at.
/// agentd's table holds `KademliaPeer` (a peer id, its key and its addresses); the simulator holds a
/// 4-byte number into one key array shared by every table, and stores entry times in 4 bytes, so
/// that an entry of a simulated network's table costs 16 bytes.
public protocol RoutingTablePeer: Hashable, Sendable {
    /// What turns a handle into its key; the table holds one (`KBucketsTable.keySpace`).
    associatedtype KeySpace: Sendable = IntrinsicKeySpace
    /// How an entry stores its times; converted from and to `NIODeadline` by the two functions
    /// below. agentd's entries hold `NIODeadline`s.
    associatedtype Timestamp: Hashable, Sendable = NIODeadline
    /// The peer's place in the keyspace, found in `keySpace`; the table's identity of a peer (two
    /// handles with one key are the same peer).
    func key(in keySpace: KeySpace) -> KademliaKey
    /// Addresses to dial the peer at, as last reported; the subnet limits count the peer in the
    /// subnet of the first. Empty for a peer without addresses, which no subnet limit counts.
    var addresses: [Multiaddr] { get }
    /// The same peer with `addresses` instead; a handle without addresses returns itself.
    func withAddresses(_ addresses: [Multiaddr]) -> Self
    /// `deadline` as an entry stores it. Comparisons of converted times must order as the deadlines do
    /// (a coarser timestamp may make two close times equal).
    static func timestamp(_ deadline: NIODeadline) -> Timestamp
    /// The deadline a stored timestamp stands for.
    static func deadline(_ timestamp: Timestamp) -> NIODeadline
}

/// The key space of peers that carry their own key (`KademliaPeer`): nothing.
public struct IntrinsicKeySpace: Hashable, Sendable {
    public init() {}
}

extension RoutingTablePeer where Timestamp == NIODeadline {
    public static func timestamp(_ deadline: NIODeadline) -> NIODeadline { deadline }
    public static func deadline(_ timestamp: NIODeadline) -> NIODeadline { timestamp }
}

extension KademliaPeer: RoutingTablePeer {
    public func key(in keySpace: IntrinsicKeySpace) -> KademliaKey { key }

    public func withAddresses(_ addresses: [Multiaddr]) -> KademliaPeer {
        var copy = self
        copy.addresses = addresses
        return copy
    }
}
