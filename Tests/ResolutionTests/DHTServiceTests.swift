import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ResolutionTesting
import ServiceLifecycle
import Testing

@testable import Network
@testable import Resolution

/// The DHT's service (`DHT.run()`, a swift-service-lifecycle `Service`, issue #14 item 2): it
/// runs the periodic jobs, ends on a graceful shutdown, on cancellation and with the host, runs
/// once, and work that reaches it after it ended is settled, not left pending.
@Suite("DHT: the service's life cycle")
struct DHTServiceTests {
    static func makeDHT(
        _ group: MultiThreadedEventLoopGroup, maintenanceInterval: TimeAmount = .seconds(60)
    ) throws -> (Network.Host, DHT) {
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let host = Network.Host(identity: Ed25519.PrivateKey(), group: group, logger: logger)
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.maintenanceInterval = maintenanceInterval
        return (host, DHT(host: host, store: try RecordStore(path: nil), configuration: configuration, logger: logger))
    }

    /// Waits for `task` to end, at most `seconds` (a service that does not end fails the test
    /// instead of hanging it).
    static func ends(_ task: Task<Void, Never>, within seconds: Int64 = 30) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await task.value
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    @Test("run() under a ServiceGroup: jobs run while it runs; a graceful shutdown ends it and stops them")
    func gracefulShutdown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (host, dht) = try Self.makeDHT(group, maintenanceInterval: .milliseconds(20))
        var logger = Logger(label: "service-group")
        logger.logLevel = .critical
        let serviceGroup = ServiceGroup(services: [dht], gracefulShutdownSignals: [], logger: logger)
        let running = Task { _ = try? await serviceGroup.run() }

        // Upkeep rounds run and end in the service: the next one is scheduled after each.
        let first = try await #require(Self.upkeepDeadline(dht, after: nil))
        let later = try await #require(Self.upkeepDeadline(dht, after: first))
        #expect(later > first)
        #expect(dht.state.withLockedValue { $0.behaviour.jobs.maintenanceEnabled })

        await serviceGroup.triggerGracefulShutdown()
        #expect(await Self.ends(running), "the DHT service did not end on a graceful shutdown")
        #expect(!dht.state.withLockedValue { $0.behaviour.jobs.maintenanceEnabled }, "the jobs still run")
        await host.shutdown()
        try await group.shutdownGracefully()
    }

    /// The scheduled upkeep deadline once it differs from `previous` (polled: the service's own
    /// timer moves it).
    static func upkeepDeadline(_ dht: DHT, after previous: NIODeadline?) async throws -> NIODeadline? {
        for _ in 0..<3000 {
            let next = dht.state.withLockedValue { state -> NIODeadline? in
                state.behaviour.jobs.upkeepRunning ? nil : state.behaviour.jobs.nextUpkeep
            }
            if let next, next != previous { return next }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    @Test("cancelling its task ends the service; it runs once")
    func cancellation() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (host, dht) = try Self.makeDHT(group)
        let started = NIOLockedValueBox(false)
        let running = Task {
            started.withLockedValue { $0 = true }
            _ = try? await dht.run()
        }
        while !started.withLockedValue({ $0 }) || !dht.serviceInputs.withLockedValue({ $0.running }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        // A second service for the same DHT is refused.
        await #expect(throws: DHTServiceError.self) { try await dht.run() }
        running.cancel()
        #expect(await Self.ends(running), "the DHT service did not end when cancelled")
        await #expect(throws: DHTServiceError.self) { try await dht.run() }
        await host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("the service ends with the host; work that reaches it afterwards is settled")
    func endsWithHost() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (host, dht) = try Self.makeDHT(group)
        let running = Task { _ = try? await dht.run(maintenance: false) }
        while !dht.serviceInputs.withLockedValue({ $0.running }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        await host.shutdown()
        #expect(await Self.ends(running), "the DHT service outlived its host")

        // A dial-back asked for now never runs: its slot is freed at once, as for a full queue.
        let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let key = KademliaKey(peer: peer)
        dht.state.withLockedValue { _ = $0.behaviour.dialBacks.insert(key) }
        dht.enqueue(.dialBack(KademliaPeer(id: peer), .answeredRequest, candidates: []))
        #expect(!dht.state.withLockedValue { $0.behaviour.dialBacks.contains(key) }, "a dial-back slot is held for ever")
        #expect(dht.state.withLockedValue { $0.droppedServiceWork } == 0, "work after the end counted as a full queue")
        try await group.shutdownGracefully()
    }
}
