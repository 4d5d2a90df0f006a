import Identity
import Multiformats
import NIOCore
import Resolution

/// A virtual node as routing tables hold it: one object per node, shared by every table that holds
/// the node, so an entry costs a reference (8 bytes) instead of a peer id, a key and an address
/// list. Virtual nodes have no addresses, so the subnet limits never count them.
final class VirtualPeer: RoutingTablePeer {
    let key: KademliaKey
    /// The node's index in `Simulation.nodes`.
    let index: Int

    init(key: KademliaKey, index: Int) {
        self.key = key
        self.index = index
    }

    var addresses: [Multiaddr] { [] }

    func withAddresses(_ addresses: [Multiaddr]) -> VirtualPeer { self }

    static func == (lhs: VirtualPeer, rhs: VirtualPeer) -> Bool { lhs.key == rhs.key }

    func hash(into hasher: inout Hasher) { hasher.combine(key) }
}

/// One virtual DHT node: a real routing table (`KBucketsTable`, agentd's code, over `VirtualPeer`
/// handles), a record store (a dictionary keyed by name, with
/// the ownership rules of the real store) and what it does when asked.
struct VirtualNode: Sendable {
    /// How a node answers requests.
    enum Behaviour: Hashable, Sendable {
        case honest
        /// Answers GET_VALUE with a validly signed rival claim for every name, and every request
        /// with junk peers instead of its closest ones. With `sharedKey` all adversaries sign with
        /// one key (a colluding operator); otherwise each with its own.
        case adversary(sharedKey: Bool)
    }

    /// Identity number: the node's key is derived from it and the run's seed.
    let serial: UInt64
    let peer: KademliaPeer
    /// What other nodes' routing tables hold for this one.
    let handle: VirtualPeer
    let publicKey: Ed25519.PublicKey
    var table: KBucketsTable<VirtualPeer>
    var store: [AgentName: SignedAgentRecord] = [:]
    var isOnline = false
    /// Once offline: refuses connections at once rather than never answering.
    var refusesWhenOffline = false
    var behaviour = Behaviour.honest
    /// The name this node owns and keeps published, if any.
    var ownName: AgentName?
    /// The last record it signed for `ownName`.
    var ownRecord: SignedAgentRecord?
    /// When the first publish of `ownName` finished.
    var publishedAt: NIODeadline?
    /// When the node last pushed its stored records (nil: not yet; the first push comes one
    /// replication interval after the first maintenance round).
    var lastReplication: NIODeadline?
    /// Whether a maintenance round is scheduled.
    var maintenanceScheduled = false

    /// Node number `index` of the simulation.
    init(serial: UInt64, index: Int, publicKey: Ed25519.PublicKey, routingTable: RoutingTable.Configuration) {
        self.serial = serial
        self.publicKey = publicKey
        let id = PeerID(publicKey: publicKey)
        self.peer = KademliaPeer(id: id)
        self.handle = VirtualPeer(key: peer.key, index: index)
        self.table = KBucketsTable(local: handle, configuration: routingTable)
    }

    var isAdversary: Bool { behaviour != .honest }

    /// The node's private key, derived again when it must sign (holding thousands of libsodium
    /// secure allocations would exhaust the process's memory mappings).
    static func privateKey(seed: UInt64, serial: UInt64) -> Ed25519.PrivateKey {
        var generator = SimulationGenerator(seed: seed, 0x6b65_79, serial)
        return try! Ed25519.PrivateKey(seed: generator.bytes(Ed25519.seedLength))
    }
}
