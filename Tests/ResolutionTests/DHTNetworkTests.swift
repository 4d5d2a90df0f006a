import AgentTesting
import Foundation
import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

@Suite("DHT over real TCP: 100 nodes in one process", .serialized)
struct DHTNetworkTests {
    struct Sample: Sendable {
        let ok: Bool
        let milliseconds: Double
        let hops: Int
        let requests: Int
        let error: String?
    }

    /// Every node resolves `perNode` random names of `candidates`; returns one sample per resolve.
    static func resolveRound(
        _ network: DHTLoopbackNetwork, names: [Int: AgentName], keys: [Int: Ed25519.PublicKey], candidates: [Int],
        perNode: Int, expectedSeq: [Int: UInt64] = [:], using generator: inout SeededGenerator
    ) async -> [Sample] {
        let samples = NIOLockedValueBox<[Sample]>([])
        let jobs = network.live.flatMap { resolver in
            (0..<perNode).map { _ in (resolver, candidates.randomElement(using: &generator)!) }
        }
        await concurrently(jobs, width: 16) { job in
            let (resolver, target) = job
            let name = names[target]!
            let started = NIODeadline.now()
            do {
                let resolution = try await network.nodes[resolver].dht.resolve(name, useCache: false)
                let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e6
                var ok = resolution.record.record.publicKey == keys[target]!
                var error: String? = ok ? nil : "\(name) resolved to the wrong key"
                if let seq = expectedSeq[target], resolution.record.record.seq != seq {
                    ok = false
                    error = "\(name) resolved to seq \(resolution.record.record.seq), expected \(seq)"
                }
                samples.withLockedValue {
                    $0.append(Sample(ok: ok, milliseconds: elapsed, hops: resolution.lookup?.hops ?? 0, requests: resolution.lookup?.requests ?? 0, error: error))
                }
            } catch {
                let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e6
                samples.withLockedValue { $0.append(Sample(ok: false, milliseconds: elapsed, hops: 0, requests: 0, error: "\(name) from node \(resolver): \(error)")) }
            }
        }
        return samples.withLockedValue { $0 }
    }

    static func summary(_ label: String, _ samples: [Sample]) -> String {
        let latencies = samples.filter(\.ok).map(\.milliseconds)
        let hops = samples.filter(\.ok).map { Double($0.hops) }
        let requests = samples.filter(\.ok).map { Double($0.requests) }
        let resolved = samples.filter(\.ok).count
        return String(
            format: "%@: %d/%d resolved (%.2f%%); latency p50 %.1f ms p90 %.1f ms p99 %.1f ms; hops mean %.2f max %.0f; requests mean %.1f",
            label, resolved, samples.count, 100 * Double(resolved) / Double(max(samples.count, 1)),
            percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 99),
            hops.reduce(0, +) / Double(max(hops.count, 1)), hops.max() ?? 0,
            requests.reduce(0, +) / Double(max(requests.count, 1)))
    }

    @Test("100 nodes: all names resolve; 30% killed, >= 99% still resolve; an update is seen at once")
    func hundredNodes() async throws {
        // Seeded: the same identities (so the same closest peers), bootstrap choices, resolves,
        // victims and mover on every run; AGENTD_TEST_SEED=N replays another network.
        let seed = ProcessInfo.processInfo.environment["AGENTD_TEST_SEED"].flatMap { UInt64($0) } ?? 0x6468_742d_3130_30
        print("100-node DHT network: seed \(seed)")
        var generator = SeededGenerator(seed: seed ^ 0x5eed)
        let network = DHTLoopbackNetwork()
        let started = NIODeadline.now()
        try await network.build(count: 100, seed: seed)
        let built = NIODeadline.now()

        // Each node registers a name.
        var names: [Int: AgentName] = [:]
        var keys: [Int: Ed25519.PublicKey] = [:]
        for index in network.nodes.indices {
            names[index] = try AgentName("node-\(index).agent")
            keys[index] = network.nodes[index].host.identity.publicKey
        }
        let publishFailures = NIOLockedValueBox<[String]>([])
        let replicas = NIOLockedValueBox<[Int]>([])
        let shortfalls = NIOLockedValueBox<[String]>([])
        let namesCopy = names
        await concurrently(Array(network.nodes.indices), width: 8) { index in
            do {
                let report = try await network.nodes[index].dht.register(namesCopy[index]!)
                replicas.withLockedValue { $0.append(report.storedAt.count) }
                if report.storedAt.count != 5 {
                    shortfalls.withLockedValue {
                        $0.append("node \(index): \(report.storedAt.count) replicas; failures \(report.failures.map { "\($0.0): \($0.1)" })")
                    }
                }
            } catch {
                publishFailures.withLockedValue { $0.append("node \(index): \(error)") }
            }
        }
        #expect(publishFailures.withLockedValue { $0 }.isEmpty, "\(publishFailures.withLockedValue { $0 })")
        let stored = replicas.withLockedValue { $0 }
        #expect(stored.allSatisfy { $0 == 5 }, "replicas per publish: \(stored.sorted()); \(shortfalls.withLockedValue { $0 })")

        // Every node resolves 20 random names: all must resolve to the right key.
        let round1 = await Self.resolveRound(network, names: names, keys: keys, candidates: Array(network.nodes.indices), perNode: 20, using: &generator)
        print(Self.summary("100 nodes, 2000 resolves", round1))
        let failures1 = round1.filter { !$0.ok }
        #expect(failures1.isEmpty, "\(failures1.prefix(5).compactMap(\.error))")

        // Stop 30 random nodes at once, without warning the others.
        let victims = Array(network.nodes.indices.shuffled(using: &generator).prefix(30))
        for victim in victims { await network.stop(victim) }
        let survivors = network.live
        let round2 = await Self.resolveRound(network, names: names, keys: keys, candidates: survivors, perNode: 20, using: &generator)
        print(Self.summary("after killing 30 nodes, 1400 resolves of the survivors' names", round2))
        let rate = Double(round2.filter(\.ok).count) / Double(round2.count)
        #expect(rate >= 0.99, "only \(rate * 100)% resolved: \(round2.filter { !$0.ok }.prefix(5).compactMap(\.error))")

        // A survivor publishes a new record (new address, higher seq): every resolver sees it in
        // its next lookup.
        let mover = survivors.randomElement(using: &generator)!
        let newAddress = try Multiaddr("/ip4/127.0.0.1/tcp/65000")
        let report = try await network.nodes[mover].dht.register(names[mover]!, addresses: [newAddress])
        #expect(!report.storedAt.isEmpty)
        let newSeq = report.record.record.seq
        let round3 = await Self.resolveRound(
            network, names: names, keys: keys, candidates: [mover], perNode: 1, expectedSeq: [mover: newSeq], using: &generator)
        print(Self.summary("update seen by every survivor", round3))
        #expect(round3.allSatisfy { $0.ok }, "\(round3.filter { !$0.ok }.prefix(5).compactMap(\.error))")

        print(
            "100-node network built in \(Double((built - started).nanoseconds) / 1e9) s; total \(Double((NIODeadline.now() - started).nanoseconds) / 1e9) s"
        )
        try await network.shutdown()
    }
}
