import Identity
import NIOCore
import Resolution

/// Messages sent in the whole virtual network, by kind.
struct TrafficCounters: Sendable {
    var findNode = 0
    var getValue = 0
    var put = 0
    var ping = 0

    var total: Int { findNode + getValue + put + ping }
}

/// A state of the virtual network that experiments copy and continue from (routing tables are
/// values, so a copy shares storage until it diverges; record stores are objects, so each copy
/// gets its own, `rebinding`).
struct NetworkSnapshot: Sendable {
    /// The nodes; their routing tables find keys in `keySpace`.
    var nodes: [VirtualNode]
    var indexByKey: [KademliaKey: Int]
    var nanoseconds: UInt64
    /// The nodes' keys, by node number; written by nobody (see `VirtualKeySpace`).
    let keySpace: VirtualKeySpace
    /// The signature verdicts the nodes' behaviours share (and so every network continued from
    /// this one).
    let verdicts: SignatureVerdicts

    /// `nodes` with their tables finding keys in `keySpace` instead, and each record store a copy
    /// of its own.
    static func rebinding(_ nodes: [VirtualNode], to keySpace: VirtualKeySpace) -> [VirtualNode] {
        var nodes = nodes
        for index in nodes.indices {
            nodes[index].table.replaceKeySpace(keySpace)
            nodes[index].kad.replaceStore(nodes[index].records.copy())
        }
        return nodes
    }
}

/// The discrete-event simulator: virtual nodes that run agentd's sans-I/O Kademlia code
/// (`KademliaBehaviour` with its routing table, lookups, server answers and `MemoryRecordStore`,
/// driven by Simulation+Kademlia.swift and Simulation+Records.swift as agentd's `DHT` drives it),
/// connected by a virtual network with per-message latency, on a virtual clock advanced from
/// event to event.
///
/// Everything a node does (lookups, puts, pings, maintenance) is a chain of scheduled actions; the
/// clock jumps to the next one. Nothing reads the real clock or a shared random source: a run is a
/// function of its seed. One instance is confined to one task.
final class Simulation {
    typealias Action = (Simulation) -> Void

    /// Virtual time zero, as an uptime in nanoseconds (any value far from 0 would do).
    static let origin: UInt64 = 1_000_000_000_000
    /// Unix time at virtual time zero (2026-01-01T00:00:00Z), for record timestamps.
    static let unixOrigin: UInt64 = 1_767_225_600

    let seed: UInt64
    var parameters: NetworkParameters
    var generator: SimulationGenerator
    private(set) var nodes: [VirtualNode]
    /// Every node's key by node number, which every routing table of this simulation reads; this
    /// simulation's own (see `VirtualKeySpace`).
    let keySpace: VirtualKeySpace
    private(set) var indexByKey: [KademliaKey: Int]
    private(set) var nanoseconds: UInt64
    private var queue = EventQueue<Action>()
    /// Messages sent since the counters were last reset.
    var traffic = TrafficCounters()
    /// Whether a node that joins starts its behaviour's jobs (`startJobs`).
    var startsJobsOnJoin = false
    /// Signature verdicts of records seen so far, which every node's behaviour consults (each
    /// record is verified once; expiry is checked on every use).
    let verdicts: SignatureVerdicts
    /// `verdicts.validate`, as the closure every node created here checks records with.
    let verify: @Sendable (SignedAgentRecord, UInt64) throws(ResolutionError) -> Void
    /// Rival records adversaries made, by signing identity and name.
    var rivalRecords: [RivalRecordKey: SignedAgentRecord] = [:]
    /// Made-up peers placed near record keys, for adversaries' junk answers.
    var nearJunk: [KademliaKey: [KademliaPeer]] = [:]
    /// Adversaries, for colluders' answers.
    var adversaries: [Int] = []
    /// Queries running in nodes' behaviours, with what to do when each ends (Simulation+Kademlia).
    var kadQueries: [KadQueryKey: KadQuery] = [:]
    /// Buffers the behaviours write their actions into, reused: one per level of nested feeding.
    var actionBuffers: [[KademliaAction<VirtualPeer>]] = []
    var nextRequestID: UInt64 = 0

    private var online: [Int] = []
    private var onlinePosition: [Int] = []

    init(snapshot: NetworkSnapshot, parameters: NetworkParameters, seed: UInt64, generator: SimulationGenerator) {
        self.seed = seed
        self.parameters = parameters
        self.generator = generator
        let keySpace = snapshot.keySpace.copy()
        self.keySpace = keySpace
        let verdicts = snapshot.verdicts
        self.verdicts = verdicts
        self.verify = { record, now throws(ResolutionError) in try verdicts.validate(record, now: now) }
        var nodes = NetworkSnapshot.rebinding(snapshot.nodes, to: keySpace)
        // The nodes run this simulation's settings (r, quorum, paths and intervals may differ from
        // those of the network the snapshot was taken of).
        let configuration = parameters.dhtConfiguration
        for index in nodes.indices { nodes[index].kad.replaceConfiguration(configuration) }
        self.nodes = nodes
        self.indexByKey = snapshot.indexByKey
        self.nanoseconds = snapshot.nanoseconds
        self.onlinePosition = Array(repeating: -1, count: snapshot.nodes.count)
        for index in snapshot.nodes.indices where snapshot.nodes[index].isOnline {
            onlinePosition[index] = online.count
            online.append(index)
        }
        self.adversaries = snapshot.nodes.indices.filter { snapshot.nodes[$0].isAdversary }
    }

    /// An empty network at virtual time zero.
    convenience init(parameters: NetworkParameters, seed: UInt64, generator: SimulationGenerator) {
        self.init(
            snapshot: NetworkSnapshot(
                nodes: [], indexByKey: [:], nanoseconds: Self.origin, keySpace: VirtualKeySpace(),
                verdicts: SignatureVerdicts()),
            parameters: parameters,
            seed: seed, generator: generator)
    }

    /// The network as it is now. Pending events are not part of it: take snapshots when idle.
    var snapshot: NetworkSnapshot {
        let frozen = keySpace.copy()
        return NetworkSnapshot(
            nodes: NetworkSnapshot.rebinding(nodes, to: frozen), indexByKey: indexByKey, nanoseconds: nanoseconds,
            keySpace: frozen, verdicts: verdicts)
    }

    var now: NIODeadline { .uptimeNanoseconds(nanoseconds) }
    /// Virtual seconds since time zero.
    var elapsedSeconds: Double { Double(nanoseconds - Self.origin) / 1e9 }
    /// The virtual time as Unix seconds, for records.
    var unixNow: UInt64 { Self.unixOrigin + (nanoseconds - Self.origin) / 1_000_000_000 }

    // MARK: Events

    func schedule(at time: NIODeadline, _ action: @escaping Action) {
        queue.schedule(at: max(time.uptimeNanoseconds, nanoseconds), action)
    }

    func schedule(after delay: TimeAmount, _ action: @escaping Action) {
        queue.schedule(at: nanoseconds + UInt64(max(delay.nanoseconds, 0)), action)
    }

    /// Runs every event due up to `deadline`, then sets the clock to it.
    func run(until deadline: NIODeadline) {
        let limit = deadline.uptimeNanoseconds
        while let next = queue.nextTime, next <= limit {
            let (time, action) = queue.popFirst()!
            nanoseconds = time
            action(self)
        }
        nanoseconds = max(nanoseconds, limit)
    }

    /// Runs until nothing is scheduled. The nodes' jobs must be stopped (`stopJobs`), or this never
    /// ends.
    func runUntilIdle() {
        while let (time, action) = queue.popFirst() {
            nanoseconds = time
            action(self)
        }
    }

    // MARK: Nodes

    var onlineCount: Int { online.count }
    var onlineNodes: [Int] { online.sorted() }

    /// A uniformly random online node other than `excluded`; nil if there is none.
    func randomOnlineNode(excluding excluded: Int? = nil) -> Int? {
        guard online.count > (excluded.map { onlinePosition[$0] >= 0 ? 1 : 0 } ?? 0) else { return nil }
        while true {
            let candidate = online[Int.random(in: 0..<online.count, using: &generator)]
            if candidate != excluded { return candidate }
        }
    }

    /// Creates a node (offline until it joins) with the next identity, or with identity `serial`
    /// (targeted placement picks identities whose keys lie where it wants them).
    @discardableResult
    func createNode(serial: UInt64? = nil) -> Int {
        let serial = serial ?? UInt64(nodes.count)
        let publicKey = VirtualNode.privateKey(seed: seed, serial: serial).publicKey
        keySpace.append(KademliaKey(peer: PeerID(publicKey: publicKey)))
        let node = VirtualNode(
            serial: serial, index: nodes.count, publicKey: publicKey, keySpace: keySpace,
            configuration: parameters.dhtConfiguration, storeConfiguration: parameters.recordStore,
            verify: verify)
        indexByKey[node.peer.key] = nodes.count
        nodes.append(node)
        onlinePosition.append(-1)
        return nodes.count - 1
    }

    func setOnline(_ index: Int, _ isOnline: Bool) {
        guard nodes[index].isOnline != isOnline else { return }
        nodes[index].isOnline = isOnline
        if isOnline {
            onlinePosition[index] = online.count
            online.append(index)
        } else {
            let position = onlinePosition[index]
            let last = online.removeLast()
            if last != index {
                online[position] = last
                onlinePosition[last] = position
            }
            onlinePosition[index] = -1
        }
    }

    /// Gives node `index` a name to own (published by `publish`).
    func assignName(_ name: AgentName, to index: Int) {
        nodes[index].ownName = name
    }

    func setBehaviour(_ behaviour: VirtualNode.Behaviour, of index: Int) {
        nodes[index].behaviour = behaviour
        adversaries = nodes.indices.filter { nodes[$0].isAdversary }
    }

    /// Mutable access for the experiments' bookkeeping.
    func withNode<Result>(_ index: Int, _ body: (inout VirtualNode) -> Result) -> Result {
        body(&nodes[index])
    }
}

/// Identifies a rival record: the signing identity (a node's serial, or `UInt64.max` for the
/// adversaries' shared key) and the name.
struct RivalRecordKey: Hashable, Sendable {
    let signer: UInt64
    let name: AgentName
}
