import Identity
import Multiformats
import NIOCore

/// The Kademlia DHT of a node as one sans-I/O state machine (issue #14, DESIGN.md §2): routing-table
/// updates, the lookups (closest peers, values, providers), the server's answers, and the schedule
/// of the jobs (bucket refresh, republish, re-replication, restore), with the own-name life cycle
/// (`OwnNames`) and the resolution cache beside them. After rust-libp2p's kad `Behaviour` and its
/// `jobs.rs`: events in, actions out, time passed in.
///
/// ```swift
/// var actions: [KademliaAction<KademliaPeer>] = []
/// behaviour.handle(.startQuery(id, .closestPeers(key: key, extraSeeds: [])), now: now, unixNow: unix, into: &actions)
/// for action in actions { perform(action) }   // send, respond, check liveness, run a job …
/// ```
/// No clock reads, locks, tasks, sockets or logging inside: the caller passes the time, performs
/// the actions, and reports their outcome as later events. Randomness comes from a seeded generator.
/// The record store is the only outside state it touches (synchronously, through `RecordStoring`);
/// its failures come out as `.storageFailed` actions, never dropped.
///
/// Generic over the peer handle (as rust-libp2p's kad is over its `TVal`), so that the routing
/// table, the lookups and the answers hold whatever a driver knows peers by: agentd's `DHT` drives
/// `KademliaBehaviour<KademliaPeer>` (peer ids and addresses, spoken on the wire through
/// `KadMessage`), the simulator `KademliaBehaviour<VirtualPeer>` (a 4-byte node number into one
/// shared key array, requests handed over as they are). Peers are told apart by their keys.
///
/// Drivers: `DHT` (agentd: the kad protocol on the host), agent-sim (virtual nodes on a virtual
/// clock) and the unit tests (`KademliaBehaviourTests`, virtual time, no sockets).
package struct KademliaBehaviour<Peer: KademliaPeerHandle>: Sendable {
    package typealias Table = KBucketsTable<Peer>
    package typealias Event = KademliaEvent<Peer>
    package typealias Action = KademliaAction<Peer>

    /// This node as its own table knows it.
    let local: Peer
    package private(set) var configuration: DHTConfiguration
    /// The node's records (`replaceStore` swaps it for a copy).
    package private(set) var store: any RecordStoring
    /// Checks a record a replica sent, at a Unix time (`SignedAgentRecord.validate(now:)`; a driver
    /// that sees one record many times may remember the verdicts).
    let verify: @Sendable (SignedAgentRecord, UInt64) throws(ResolutionError) -> Void

    package var table: Table
    var cache: ResolutionCache
    var providers: ProviderStore<Peer>
    /// The names this node publishes and the races on them.
    var ownNames: OwnNames
    var random: SplitMix64

    var queries: [KademliaQueryID: RunningQuery] = [:]
    var nextQueryID: UInt64 = 0
    /// Peers being dialled back before they may enter the routing table (spec/dht.md §4), by key.
    var dialBacks: Set<KademliaKey> = []
    /// When a peer's last dial-back failed, by key; bounded (the oldest is forgotten first).
    var dialBackFailures: [KademliaKey: NIODeadline] = [:]
    var jobs = JobSchedule()

    /// A behaviour for `local`, whose peers' keys are found in `keySpace`.
    package init(
        local: Peer, keySpace: Peer.KeySpace, configuration: DHTConfiguration, store: any RecordStoring, seed: UInt64,
        verify: @escaping @Sendable (SignedAgentRecord, UInt64) throws(ResolutionError) -> Void = {
            record, now throws(ResolutionError) in
            try record.validate(now: now)
        }
    ) {
        self.local = local
        self.configuration = configuration
        self.store = store
        self.verify = verify
        self.table = Table(local: local, keySpace: keySpace, configuration: configuration.routingTable)
        self.cache = ResolutionCache(configuration: configuration.cache)
        self.providers = ProviderStore(
            capacity: configuration.maximumProviderRecords,
            perPeerCapacity: configuration.maximumProviderRecordsPerPeer, ttl: configuration.providerRecordTTL)
        self.ownNames = OwnNames(
            rules: .init(
                replicationFactor: configuration.replicationFactor, republishFraction: configuration.republishFraction))
        self.random = SplitMix64(seed: seed)
    }

    /// Makes `store` the behaviour's record store instead: for a driver that copies behaviours (the
    /// simulator continues many runs from one snapshot of a network), whose copies must not share
    /// one store object. agentd's `DHT` never calls it.
    package mutating func replaceStore(_ store: any RecordStoring) {
        self.store = store
    }

    /// Runs the behaviour with `configuration` from now on, keeping its state: for a driver that
    /// continues one network under other settings (the simulator varies r, the value quorum and
    /// the disjoint paths between runs from one snapshot). The routing table keeps the settings it
    /// was made with, which must not change; running queries keep theirs. agentd's `DHT` never
    /// calls it.
    package mutating func replaceConfiguration(_ configuration: DHTConfiguration) {
        precondition(
            configuration.routingTable == self.configuration.routingTable,
            "a behaviour's routing table settings cannot change")
        self.configuration = configuration
    }

    /// A new query id (never reused).
    package mutating func makeQueryID() -> KademliaQueryID {
        nextQueryID &+= 1
        return KademliaQueryID(raw: nextQueryID)
    }

    /// Feeds one event at `now` (monotonic) and `unixNow` (seconds since the epoch, for record
    /// validity); appends what the caller must do to `actions` (not cleared: one buffer serves many
    /// events).
    package mutating func handle(_ event: Event, now: NIODeadline, unixNow: UInt64, into actions: inout [Action]) {
        switch event {
        case .startQuery(let id, let query):
            startQuery(id, query, now: now, unixNow: unixNow, into: &actions)
        case .response(let id, let peer, let message, let contact):
            received(message, for: id, from: peer, now: now, unixNow: unixNow, into: &actions)
            admit(peer, evidence: .answeredRequest, contact: contact, now: now, into: &actions)
        case .requestFailed(let id, let peer, let failure):
            requestFailed(id, peer: peer, failure: failure, now: now, into: &actions)
        case .queryTimer(let id):
            poll(id, now: now, into: &actions)
        case .cancelQuery(let id):
            if let query = queries.removeValue(forKey: id) {
                var lookup = query.lookup
                actions.append(.finished(id, Self.outcome(of: query, lookup.stop(now: now))))
            }
        case .request(let id, let peer, let message):
            actions.append(.respond(id, answer(message, from: peer, now: now, unixNow: unixNow, into: &actions)))
        case .inboundStream(let peer, let mode, let contact):
            admit(peer, evidence: .inboundStream(mode), contact: contact, now: now, into: &actions)
        case .livenessChecked(let peer, let alive):
            livenessChecked(peer, alive: alive, now: now, into: &actions)
        case .dialBackFinished(let peer, let evidence, let proven):
            dialBackFinished(peer, evidence: evidence, proven: proven, now: now, into: &actions)
        case .maintenance(let enabled):
            setMaintenance(enabled, now: now)
        case .jobFinished(let job):
            jobFinished(job, now: now)
        case .timer:
            runDueJobs(now: now, into: &actions)
        }
    }

    /// The earliest time the caller must send `.timer` (the jobs' schedule); `nil` for none.
    /// Query timeouts come as `.armQueryTimer` actions instead, to the query's owner.
    package var nextDeadline: NIODeadline? { jobs.nextDeadline }

    /// The key of `peer`.
    package func key(of peer: Peer) -> KademliaKey { table.key(of: peer) }
}

extension KademliaBehaviour where Peer == KademliaPeer {
    /// agentd's behaviour: peers are `KademliaPeer`s, which carry their keys.
    init(
        localPeer: PeerID, configuration: DHTConfiguration, store: any RecordStoring, seed: UInt64,
        verify: @escaping @Sendable (SignedAgentRecord, UInt64) throws(ResolutionError) -> Void = {
            record, now throws(ResolutionError) in
            try record.validate(now: now)
        }
    ) {
        self.init(
            local: KademliaPeer(id: localPeer), keySpace: IntrinsicKeySpace(), configuration: configuration,
            store: store, seed: seed, verify: verify)
    }

    var localPeer: PeerID { local.id }
}

/// What `KademliaBehaviour` needs of a peer handle beyond what the routing table does.
package protocol KademliaPeerHandle: RoutingTablePeer {
    /// The peer id the record store counts a PUT_VALUE's sender under (its per-sender quota,
    /// `RecordStoring.put(_:from:now:)`); nil where the driver knows none.
    func peerID(in keySpace: KeySpace) -> PeerID?
}

extension KademliaPeer: KademliaPeerHandle {
    package func peerID(in keySpace: IntrinsicKeySpace) -> PeerID? { id }
}

/// Identifies a query of one `KademliaBehaviour`.
package struct KademliaQueryID: Hashable, Sendable, CustomStringConvertible {
    let raw: UInt64
    package var description: String { "q\(raw)" }
}

/// Identifies an inbound request until it is answered.
package struct KademliaRequestID: Hashable, Sendable {
    let raw: UInt64

    package init(raw: UInt64) {
        self.raw = raw
    }
}

/// What a query looks for.
package enum KademliaQuery<Peer: Sendable>: Sendable {
    /// The k peers closest to `key` (FIND_NODE). `extraSeeds` are peers the caller supplied
    /// (bootstrap addresses): their addresses are dialled as given, not as hearsay.
    case closestPeers(key: [UInt8], extraSeeds: [Peer])
    /// The records of `name` (GET_VALUE), judged by `ValueLookup`.
    case value(AgentName)
    /// Up to `limit` providers of `key` (GET_PROVIDERS): the local provider store's first.
    case providers(key: [UInt8], limit: Int)
}

/// How a query ended.
package enum KademliaQueryOutcome<Peer: RoutingTablePeer>: Sendable {
    case closestPeers(LookupResult<Peer>)
    /// The lookup, and the value side that collected the replicas' answers (`decide` it).
    case value(LookupResult<Peer>, ValueLookup<Peer>)
    /// The providers found, local ones first, in order of discovery.
    case providers([Peer])
}

/// What the driver knows of how it reached a peer, for routing-table admission (spec/dht.md §4).
package struct PeerContact: Hashable, Sendable {
    /// Addresses a handshake verified: the remote address of a connection we dialled.
    var verified: [Multiaddr] = []
    /// Where a peer that dialled us could be dialled back: its identify listen addresses the scope
    /// rule allows (an unspecified IP replaced by the one its connection comes from).
    var dialBackCandidates: [Multiaddr] = []
    /// The driver vouches for the peer without addresses: its network has none to prove (the
    /// simulator's virtual nodes, reached by number). agentd never sets it.
    var reachedWithoutAddresses = false

    /// A contact the driver vouches for without addresses (`reachedWithoutAddresses`).
    package static let addressless = PeerContact(reachedWithoutAddresses: true)

    /// Whether the contact proves the peer reachable: a verified address, or the driver's word.
    var isVerified: Bool { !verified.isEmpty || reachedWithoutAddresses }
}

/// The periodic jobs a `.runJob` action starts.
package enum KademliaJob: Hashable, Sendable {
    /// Every `maintenanceInterval`: refresh the due buckets (`targets`, plus a self-lookup),
    /// republish due own records, retry failed restores.
    case upkeep(refresh: [RoutingTable.RefreshTarget])
    /// Every `replicationInterval`: push the records stored for others to their closest nodes.
    case replication
    /// Soon after the table grew while own names reached fewer than r replicas.
    case republishAfterGrowth

    package var kind: KademliaJobKind {
        switch self {
        case .upkeep: .upkeep
        case .replication: .replication
        case .republishAfterGrowth: .republishAfterGrowth
        }
    }
}

/// The kinds of job rounds, for `.jobFinished`.
package enum KademliaJobKind: Hashable, Sendable {
    case upkeep, replication, republishAfterGrowth
}

/// What to do with one inbound request.
package enum KademliaReply<Peer: Sendable>: Sendable {
    case answer(KademliaResponse<Peer>)
    case none
    /// Reset the stream (the kad-dht convention for a refused request), with the reason for the log.
    case refuse(String)
}

/// Inputs of `KademliaBehaviour.handle`.
package enum KademliaEvent<Peer: Sendable>: Sendable {
    /// An API call starts a query (`makeQueryID` gives the id).
    case startQuery(KademliaQueryID, KademliaQuery<Peer>)
    /// A peer answered a request of the query (its addresses already filtered by the scope rule).
    case response(KademliaQueryID, from: Peer, KademliaResponse<Peer>, PeerContact)
    /// A request of the query failed.
    case requestFailed(KademliaQueryID, peer: Peer, KadRequestFailure)
    /// The time of an `.armQueryTimer` came.
    case queryTimer(KademliaQueryID)
    /// The caller gave up on the query (its task was cancelled): it ends with what it has.
    case cancelQuery(KademliaQueryID)
    /// A request arrived on an inbound kad stream.
    case request(KademliaRequestID, from: Peer, KademliaRequest<Peer>)
    /// A peer opened a kad stream to us and identify said whether it serves the DHT.
    case inboundStream(Peer, KademliaMode, PeerContact)
    /// The outcome of a `.checkLiveness`.
    case livenessChecked(Peer, alive: Bool)
    /// The outcome of a `.dialBack`: the address that proved the peer, or nil.
    case dialBackFinished(Peer, RoutingTableEvidence, proven: Multiaddr?)
    /// The periodic jobs start (true) or stop (false).
    case maintenance(enabled: Bool)
    /// A job round of `.runJob` ended.
    case jobFinished(KademliaJobKind)
    /// The time of `nextDeadline` came.
    case timer
}

/// Outputs of `KademliaBehaviour.handle`.
package enum KademliaAction<Peer: RoutingTablePeer>: Sendable {
    /// Send `request` to `peer` for the query, and report `.response` or `.requestFailed`.
    /// `hearsay`: the peer's addresses were named by a third party (spec/dht.md §6.4).
    case send(KademliaQueryID, Peer, KademliaRequest<Peer>, hearsay: Bool)
    /// Send `.queryTimer` for the query at this time (replaces an earlier one).
    case armQueryTimer(KademliaQueryID, NIODeadline)
    /// The query is over.
    case finished(KademliaQueryID, KademliaQueryOutcome<Peer>)
    /// Answer the inbound request (the driver knows which closer peers are connected).
    case respond(KademliaRequestID, KademliaReply<Peer>)
    /// Check whether this peer (the least recently seen of a full bucket) is alive, and report
    /// `.livenessChecked` (spec/dht.md §4: libp2p ping, not kad PING).
    case checkLiveness(Peer)
    /// Dial the peer back at one of `candidates` (a fresh connection), and report `.dialBackFinished`.
    case dialBack(Peer, RoutingTableEvidence, candidates: [Multiaddr])
    /// Run a job round, and report `.jobFinished` when it is over.
    case runJob(KademliaJob)
    /// A peer left the routing table (for the log).
    case removed(KBucketsTable<Peer>.Eviction, reason: String)
    /// The record store failed (about `name`, if one); log it where an operator sees it (the
    /// behaviour went on without).
    case storageFailed(String, ResolutionError, name: AgentName?)
}

/// A small seeded generator (SplitMix64, Steele et al. 2014): the behaviour's only randomness, so
/// that a seed reproduces a run; agent-bench draws its reproducible choices from it too.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
