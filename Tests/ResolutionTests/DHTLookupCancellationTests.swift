import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// The driver's requests are children of the query (spec/dht.md §10.1): when a lookup ends, what it
/// still has in flight is cancelled and its stream reset, instead of running on until the request's
/// hard timeout (the detached request tasks this replaces held a silent peer's stream that long).
@Suite("DHT lookups cancel their requests in flight when they end", .serialized)
struct DHTLookupCancellationTests {
    @Test(
        "a lookup that ends while a silent peer's request is in flight resets that stream at once, not at the hard timeout"
    )
    func silentRequestCancelled() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 4)

        // A kad server that reads the request and never answers; counts the streams that ended.
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let silent = Network.Host(identity: Ed25519.PrivateKey(), group: network.group, logger: logger)
        let bound = try await silent.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let requests = NIOLockedValueBox(0)
        let ended = NIOLockedValueBox(0)
        silent.handle(DHTConfiguration.agentProtocolID) { stream in
            guard (try? await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize)) != nil else {
                return
            }
            requests.withLockedValue { $0 += 1 }
            // Returns (or throws) only when the asker closes or resets the stream.
            _ = try? await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize)
            ended.withLockedValue { $0 += 1 }
        }

        // The lookup gives up on the silent peer after 300 ms; its request could run 120 s.
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .milliseconds(300)
        configuration.requestHardTimeout = .seconds(120)
        let asker = try await network.addNode(configuration: configuration)
        await asker.dht.bootstrap([network.nodes[0].address])
        let seed = KademliaPeer(id: silent.peerID, addresses: [bound.appending(.p2p(silent.peerID.multihash))])
        let result = await asker.dht.lookupClosestPeers(to: Array("cancel-me".utf8), extraSeeds: [seed])

        #expect(requests.withLockedValue { $0 } == 1, "the silent peer was not asked")
        #expect(!result.closest.contains { $0.id == silent.peerID })
        #expect(result.statistics.timeouts >= 1)
        // The lookup is over: its request to the silent peer was cancelled and the stream reset.
        #expect(try await DHTLivenessTests.eventually { ended.withLockedValue { $0 } == 1 })
        await silent.shutdown()
        try await network.shutdown()
    }

    @Test("a lookup whose caller is cancelled while it waits on a silent peer returns what it has")
    func cancelledCaller() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 3)
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let silent = Network.Host(identity: Ed25519.PrivateKey(), group: network.group, logger: logger)
        let bound = try await silent.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let requests = NIOLockedValueBox(0)
        silent.handle(DHTConfiguration.agentProtocolID) { stream in
            guard (try? await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize)) != nil else {
                return
            }
            requests.withLockedValue { $0 += 1 }
            _ = try? await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize)
        }
        // The lookup waits for the silent peer for 120 s.
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .seconds(120)
        configuration.requestHardTimeout = .seconds(120)
        let asker = try await network.addNode(configuration: configuration)
        await asker.dht.bootstrap([network.nodes[0].address])
        let seed = KademliaPeer(id: silent.peerID, addresses: [bound.appending(.p2p(silent.peerID.multihash))])
        let dht = asker.dht
        let lookup = Task { await dht.lookupClosestPeers(to: Array("cancel-the-caller".utf8), extraSeeds: [seed]) }
        #expect(try await DHTLivenessTests.eventually { requests.withLockedValue { $0 } == 1 })
        lookup.cancel()
        let result = await lookup.value
        #expect(!result.closest.contains { $0.id == silent.peerID })
        #expect(!result.closest.isEmpty, "the peers that answered before the cancellation were lost")
        await silent.shutdown()
        try await network.shutdown()
    }
}
