import AgentTesting
import Identity
import NIOCore
import Testing

import Resolution

/// A scripted network of virtual DHT nodes for driving `ClosestPeersLookup` on a virtual clock.
///
/// Every node has a real `RoutingTable`, filled as if it had heard from every other node once (in a
/// random order, so full buckets keep whichever 20 came first). A node answers FIND_NODE with the 20
/// closest entries of its table, as a libp2p node does.
struct FakeNetwork: Sendable {
    let nodes: [KademliaPeer]
    let tables: [RoutingTable]
    let indexByKey: [KademliaKey: Int]

    /// Built once and shared by the tests that need it.
    static let thousand = FakeNetwork(size: 1000, seed: 0x6e65_7431)

    init(size: Int, seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let nodes = (0..<size).map { KadFixtures.peer(using: &generator, addresses: [KadFixtures.address($0)]) }
        var tables: [RoutingTable] = []
        tables.reserveCapacity(size)
        for node in nodes {
            var table = RoutingTable(localPeer: node.id)
            for other in nodes.shuffled(using: &generator) where other.key != node.key {
                _ = table.add(other, evidence: .answeredRequest, now: KadFixtures.start)
            }
            tables.append(table)
        }
        self.nodes = nodes
        self.tables = tables
        self.indexByKey = Dictionary(uniqueKeysWithValues: nodes.indices.map { (nodes[$0].key, $0) })
    }

    private init(nodes: [KademliaPeer], tables: [RoutingTable], indexByKey: [KademliaKey: Int]) {
        self.nodes = nodes
        self.tables = tables
        self.indexByKey = indexByKey
    }

    /// The network after every node's failed liveness checks removed `dead` from its table (with
    /// replacements promoted as the table does).
    func repaired(removing dead: Set<Int>) -> FakeNetwork {
        var tables = tables
        for index in tables.indices where !dead.contains(index) {
            for node in dead { _ = tables[index].remove(nodes[node].id) }
        }
        return FakeNetwork(nodes: nodes, tables: tables, indexByKey: indexByKey)
    }

    /// Brute force: the `count` nodes closest to `target` among those `included`, closest first.
    func closest(to target: KademliaKey, count: Int, where included: (Int) -> Bool) -> [Int] {
        Array(
            nodes.indices.filter(included).sorted { target.isCloser(nodes[$0].key, than: nodes[$1].key) }.prefix(count))
    }
}

/// How a virtual node treats requests.
enum NodeBehaviour: Hashable, Sendable {
    /// Answers after 5–80 ms.
    case honest
    /// Never answers: every request to it times out.
    case silent
    /// Refuses at once (a dial error).
    case failing
    /// Answers, but only after this long.
    case late(TimeAmount)
    /// Answers at once with junk: the asker itself, itself, duplicates, made-up peers just next to
    /// the target (which do not exist), then 10,000 random made-up peers.
    case junk
}

/// Runs lookups over a `FakeNetwork` on a virtual clock, checking on every step that α is respected,
/// that no peer is asked twice and that tracking stays bounded.
struct LookupDriver {
    let network: FakeNetwork
    var behaviour: [NodeBehaviour]
    /// How made-up peers (not in the network) behave when dialled: `.failing` or `.silent`.
    var madeUpPeers: NodeBehaviour = .failing
    /// Nodes that hold a record for every key, for value lookups.
    var valueHolders: Set<Int> = []
    /// The pool the junk floods are cut from.
    var junkPool: [KademliaPeer] = []

    init(network: FakeNetwork, behaviour: (Int) -> NodeBehaviour = { _ in .honest }) {
        self.network = network
        self.behaviour = network.nodes.indices.map(behaviour)
    }

    struct Run {
        let result: LookupResult<KademliaPeer>
        /// Nodes asked, in order; `nil` for made-up peers.
        let asked: [Int?]
        /// Most requests holding a slot at once.
        let maximumInFlight: Int
        let maximumTracked: Int
        /// Nodes the lookup heard of before it ended: seeds and peers named in answers.
        let named: Set<Int>
        /// Nodes whose answer arrived before the end.
        let answered: Set<Int>

        /// Named nodes closer than the k-th result (any, if there are fewer than k results) that are
        /// not in the result. Each must have been asked and have given no answer before the end;
        /// a named node the lookup skipped would be a bug.
        func skipped(target: KademliaKey, network: FakeNetwork, k: Int) -> [Int] {
            let result = Set(self.result.closest.compactMap { network.indexByKey[$0.key] })
            let kth = self.result.closest.count == k ? self.result.closest.last?.key : nil
            let asked = Set(self.asked.compactMap { $0 })
            return named.filter { node in
                !result.contains(node) && (kth.map { target.isCloser(network.nodes[node].key, than: $0) } ?? true)
                    && (!asked.contains(node) || answered.contains(node))
            }.sorted()
        }
    }

    private struct Event {
        let time: NIODeadline
        let sequence: Int
        let peer: KademliaPeer
        let node: Int?
        let answers: Bool
    }

    func run(
        from initiator: Int, target: KademliaKey, configuration: LookupConfiguration = .init(),
        using generator: inout SeededGenerator
    ) -> Run? {
        let local = network.nodes[initiator]
        let seeds = network.tables[initiator].closestPeers(to: target, count: configuration.resultCount).map(\.peer)
        var lookup = ClosestPeersLookup(target: target, seeds: seeds, localKey: local.key, configuration: configuration)
        let slots = configuration.parallelism * configuration.disjointPaths
        let trackingBound = configuration.maximumTrackedPeers * configuration.disjointPaths
        let nearJunk = behaviour.contains(.junk) ? Self.peers(near: target, count: 16, using: &generator) : []

        var now = KadFixtures.start
        var events: [Event] = []
        var sequence = 0
        var openUntil: [KademliaKey: NIODeadline] = [:]
        var asked: [Int?] = []
        var askedKeys = Set<KademliaKey>()
        var maximumInFlight = 0
        var maximumTracked = lookup.trackedPeerCount
        var named = Set(seeds.compactMap { network.indexByKey[$0.key] })
        var answered = Set<Int>()

        while true {
            // Send everything the lookup asks for.
            while true {
                let action = lookup.next(now: now)
                maximumTracked = max(maximumTracked, lookup.trackedPeerCount)
                switch action {
                case .finished(let result):
                    #expect(lookup.trackedPeerCount <= trackingBound)
                    return Run(
                        result: result, asked: asked, maximumInFlight: maximumInFlight, maximumTracked: maximumTracked,
                        named: named, answered: answered)
                case .waiting:
                    break
                case .query(let peer):
                    #expect(peer.key != local.key, "asked itself")
                    #expect(askedKeys.insert(peer.key).inserted, "asked \(peer) twice")
                    let node = network.indexByKey[peer.key]
                    asked.append(node)
                    openUntil[peer.key] = now + configuration.requestTimeout
                    let inFlight = openUntil.values.filter { $0 > now }.count
                    #expect(inFlight <= slots, "\(inFlight) requests in flight, α × d = \(slots)")
                    maximumInFlight = max(maximumInFlight, inFlight)
                    let behaviour = node.map { self.behaviour[$0] } ?? madeUpPeers
                    let delay: TimeAmount?
                    let answers: Bool
                    switch behaviour {
                    case .honest: (delay, answers) = (.milliseconds(Int64.random(in: 5...80, using: &generator)), true)
                    case .junk: (delay, answers) = (.milliseconds(1), true)
                    case .late(let after): (delay, answers) = (after, true)
                    case .failing: (delay, answers) = (.milliseconds(1), false)
                    case .silent: (delay, answers) = (nil, false)
                    }
                    if let delay {
                        events.append(
                            Event(time: now + delay, sequence: sequence, peer: peer, node: node, answers: answers))
                        sequence += 1
                    }
                    continue
                }
                break
            }
            // Advance the clock to the next answer or timeout.
            let nextEvent = events.min { ($0.time, $0.sequence) < ($1.time, $1.sequence) }
            guard let wake = [nextEvent?.time, lookup.nextTimeout].compactMap({ $0 }).min() else {
                Issue.record("the lookup waits with nothing in flight")
                return nil
            }
            now = max(now, wake)
            let due = events.filter { $0.time <= now }.sorted { ($0.time, $0.sequence) < ($1.time, $1.sequence) }
            events.removeAll { $0.time <= now }
            for event in due {
                openUntil[event.peer.key] = nil
                guard event.answers, let node = event.node else {
                    lookup.failed(event.peer.id, now: now)
                    continue
                }
                let closer: [KademliaPeer]
                if behaviour[node] == .junk {
                    let honest = network.tables[node].closestPeers(to: target, count: 2).map(\.peer)
                    let start = Int.random(in: 0..<(junkPool.count / 2), using: &generator)
                    closer =
                        [local, network.nodes[node]] + honest + nearJunk
                        + junkPool[start..<(start + junkPool.count / 2)]
                } else {
                    closer = network.tables[node].closestPeers(to: target, count: 20).map(\.peer)
                }
                if lookup.received(
                    from: event.peer.id, closerPeers: closer, foundValue: valueHolders.contains(node), now: now)
                {
                    answered.insert(node)
                    named.formUnion(
                        closer.prefix(configuration.maximumCloserPeersPerResponse).compactMap {
                            network.indexByKey[$0.key]
                        })
                    named.remove(initiator)
                }
                maximumTracked = max(maximumTracked, lookup.trackedPeerCount)
            }
        }
    }

    /// Made-up peers whose keys share at least 10 leading bits with `target`: closer than all but a
    /// node or two of a 1000-node network, so a lookup is drawn to them.
    static func peers(near target: KademliaKey, count: Int, using generator: inout SeededGenerator) -> [KademliaPeer] {
        var result: [KademliaPeer] = []
        while result.count < count {
            let peer = KadFixtures.peer(using: &generator)
            if peer.key.commonPrefixLength(with: target) >= 10 { result.append(peer) }
        }
        return result
    }
}
