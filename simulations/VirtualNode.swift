import Identity
import Multiformats
import NIOCore
import Resolution

/// A virtual node as routing tables hold it: its number, 4 bytes, into the key array every table
/// of the simulation shares (`VirtualKeySpace`). Entry times are milliseconds of virtual time in 4
/// bytes, so an entry is 16 bytes instead of a peer id, a key and an address list. Virtual nodes
/// have no addresses, so the subnet limits never count them.
///
/// Numbers from `phantomBase` up name phantoms: made-up peers of adversaries' junk answers, which
/// have a key (`VirtualKeySpace.phantoms`) but no node, so every request to one fails.
struct VirtualPeer: KademliaPeerHandle {
    /// The node's index in `Simulation.nodes` and in the key space (a phantom's number from
    /// `phantomBase` up).
    let number: UInt32

    static let phantomBase: UInt32 = 1 << 31

    var index: Int { Int(number) }

    init(index: Int) {
        precondition(index >= 0 && index < Int(Self.phantomBase), "virtual node \(index) beyond 2^31")
        self.number = UInt32(index)
    }

    init(phantom: Int) {
        precondition(phantom >= 0 && phantom < Int(Self.phantomBase), "phantom \(phantom) beyond 2^31")
        self.number = Self.phantomBase + UInt32(phantom)
    }

    func key(in keySpace: VirtualKeySpace) -> KademliaKey {
        number < Self.phantomBase ? keySpace.keys[Int(number)] : keySpace.phantoms[Int(number - Self.phantomBase)]
    }

    /// The peer id a replica's store counts this node's PUT_VALUEs under (its per-sender quota):
    /// a `sha2-256` multihash whose digest is the node's key. Not the node's real peer id (an
    /// `identity` multihash of its public key), but as stable and as distinct, and made from what
    /// a handle reaches: the key space's 32 bytes, so that no node keeps a peer id for it.
    func peerID(in keySpace: VirtualKeySpace) -> PeerID? {
        let digest = key(in: keySpace).bytes
        return try! PeerID(multihash: Multihash(code: Multicodec.sha2_256, digest: digest))
    }

    var addresses: [Multiaddr] { [] }

    func withAddresses(_ addresses: [Multiaddr]) -> VirtualPeer { self }

    /// Milliseconds since `Simulation.origin`; the virtual clock never runs before it, and
    /// `AgentSim` bounds a run's virtual time well within the 49.7 days 32 bits hold.
    static func timestamp(_ deadline: NIODeadline) -> UInt32 {
        let nanoseconds = deadline.uptimeNanoseconds
        precondition(nanoseconds >= Simulation.origin, "virtual time before the simulation's origin")
        let milliseconds = (nanoseconds - Simulation.origin) / 1_000_000
        precondition(milliseconds <= UInt64(UInt32.max), "virtual time beyond 49.7 days")
        return UInt32(milliseconds)
    }

    static func deadline(_ timestamp: UInt32) -> NIODeadline {
        .uptimeNanoseconds(Simulation.origin + UInt64(timestamp) * 1_000_000)
    }
}

/// The keys of every virtual node, by node number: one array per simulation, which every routing
/// table of that simulation holds a reference to.
///
/// `@unchecked Sendable`, because `keys` is mutable: one is written only by the `Simulation` that
/// created it (`createNode` appends), and a `Simulation` is confined to the one task that runs it
/// (it is a non-Sendable class). A `NetworkSnapshot`, which crosses tasks, gets a space of its own
/// that nothing writes (`frozenCopy`), and a simulation continued from a snapshot makes itself a
/// copy before it writes. So no read of `keys` races a write.
final class VirtualKeySpace: @unchecked Sendable {
    private(set) var keys: [KademliaKey]
    /// Keys of phantoms (`VirtualPeer(phantom:)`), written like `keys`.
    private(set) var phantoms: [KademliaKey]

    init(keys: [KademliaKey] = [], phantoms: [KademliaKey] = []) {
        self.keys = keys
        self.phantoms = phantoms
    }

    /// Adds the key of the next node.
    func append(_ key: KademliaKey) {
        keys.append(key)
    }

    /// A phantom at `key`.
    func phantom(at key: KademliaKey) -> VirtualPeer {
        phantoms.append(key)
        return VirtualPeer(phantom: phantoms.count - 1)
    }

    /// A space with the same keys (the arrays are shared until one of them appends).
    func copy() -> VirtualKeySpace {
        VirtualKeySpace(keys: keys, phantoms: phantoms)
    }
}

/// One virtual DHT node: agentd's `KademliaBehaviour` over `VirtualPeer` handles (its routing
/// table, lookups, server answers and `MemoryRecordStore`; `Simulation+Kademlia.swift` and
/// `Simulation+Records.swift` drive it) and what the experiments ask of it.
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
    /// agentd's DHT state machine for this node.
    var kad: KademliaBehaviour<VirtualPeer>
    /// The behaviour's routing table.
    var table: KBucketsTable<VirtualPeer> {
        get { kad.table }
        _modify { yield &kad.table }
    }
    /// The behaviour's record store (records stored for others, own records): agentd's
    /// in-memory store with the SQLite store's rules and quotas.
    var records: MemoryRecordStore { kad.store as! MemoryRecordStore }
    var isOnline = false
    /// Once offline: refuses connections at once rather than never answering.
    var refusesWhenOffline = false
    var behaviour = Behaviour.honest
    /// The name this node owns and keeps published, if any (its last record is the store's own
    /// record for it).
    var ownName: AgentName?
    /// When the first publish of `ownName` finished.
    var publishedAt: NIODeadline?
    /// The time the node's job timer is armed for (its behaviour's `nextDeadline` when armed).
    var jobTimer: NIODeadline?

    /// Node number `index` of the simulation; its key is `keySpace.keys[index]` already. Its
    /// behaviour checks records with `verify` (one closure for the whole network, so that no node
    /// pays for a closure context of its own: `Simulation.verify`).
    init(
        serial: UInt64, index: Int, publicKey: Ed25519.PublicKey, keySpace: VirtualKeySpace,
        configuration: DHTConfiguration, storeConfiguration: RecordStoreConfiguration,
        verify: @escaping @Sendable (SignedAgentRecord, UInt64) throws(ResolutionError) -> Void
    ) {
        self.serial = serial
        self.publicKey = publicKey
        let id = PeerID(publicKey: publicKey)
        self.peer = KademliaPeer(id: id)
        self.handle = VirtualPeer(index: index)
        self.kad = KademliaBehaviour(
            local: handle, keySpace: keySpace, configuration: configuration,
            store: MemoryRecordStore(configuration: storeConfiguration), seed: serial,
            verify: verify)
        precondition(table.localKey == peer.key, "key space out of step with the nodes")
    }

    var isAdversary: Bool { behaviour != .honest }

    /// The node's private key, derived again when it must sign (holding thousands of libsodium
    /// secure allocations would exhaust the process's memory mappings).
    static func privateKey(seed: UInt64, serial: UInt64) -> Ed25519.PrivateKey {
        var generator = SimulationGenerator(seed: seed, 0x6b65_79, serial)
        return try! Ed25519.PrivateKey(seed: generator.bytes(Ed25519.seedLength))
    }
}
