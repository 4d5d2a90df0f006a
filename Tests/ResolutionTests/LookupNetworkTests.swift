import AgentTesting
import Foundation
import NIOCore
import Testing

import Resolution

/// Hop, message and time figures over many lookups, printed by the tests.
struct LookupSummary: CustomStringConvertible {
    let label: String
    var hops: [Int] = []
    var requests: [Int] = []
    var milliseconds: [Int64] = []
    var timeouts = 0
    var lateResponses = 0
    var discarded = 0
    var truncated = 0
    var maximumTracked = 0

    init(_ label: String) { self.label = label }

    mutating func add(_ run: LookupDriver.Run) {
        let statistics = run.result.statistics
        hops.append(statistics.hops)
        requests.append(statistics.requests)
        milliseconds.append(statistics.duration.nanoseconds / 1_000_000)
        timeouts += statistics.timeouts
        lateResponses += statistics.lateResponses
        discarded += statistics.discardedPeers
        truncated += statistics.truncatedResponses
        maximumTracked = max(maximumTracked, run.maximumTracked)
    }

    var meanHops: Double { Double(hops.reduce(0, +)) / Double(max(hops.count, 1)) }

    var description: String {
        let histogram = Dictionary(grouping: hops, by: { $0 }).sorted { $0.key < $1.key }.map {
            "\($0.key):\($0.value.count)"
        }
        let sortedRequests = requests.sorted()
        let sortedTimes = milliseconds.sorted()
        func percentile<T>(_ values: [T], _ p: Double) -> T {
            values[min(values.count - 1, Int(Double(values.count) * p))]
        }
        return
            "\(label): \(hops.count) lookups; hops mean \(String(format: "%.2f", meanHops)) [\(histogram.joined(separator: " "))]; "
            + "requests mean \(String(format: "%.1f", Double(requests.reduce(0, +)) / Double(max(requests.count, 1)))) "
            + "p50 \(percentile(sortedRequests, 0.5)) max \(sortedRequests.last ?? 0); "
            + "virtual time p50 \(percentile(sortedTimes, 0.5)) ms p99 \(percentile(sortedTimes, 0.99)) ms; "
            + "timeouts \(timeouts), late answers \(lateResponses), discarded peers \(discarded), truncated responses \(truncated), most peers tracked \(maximumTracked)"
    }
}

@Suite("iterative lookup over a scripted 1000-node network on a virtual clock")
struct LookupNetworkTests {
    let network = FakeNetwork.thousand
    /// log2(N) / log2(k) + 1 for N = 1000, k = 20.
    static let theoreticalHops = log2(1000.0) / log2(20.0) + 1

    /// `count` lookups: random initiators, targets alternately random keys and other nodes' keys.
    func plan(_ count: Int, using generator: inout SeededGenerator) -> [(initiator: Int, target: KademliaKey)] {
        (0..<count).map { index in
            let initiator = Int.random(in: 0..<network.nodes.count, using: &generator)
            if index % 2 == 0 { return (initiator, KademliaKey.random(using: &generator)) }
            var other = initiator
            while other == initiator { other = Int.random(in: 0..<network.nodes.count, using: &generator) }
            return (initiator, network.nodes[other].key)
        }
    }

    func nodes(_ result: LookupResult<KademliaPeer>) -> [Int?] {
        result.closest.map { network.indexByKey[$0.key] }
    }

    @Test("every lookup finds the true 20 closest nodes (brute force), in few hops")
    func findsTheTrueClosest() throws {
        var generator = SeededGenerator(seed: 0x6669_6e64)
        let driver = LookupDriver(network: network)
        var summary = LookupSummary("1000 honest nodes, α = 3, k = 20")
        for (initiator, target) in plan(200, using: &generator) {
            let run = try #require(driver.run(from: initiator, target: target, using: &generator))
            let expected = network.closest(to: target, count: 20) { $0 != initiator }
            #expect(nodes(run.result) == expected, "initiator \(initiator) target \(target)")
            #expect(run.result.termination == .converged)
            #expect(run.maximumInFlight <= 3)
            summary.add(run)
        }
        print("\(summary); theory log2(N)/log2(k)+1 = \(String(format: "%.2f", Self.theoreticalHops))")
        #expect(summary.meanHops <= Self.theoreticalHops + 1)
        #expect(summary.hops.allSatisfy { $0 >= 1 })
    }

    @Test("α is respected and used", arguments: [1, 3, 5])
    func parallelism(alpha: Int) throws {
        var generator = SeededGenerator(seed: 0x616c_7068 &+ UInt64(alpha))
        let driver = LookupDriver(network: network)
        var configuration = LookupConfiguration()
        configuration.parallelism = alpha
        var summary = LookupSummary("α = \(alpha)")
        for (initiator, target) in plan(30, using: &generator) {
            let run = try #require(
                driver.run(from: initiator, target: target, configuration: configuration, using: &generator))
            #expect(run.maximumInFlight == alpha)
            #expect(nodes(run.result) == network.closest(to: target, count: 20) { $0 != initiator })
            summary.add(run)
        }
        print(summary)
    }

    /// Nodes that crashed a moment ago: still in everyone's routing table, so answers keep naming
    /// them. A lookup then converges on the closest nodes that answer among those it hears of; the
    /// live nodes just beyond the dead ones may go unnamed (every answer is "my 20 closest", dead
    /// included), which is why tables evict dead entries. Recall against the global truth is printed.
    @Test(
        "with nodes dead but still in routing tables, lookups converge without skipping any closer peer they heard of",
        arguments: [NodeBehaviour.silent, .failing])
    func deadNodesInTables(dead behaviour: NodeBehaviour) throws {
        var generator = SeededGenerator(seed: 0x6465_6164)
        let fraction = behaviour == .silent ? 20 : 30
        let dead = Set((0..<network.nodes.count).shuffled(using: &generator).prefix(fraction * 10))
        let driver = LookupDriver(network: network) { dead.contains($0) ? behaviour : .honest }
        var summary = LookupSummary("\(fraction)% \(behaviour), tables not yet repaired")
        var found = 0
        var lookups = 0
        for (initiator, target) in plan(60, using: &generator) {
            let run = try #require(driver.run(from: initiator, target: target, using: &generator))
            #expect(
                run.skipped(target: target, network: network, k: 20).isEmpty, "initiator \(initiator) target \(target)")
            let result = nodes(run.result)
            #expect(result.allSatisfy { $0.map { !dead.contains($0) && run.answered.contains($0) } ?? false })
            #expect(run.maximumInFlight <= 3)
            let truth = network.closest(to: target, count: 20) { $0 != initiator && !dead.contains($0) }
            found += truth.filter { result.contains($0) }.count
            lookups += 1
            summary.add(run)
        }
        let recall = Double(found) / Double(20 * lookups)
        print("\(summary); recall of the true 20 closest live nodes \(String(format: "%.3f", recall))")
        #expect(recall >= 0.8)
        if behaviour == .silent { #expect(summary.timeouts > 0) }
    }

    @Test("once tables have dropped the dead nodes, lookups find exactly the closest live nodes")
    func deadNodesEvicted() throws {
        var generator = SeededGenerator(seed: 0x7265_7061)
        let dead = Set((0..<network.nodes.count).shuffled(using: &generator).prefix(300))
        let repaired = network.repaired(removing: dead)
        let driver = LookupDriver(network: repaired) { dead.contains($0) ? .silent : .honest }
        var summary = LookupSummary("30% dead, evicted from live tables")
        for (initiator, target) in plan(60, using: &generator) where !dead.contains(initiator) {
            let run = try #require(driver.run(from: initiator, target: target, using: &generator))
            let expected = network.closest(to: target, count: 20) { $0 != initiator && !dead.contains($0) }
            #expect(nodes(run.result) == expected, "initiator \(initiator) target \(target)")
            summary.add(run)
        }
        print(summary)
    }

    /// One junk scenario: how made-up peers behave when dialled, how many nodes in 1000 lie, and how
    /// many peers the lookup reads from an answer.
    struct JunkCase: Sendable, CustomStringConvertible {
        let madeUpPeers: NodeBehaviour
        let liars: Int
        let peersRead: Int

        var description: String {
            "\(liars / 10)% liars, made-up peers \(madeUpPeers), \(peersRead) peers read per answer"
        }
    }

    @Test(
        "junk answers (the asker, the liar itself, duplicates, made-up peers next to the target, 10,000 random peers) neither mislead nor bloat a lookup",
        arguments: [
            JunkCase(madeUpPeers: .failing, liars: 50, peersRead: 20),
            JunkCase(madeUpPeers: .silent, liars: 50, peersRead: 20),
            JunkCase(madeUpPeers: .failing, liars: 300, peersRead: 20),
            // Reading all 10,000: only the tracking bound holds memory down.
            JunkCase(madeUpPeers: .failing, liars: 50, peersRead: 100_000),
        ])
    func junkAnswers(junk: JunkCase) throws {
        var generator = SeededGenerator(seed: 0x6a75_6e6b)
        let liars = Set((0..<network.nodes.count).shuffled(using: &generator).prefix(junk.liars))
        var driver = LookupDriver(network: network) { liars.contains($0) ? .junk : .honest }
        driver.madeUpPeers = junk.madeUpPeers
        driver.junkPool = (0..<20_000).map { _ in KadFixtures.peer(using: &generator) }
        var configuration = LookupConfiguration()
        configuration.maximumCloserPeersPerResponse = junk.peersRead
        var summary = LookupSummary("\(junk)")
        var madeUpAsked = 0
        var found = 0
        for (initiator, target) in plan(40, using: &generator) {
            let run = try #require(
                driver.run(from: initiator, target: target, configuration: configuration, using: &generator))
            let result = nodes(run.result)
            // The liars do answer, so they may be among the closest; made-up peers never are.
            let truth = network.closest(to: target, count: 20) { $0 != initiator }
            if junk.liars <= 50 { #expect(result == truth, "initiator \(initiator) target \(target)") }
            #expect(!result.contains(nil))
            #expect(run.skipped(target: target, network: network, k: 20).isEmpty)
            #expect(run.maximumTracked <= configuration.maximumTrackedPeers)
            #expect(run.maximumInFlight <= 3)
            madeUpAsked += run.asked.filter { $0 == nil }.count
            found += truth.filter { result.contains($0) }.count
            summary.add(run)
        }
        let recall = Double(found) / Double(20 * 40)
        print("\(summary); made-up peers asked \(madeUpAsked); recall \(String(format: "%.3f", recall))")
        #expect(madeUpAsked > 0)
        #expect(summary.discarded > 0)
        #expect(junk.peersRead > 20 || summary.truncated > 0)
        #expect(recall >= 0.9)
    }

    @Test("answers that come after the timeout are still used, and no closer peer heard of is skipped")
    func lateAnswers() throws {
        var generator = SeededGenerator(seed: 0x6c61_7465)
        let slow = Set((0..<network.nodes.count).shuffled(using: &generator).prefix(150))
        let driver = LookupDriver(network: network) { slow.contains($0) ? .late(.seconds(12)) : .honest }
        var summary = LookupSummary("15% answering after 12 s (timeout 10 s)")
        for (initiator, target) in plan(60, using: &generator) {
            let run = try #require(driver.run(from: initiator, target: target, using: &generator))
            #expect(
                run.skipped(target: target, network: network, k: 20).isEmpty, "initiator \(initiator) target \(target)")
            #expect(nodes(run.result).allSatisfy { $0.map(run.answered.contains) ?? false })
            #expect(run.maximumInFlight <= 3)
            summary.add(run)
        }
        print(summary)
        #expect(summary.lateResponses > 0)
        #expect(summary.timeouts >= summary.lateResponses)
    }

    @Test("three disjoint paths find the true closest, and no node is asked by two paths")
    func disjointPaths() throws {
        var generator = SeededGenerator(seed: 0x6469_736a)
        let driver = LookupDriver(network: network)
        var configuration = LookupConfiguration()
        configuration.disjointPaths = 3
        var summary = LookupSummary("d = 3 disjoint paths")
        for (initiator, target) in plan(40, using: &generator) {
            // The driver records an issue if any peer is asked twice.
            let run = try #require(
                driver.run(from: initiator, target: target, configuration: configuration, using: &generator))
            #expect(nodes(run.result) == network.closest(to: target, count: 20) { $0 != initiator })
            #expect(run.maximumInFlight <= 9)
            summary.add(run)
        }
        print(summary)
    }

    @Test("value lookups stop at the quorum; without one they run to the k closest", arguments: [1, 3])
    func valueLookup(paths: Int) throws {
        var generator = SeededGenerator(seed: 0x7661_6c75 &+ UInt64(paths))
        var summary = LookupSummary("value lookups, quorum 3, d = \(paths)")
        for (initiator, target) in plan(20, using: &generator) {
            var driver = LookupDriver(network: network)
            // The record sits on the 20 nodes closest to its key, as PUT_VALUE leaves it.
            driver.valueHolders = Set(network.closest(to: target, count: 20) { $0 != initiator })
            let quorum = try #require(
                driver.run(
                    from: initiator, target: target, configuration: .valueLookup(quorum: 3, disjointPaths: paths),
                    using: &generator))
            #expect(quorum.result.termination == .quorumReached)
            #expect(quorum.result.peersWithValue.count == 3)
            #expect(
                quorum.result.peersWithValue.allSatisfy { driver.valueHolders.contains(network.indexByKey[$0.key]!) })
            summary.add(quorum)

            var full = LookupConfiguration()
            full.disjointPaths = paths
            let run = try #require(driver.run(from: initiator, target: target, configuration: full, using: &generator))
            #expect(run.result.termination == .converged)
            #expect(Set(run.result.peersWithValue.map { network.indexByKey[$0.key]! }) == driver.valueHolders)
            #expect(quorum.result.statistics.requests <= run.result.statistics.requests)
        }
        print(summary)
    }

    @Test("a lookup is reproducible from its seed")
    func reproducible() throws {
        let driver = LookupDriver(network: network) { $0 % 7 == 0 ? .silent : .honest }
        let target = network.nodes[17].key
        var first = SeededGenerator(seed: 42)
        var second = SeededGenerator(seed: 42)
        let a = try #require(driver.run(from: 3, target: target, using: &first))
        let b = try #require(driver.run(from: 3, target: target, using: &second))
        #expect(a.result == b.result)
        #expect(a.asked == b.asked)
    }
}
