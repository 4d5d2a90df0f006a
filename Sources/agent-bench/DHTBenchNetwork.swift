import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Network
import Resolution
import ResolutionTesting

/// Many DHT nodes in this process, each a real `Host` on 127.0.0.1 (TCP, Noise, yamux) with an
/// in-memory record store and a `DHT` in server mode: the many-node tests' network
/// (`DHTLoopbackNetwork`, Sources/ResolutionTesting; same settings, same joins), with what the
/// benchmark measures of it.
struct DHTBenchNetwork: Sendable {
    typealias Node = DHTLoopbackNetwork.Node

    /// One lookup or resolve of a benchmark.
    struct Sample: Sendable {
        var seconds: Double
        /// Requests the lookup sent (`LookupStatistics.requests`); 0 when a resolve failed.
        var requests: Int
        var hops: Int
        var succeeded: Bool
        /// Connections the source host opened meanwhile (new dials).
        var newConnections: Int
    }

    let network: DHTLoopbackNetwork
    let nodes: [Node]
    /// From creating the first host to the end of the refresh round.
    let setupSeconds: Double
    /// Process RSS right before the first host was created and after the refresh round.
    let residentBefore: Int?
    let residentAfter: Int?

    /// The nodes' DHT settings (server mode, 2 s request timeout).
    static var dhtConfiguration: DHTConfiguration { DHTLoopbackNetwork.configuration() }

    /// Starts `count` nodes on a new group of `threads` event loops and bootstraps them (identities
    /// and bootstrap choices seeded from `random`). On failure everything started is shut down again.
    static func build<Random: RandomNumberGenerator>(
        count: Int, threads: Int, random: inout Random, logger: Logger
    ) async throws -> DHTBenchNetwork {
        let network = DHTLoopbackNetwork(threads: threads, logger: logger)
        ProcessMemory.returnFreeMemory()
        let residentBefore = ProcessMemory.residentBytes()
        let clock = ContinuousClock()
        let start = clock.now
        do {
            try await network.build(count: count, seed: random.next())
        } catch {
            try? await network.shutdown()
            throw error
        }
        return DHTBenchNetwork(
            network: network, nodes: network.nodes, setupSeconds: (clock.now - start).seconds,
            residentBefore: residentBefore, residentAfter: ProcessMemory.residentBytes())
    }

    /// Stops every host, then the event loop group.
    func shutdown() async {
        do {
            try await network.shutdown()
        } catch {
            FileHandle.standardError.write(Data("agent-bench: dht: the event loop group did not shut down: \(error)\n".utf8))
        }
    }

    // MARK: Figures

    /// The name node `index` registers.
    static func name(of index: Int) throws -> AgentName { try AgentName("node-\(index).agent") }

    /// Every node registers its name, 8 at a time. Returns the failures (empty when all worked)
    /// and the replica counts of the publishes that worked.
    func registerNames() async -> (failures: [String], replicas: [Int]) {
        let outcomes = await concurrently(Array(nodes.indices), width: 8) { index -> Result<Int, Error> in
            do {
                return .success(try await nodes[index].dht.register(try Self.name(of: index)).storedAt.count)
            } catch {
                return .failure(error)
            }
        }
        var failures: [String] = []
        var replicas: [Int] = []
        for (index, outcome) in outcomes {
            switch outcome {
            case .success(let count): replicas.append(count)
            case .failure(let error): failures.append("node \(index): \(error)")
            }
        }
        return (failures, replicas)
    }

    /// `count` closest-peer lookups one after another, each from a random node for the peer id of
    /// another (py-libp2p's `bench` does the same): succeeded when the result holds the target.
    func closestPeerLookups<Random: RandomNumberGenerator>(count: Int, random: inout Random) async -> [Sample] {
        var samples: [Sample] = []
        for _ in 0..<count {
            let (source, target) = randomPair(using: &random)
            let targetPeer = nodes[target].host.peerID
            let sample = await measured(from: source) {
                let result = await nodes[source].dht.lookupClosestPeers(to: targetPeer.multihash.bytes)
                return (
                    result.statistics.requests, result.statistics.hops, result.closest.contains { $0.id == targetPeer }
                )
            }
            samples.append(sample)
        }
        return samples
    }

    /// `count` resolves without the cache, one after another, each from a random node for the name
    /// of another: succeeded when the record carries the owner's key.
    func resolves<Random: RandomNumberGenerator>(count: Int, random: inout Random) async -> [Sample] {
        var samples: [Sample] = []
        for _ in 0..<count {
            let (source, target) = randomPair(using: &random)
            let owner = nodes[target].host.identity.publicKey
            let sample = await measured(from: source) {
                do {
                    let resolution = try await nodes[source].dht.resolve(try Self.name(of: target), useCache: false)
                    return (
                        resolution.lookup?.requests ?? 0, resolution.lookup?.hops ?? 0,
                        resolution.record.record.publicKey == owner
                    )
                } catch {
                    return (0, 0, false)
                }
            }
            samples.append(sample)
        }
        return samples
    }

    /// Times `body`, and counts the connections node `source` gained meanwhile (read outside the
    /// timed part).
    private func measured(from source: Int, _ body: () async -> (requests: Int, hops: Int, succeeded: Bool)) async
        -> Sample
    {
        let connectionsBefore = await nodes[source].host.connections().count
        let clock = ContinuousClock()
        let start = clock.now
        let outcome = await body()
        let seconds = (clock.now - start).seconds
        let connectionsAfter = await nodes[source].host.connections().count
        return Sample(
            seconds: seconds, requests: outcome.requests, hops: outcome.hops, succeeded: outcome.succeeded,
            newConnections: max(0, connectionsAfter - connectionsBefore))
    }

    private func randomPair<Random: RandomNumberGenerator>(using random: inout Random) -> (Int, Int) {
        let source = Int.random(in: nodes.indices, using: &random)
        let other = Int.random(in: 0..<(nodes.count - 1), using: &random)
        return (source, other >= source ? other + 1 : other)
    }

    /// Established connections of all hosts together; each TCP connection counts at both ends.
    func connectionCount() async -> Int {
        var total = 0
        for node in nodes { total += await node.host.connections().count }
        return total
    }

    /// Routing-table sizes over the nodes.
    func routingTableSizes() -> RoutingTableSizes {
        let sizes = nodes.map { $0.dht.routingTableEntries.count }
        return RoutingTableSizes(
            minimum: sizes.min() ?? 0, mean: Double(sizes.reduce(0, +)) / Double(max(sizes.count, 1)),
            maximum: sizes.max() ?? 0)
    }

    /// Where one kad request's time and CPU go, between node 0 and peers it is connected to: ping
    /// round trips on one open stream (the floor), opening and negotiating a kad stream, FIND_NODE
    /// requests as lookups send them (`DHT.request`), the same exchange done bare on a new stream
    /// (no timeout tasks), requests on one reused stream (no stream set-up), and α = 3 requests at
    /// once to three peers as a lookup keeps them in flight. `count` of each, after 10 unmeasured.
    func requestBreakdown(count: Int) async throws -> RequestBreakdown {
        let node = nodes[0]
        let peers = Array(await node.host.connections().map(\.remotePeer).prefix(3))
        guard peers.count == 3, let connection = node.host.connection(to: peers[0]) else {
            throw BenchmarkError("node 0 has fewer than 3 connections to measure kad requests on")
        }
        let host = node.host
        let dht = node.dht
        let protocolID = dht.configuration.protocolID
        let clock = ContinuousClock()
        func findNode() -> ByteBuffer {
            ByteBuffer(bytes: KadMessage(type: .findNode, key: Sodium.randomBytes(32)).serialized())
        }
        @Sendable func request(to peer: PeerID) async throws {
            _ = try await dht.request(
                KadMessage(type: .findNode, key: Sodium.randomBytes(32)), to: KademliaPeer(id: peer))
        }
        func exchange(on stream: MuxedStream) async throws {
            try await stream.writeLengthPrefixed(findNode())
            guard let reply = try await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize) else {
                throw BenchmarkError("\(stream.remotePeer) closed the kad stream without answering")
            }
            _ = try KadMessage(serialized: reply.readableBytesView)
        }
        func cost(_ label: String, _ body: () async throws -> Void) async throws -> RequestCost {
            for _ in 0..<10 { try await body() }
            var times: [Double] = []
            let before = ProcessCounters.now()
            for _ in 0..<count {
                let start = clock.now
                try await body()
                times.append((clock.now - start).seconds)
            }
            return RequestCost(
                label: label, medianSeconds: median(times),
                ProcessCounters.now().perOperation(since: before, operations: count))
        }

        // Pings: one stream, `count` round trips; the counters cover the stream's set-up too.
        _ = try await Ping.ping(host, peer: peers[0], count: 10)
        let pingBefore = ProcessCounters.now()
        let pings = try await Ping.ping(host, peer: peers[0], count: count).map(\.seconds)
        var rows = [
            RequestCost(
                label: "ping on an open stream (1 round trip)", medianSeconds: median(pings),
                ProcessCounters.now().perOperation(since: pingBefore, operations: count))
        ]
        rows.append(
            try await cost("open a stream + negotiate kad (then reset)") {
                try await host.newStream(on: connection, protocols: [protocolID]).reset()
            })
        rows.append(try await cost("FIND_NODE as lookups send it (DHT.request)") { try await request(to: peers[0]) })
        rows.append(
            try await cost("FIND_NODE bare: new stream, write, read, close") {
                let stream = try await host.newStream(on: connection, protocols: [protocolID])
                try await exchange(on: stream)
                try await stream.closeWrite()
            })
        let reused = try await host.newStream(on: connection, protocols: [protocolID])
        rows.append(try await cost("FIND_NODE on one reused stream") { try await exchange(on: reused) })
        try? await reused.closeWrite()
        rows.append(
            try await cost("3 × DHT.request at once to 3 peers (α = 3)") {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for peer in peers { group.addTask { try await request(to: peer) } }
                    try await group.waitForAll()
                }
            })
        return RequestBreakdown(samples: count, rows: rows)
    }
}
