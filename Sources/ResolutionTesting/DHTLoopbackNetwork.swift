import AgentTesting
import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Network
import Resolution

/// Many DHT nodes in one process, each a real `Host` on 127.0.0.1 (TCP, Noise, yamux) with its own
/// record store and a `DHT` in server mode: the one network builder of the many-node tests
/// (Tests/ResolutionTests) and of `agent-bench dht` (issue #14, item 8), so a figure and a test
/// describe the same network. agent-sim builds virtual networks instead (simulations/).
///
/// `build(count:seed:)` grows the network as nodes join: node i bootstraps from node 0 and one
/// random earlier node, then every node looks itself up once more, 8 at a time, so the tables
/// fill. With a seed, the identities and the bootstrap choices are reproducible (the same peer ids,
/// so the same closest peers, on every run).
///
/// The nodes live behind a lock: tasks of a test or a benchmark read them while another restarts
/// one. The network owns its event loop group; `shutdown()` stops every running host and the group.
public final class DHTLoopbackNetwork: Sendable {
    public struct Node: Sendable {
        public let host: Network.Host
        public let dht: DHT
        /// The listen address with `/p2p/<peer id>`.
        public let address: Multiaddr
        public var peerID: PeerID { host.peerID }

        public init(host: Network.Host, dht: DHT, address: Multiaddr) {
            self.host = host
            self.dht = dht
            self.address = address
        }
    }

    private struct State {
        var nodes: [Node] = []
        var stopped: Set<Int> = []
    }

    public let group: MultiThreadedEventLoopGroup
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    /// A network on a new group of `threads` event loops. `logger` is every host's and DHT's
    /// (default: critical only, as tests want). Each node's DHT service runs as a task of its
    /// host, its periodic jobs off until `DHT.setMaintenance(true)`.
    public init(threads: Int = 2, logger: Logger? = nil) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.logger =
            logger
            ?? {
                var quiet = Logger(label: "dht-loopback-network")
                quiet.logLevel = .critical
                return quiet
            }()
    }

    /// Every node, stopped ones included (at their index).
    public var nodes: [Node] { state.withLockedValue { $0.nodes } }

    /// The running nodes' indices.
    public var live: [Int] {
        state.withLockedValue { state in state.nodes.indices.filter { !state.stopped.contains($0) } }
    }

    /// The DHT settings of the network's nodes: server mode, requests answered within 2 s (5 s hard).
    public static func configuration() -> DHTConfiguration {
        var configuration = DHTConfiguration()
        configuration.mode = .server
        configuration.requestTimeout = .seconds(2)
        configuration.requestHardTimeout = .seconds(5)
        return configuration
    }

    /// The host settings of the network's nodes: every node is on 127.0.0.1, one address for the
    /// per-IP limits; dials give up after 3 s.
    public static func hostConfiguration() -> Network.Host.Configuration {
        var configuration = Network.Host.Configuration()
        configuration.dialTimeout = .seconds(3)
        configuration.limits = .loopbackTestNetwork
        return configuration
    }

    /// Adds a started node (its DHT running, not bootstrapped). `store` defaults to a new
    /// in-memory `RecordStore`; `dhtLogger` overrides the network's logger for this node's DHT.
    @discardableResult
    public func addNode(
        configuration: DHTConfiguration = DHTLoopbackNetwork.configuration(), listen: String = "/ip4/127.0.0.1/tcp/0",
        unixClock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) },
        store: (any RecordStoring)? = nil, dhtLogger: Logger? = nil,
        identity: Ed25519.PrivateKey = Ed25519.PrivateKey()
    ) async throws -> Node {
        let host = Network.Host(
            identity: identity, group: group, configuration: Self.hostConfiguration(), logger: logger)
        do {
            let bound = try await host.listen(on: try Multiaddr(listen))
            let dht = DHT(
                host: host, store: try store ?? RecordStore(path: nil), configuration: configuration,
                logger: dhtLogger ?? logger, unixClock: unixClock)
            dht.start()
            host.spawn("dht service") { try? await dht.run(maintenance: false) }
            let node = Node(host: host, dht: dht, address: bound.appending(.p2p(host.peerID.multihash)))
            state.withLockedValue { $0.nodes.append(node) }
            return node
        } catch {
            await host.shutdown()
            throw error
        }
    }

    /// Starts `count` nodes; each bootstraps from node 0 and one random earlier node, then every
    /// node looks itself up once more. With `seed`, keys and choices come from a seeded generator.
    public func build(
        count: Int, seed: UInt64? = nil, configuration: DHTConfiguration = DHTLoopbackNetwork.configuration()
    ) async throws {
        var generator = seed.map { SeededGenerator(seed: $0) }
        for index in 0..<count {
            let node: Node
            if var seeded = generator {
                node = try await addNode(
                    configuration: configuration, identity: try Ed25519.PrivateKey(seed: seeded.bytes(32)))
                generator = seeded
            } else {
                node = try await addNode(configuration: configuration)
            }
            guard index > 0 else { continue }
            let nodes = self.nodes
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
        // A second self-lookup now that the network is complete.
        let nodes = self.nodes
        _ = await concurrently(Array(nodes.indices), width: 8) { index in
            _ = await nodes[index].dht.lookupClosestPeers(to: nodes[index].peerID.multihash.bytes)
        }
    }

    /// Stops node `index` abruptly, like a killed process: sockets close without GoAway, and
    /// others find it gone when they next use it.
    public func stop(_ index: Int) async {
        let node = state.withLockedValue { state in
            state.stopped.insert(index)
            return state.nodes[index]
        }
        await node.host.abort()
    }

    /// Restarts node `index` as a process restart would: the old host dies abruptly (unless it is
    /// stopped already), a new one with the same key and record store comes up on a new port (or
    /// on its old one with `samePort`, as agentd with a fixed `--listen`), joins through node 0,
    /// and takes the node's place (its DHT is started; nothing is published yet).
    @discardableResult
    public func restart(_ index: Int, samePort: Bool = false) async throws -> Node {
        let (old, wasStopped) = state.withLockedValue { ($0.nodes[index], $0.stopped.contains(index)) }
        if !wasStopped { await stop(index) }
        let host = Network.Host(
            identity: old.host.identity, group: group, configuration: Self.hostConfiguration(), logger: logger)
        let listen =
            samePort
            ? Multiaddr(old.address.components.filter { $0.protocol != .p2p }) : try Multiaddr("/ip4/127.0.0.1/tcp/0")
        let bound: Multiaddr
        do {
            bound = try await host.listen(on: listen)
        } catch {
            await host.shutdown()
            throw error
        }
        let dht = DHT(host: host, store: old.dht.store, configuration: Self.configuration(), logger: logger)
        dht.start()
        host.spawn("dht service") { try? await dht.run(maintenance: false) }
        if index != 0 { await dht.bootstrap([nodes[0].address]) }
        let node = Node(host: host, dht: dht, address: bound.appending(.p2p(host.peerID.multihash)))
        state.withLockedValue { state in
            state.nodes[index] = node
            state.stopped.remove(index)
        }
        return node
    }

    /// Stops every running host, then the event loop group.
    public func shutdown() async throws {
        let nodes = self.nodes
        for index in live { await nodes[index].host.shutdown() }
        try await group.shutdownGracefully()
    }
}

/// Runs `body` for each of `items` with at most `width` running at once; returns each item with
/// its result, in order of completion.
@discardableResult
public func concurrently<Item: Sendable, Result: Sendable>(
    _ items: [Item], width: Int, _ body: @escaping @Sendable (Item) async -> Result
) async -> [(Item, Result)] {
    await withTaskGroup(of: (Item, Result).self) { group in
        var iterator = items.makeIterator()
        for _ in 0..<width {
            guard let item = iterator.next() else { break }
            group.addTask { (item, await body(item)) }
        }
        var results: [(Item, Result)] = []
        while let result = await group.next() {
            results.append(result)
            if let item = iterator.next() { group.addTask { (item, await body(item)) } }
        }
        return results
    }
}
