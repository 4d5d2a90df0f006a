import Identity
import Logging
import NIOCore
import NIOPosix
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// The DHT's service queue is bounded: work it cannot take must not leave the behaviour waiting
/// for an outcome that never comes (a dial-back slot held for ever, a job round never over, a
/// timer never armed again).
@Suite("DHT: a full service queue reports what it drops")
struct DHTServiceQueueTests {
    @Test("a dropped dial-back frees its slot, a dropped job round counts as over, a dropped timer is armed again")
    func droppedWorkIsReported() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let host = Network.Host(identity: Ed25519.PrivateKey(), group: group)
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        // Not started: nothing takes work from the queue, which fills.
        let dht = DHT(host: host, store: try RecordStore(path: nil), configuration: DHTLoopbackNetwork.configuration(), logger: logger)
        let filler = NIODeadline.now() + .hours(1)
        var enqueued = 0
        while dht.state.withLockedValue({ $0.droppedServiceWork }) == 0 {
            dht.enqueue(.arm(filler))
            enqueued += 1
            try #require(enqueued <= 100_000, "the queue never filled")
        }
        // The timer the service would have slept until is not armed: the next event arms it again.
        dht.state.withLockedValue { $0.armedDeadline = filler }
        dht.enqueue(.arm(filler))
        #expect(dht.state.withLockedValue { $0.armedDeadline } == nil, "a dropped timer stays armed")

        let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        dht.state.withLockedValue {
            _ = $0.behaviour.dialBacks.insert(KademliaKey(peer: peer))
            $0.behaviour.jobs.replicationRunning = true
        }
        dht.enqueue(.dialBack(KademliaPeer(id: peer), .answeredRequest, candidates: []))
        dht.enqueue(.job(.replication))
        #expect(dht.state.withLockedValue { $0.behaviour.dialBacks.isEmpty }, "the dropped dial-back still holds its slot")
        #expect(dht.state.withLockedValue { $0.behaviour.jobs.replicationRunning } == false, "the dropped round never ends")
        #expect(dht.state.withLockedValue { $0.droppedServiceWork } == 4)

        await host.shutdown()
        try await group.shutdownGracefully()
    }
}
