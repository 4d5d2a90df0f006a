import AgentTesting
import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix

@testable import Network
@testable import Resolution

/// Many DHT nodes in one process, each a real `Host` on 127.0.0.1 (TCP, Noise, yamux), with an
/// in-memory record store. Used by the network-scale and adversarial DHT tests.
final class DHTTestNetwork: @unchecked Sendable {
    struct Node: @unchecked Sendable {
        let host: Network.Host
        let dht: DHT
        let address: Multiaddr
        var peerID: PeerID { host.peerID }
    }

    let group: MultiThreadedEventLoopGroup
    private(set) var nodes: [Node] = []
    private(set) var stopped: Set<Int> = []

    init(threads: Int = 2) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    static func configuration() -> DHTConfiguration {
        var configuration = DHTConfiguration()
        configuration.mode = .server
        configuration.requestTimeout = .seconds(2)
        configuration.requestHardTimeout = .seconds(5)
        return configuration
    }

    /// Adds a node; `configure` may adjust its DHT settings, `makeDHT` replace the DHT (adversaries).
    @discardableResult
    func addNode(
        configuration: DHTConfiguration = DHTTestNetwork.configuration(), listen: String = "/ip4/127.0.0.1/tcp/0",
        unixClock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) },
        store: (any RecordStoring)? = nil, dhtLogger: Logger? = nil,
        identity: Ed25519.PrivateKey = Ed25519.PrivateKey()
    ) async throws -> Node {
        var hostConfiguration = Network.Host.Configuration()
        hostConfiguration.dialTimeout = .seconds(3)
        // Every node is on 127.0.0.1: one address for the per-IP limits.
        hostConfiguration.limits = .loopbackTestNetwork
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let host = Network.Host(identity: identity, group: group, configuration: hostConfiguration, logger: logger)
        let bound = try await host.listen(on: try Multiaddr(listen))
        let dht = DHT(
            host: host, store: try store ?? RecordStore(path: nil), configuration: configuration,
            logger: dhtLogger ?? logger, unixClock: unixClock)
        dht.start()
        let node = Node(host: host, dht: dht, address: bound.appending(.p2p(host.peerID.multihash)))
        nodes.append(node)
        return node
    }

    /// Starts `count` nodes; each bootstraps from node 0 and one random earlier node, then every
    /// node refreshes once so the tables fill. With `seed`, the keys and the bootstrap choices come
    /// from a seeded generator (the same peer ids, so the same closest peers, on every run).
    func build(count: Int, seed: UInt64? = nil) async throws {
        var generator = seed.map { SeededGenerator(seed: $0) }
        for index in 0..<count {
            let node: Node
            if var seeded = generator {
                node = try await addNode(identity: try Ed25519.PrivateKey(seed: seeded.bytes(32)))
                generator = seeded
            } else {
                node = try await addNode()
            }
            if index > 0 {
                var seeds = [nodes[0].address]
                if index > 1 {
                    if var seeded = generator {
                        seeds.append(nodes[Int.random(in: 1..<index, using: &seeded)].address)
                        generator = seeded
                    } else {
                        seeds.append(nodes[Int.random(in: 1..<index)].address)
                    }
                }
                await node.dht.bootstrap(seeds)
            }
        }
        // A second self-lookup now that the network is complete.
        await concurrently(Array(nodes.indices), width: 8) { index in
            _ = await self.nodes[index].dht.lookupClosestPeers(to: self.nodes[index].peerID.multihash.bytes)
        }
    }

    /// The running nodes' indices.
    var live: [Int] { nodes.indices.filter { !stopped.contains($0) } }

    /// Stops node `index` abruptly, like a killed process: sockets close without GoAway, and
    /// others find it gone when they next use it.
    func stop(_ index: Int) async {
        stopped.insert(index)
        await nodes[index].host.abort()
    }

    /// Restarts node `index` as a process restart would: the old host dies abruptly (unless it is
    /// stopped already), a new one with the same key and record store comes up on a new port (or
    /// on its old one with `samePort`, as agentd with a fixed `--listen`), joins through node 0,
    /// and takes the node's place (its DHT is started; nothing is published yet).
    @discardableResult
    func restart(_ index: Int, samePort: Bool = false) async throws -> Node {
        let old = nodes[index]
        if !stopped.contains(index) { await stop(index) }
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        var hostConfiguration = Network.Host.Configuration()
        hostConfiguration.limits = .loopbackTestNetwork
        let host = Network.Host(
            identity: old.host.identity, group: group, configuration: hostConfiguration, logger: logger)
        let listen = samePort ? Multiaddr(old.address.components.filter { $0.protocol != .p2p }) : try Multiaddr("/ip4/127.0.0.1/tcp/0")
        let bound = try await host.listen(on: listen)
        let dht = DHT(host: host, store: old.dht.store, configuration: Self.configuration(), logger: logger)
        dht.start()
        if index != 0 { await dht.bootstrap([nodes[0].address]) }
        let node = Node(host: host, dht: dht, address: bound.appending(.p2p(host.peerID.multihash)))
        nodes[index] = node
        stopped.remove(index)
        return node
    }

    func shutdown() async throws {
        for index in live { await nodes[index].host.shutdown() }
        try await group.shutdownGracefully()
    }

    /// Runs `body` for each element with at most `width` running at once.
    func concurrently<T: Sendable>(_ items: [T], width: Int, _ body: @escaping @Sendable (T) async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            var iterator = items.makeIterator()
            for _ in 0..<width {
                guard let item = iterator.next() else { break }
                group.addTask { await body(item) }
            }
            while await group.next() != nil {
                guard let item = iterator.next() else { continue }
                group.addTask { await body(item) }
            }
        }
    }
}

/// Percentiles of a sample, for the printed summaries.
func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}
