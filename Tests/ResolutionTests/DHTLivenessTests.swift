import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// Routing-table integrity over real connections (spec/dht.md §4, §6.4): liveness means liveness,
/// hearsay never rewrites or evicts an entry, and a peer enters only at an address we reached it at.
@Suite("DHT liveness, hearsay and admission", .serialized)
struct DHTLivenessTests {
    /// Waits (up to 10 s) until `condition` holds; false if it never did.
    static func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    /// A kad server that answers every FIND_NODE with `closer`, whatever the key (a liar).
    static func liar(in network: DHTLoopbackNetwork, naming closer: [KadMessage.Peer]) async throws -> (
        Network.Host, Multiaddr
    ) {
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let host = Network.Host(identity: Ed25519.PrivateKey(), group: network.group, logger: logger)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        host.handle(DHTConfiguration.agentProtocolID) { stream in
            while let request = try? await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize),
                let message = try? KadMessage(serialized: request.readableBytesView)
            {
                let answer = KadMessage(type: message.type, key: message.key, closerPeers: closer)
                guard (try? await stream.writeLengthPrefixed(ByteBuffer(bytes: answer.serialized()))) != nil else {
                    return
                }
            }
            try? await stream.closeWrite()
        }
        return (host, bound.appending(.p2p(host.peerID.multihash)))
    }

    @Test("the liveness rule: only a failed dial through trusted addresses and a timeout count against a peer")
    func livenessRule() {
        let expected: [(KadRequestFailure.Kind, Bool)] = [
            (.refused, false), (.notServing, false), (.badAnswer, false), (.unreachableByHearsay, false),
            (.unreachable, true), (.timedOut, true),
        ]
        for (kind, counts) in expected {
            #expect(KadRequestFailure.countsAgainstLiveness(kind) == counts, "\(kind)")
        }
    }

    @Test("a lookup every remote refuses (a 4,096-byte key) leaves the routing table as it was")
    func refusedLookupKeepsTable() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 6)
        let node = network.nodes[0]
        // On a loaded machine a request of the building lookups can time out and leave a peer out of
        // node 0's table: it joins through the others again until its table holds all five.
        let others = network.nodes.dropFirst().map(\.address)
        for _ in 0..<20 where node.dht.routingTableEntries.count < 5 {
            await node.dht.bootstrap(others)
        }
        let before = Set(node.dht.routingTableEntries.map(\.peer.id))
        #expect(before.count == 5)
        // Servers refuse keys over 1024 bytes by resetting the stream (spec/dht.md §1.1).
        let result = await node.dht.lookupClosestPeers(to: [UInt8](repeating: 7, count: 4096))
        #expect(result.closest.isEmpty)
        #expect(result.statistics.requests >= 5)
        #expect(Set(node.dht.routingTableEntries.map(\.peer.id)) == before)
        try await network.shutdown()
    }

    @Test("one FIND_NODE answer naming honest H at 127.0.0.1:1 neither redirects H's entry nor evicts H")
    func hearsayAddress() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        // The lookup waits for every answer (a loaded machine may take seconds), so H's counts.
        var patient = DHTLoopbackNetwork.configuration()
        patient.requestTimeout = patient.requestHardTimeout
        let victim = try await network.addNode(configuration: patient)
        let honest = try await network.addNode()
        let trueAddress = honest.address.decapsulatingPeer()
        let (liar, liarAddress) = try await Self.liar(
            in: network,
            naming: [KadMessage.Peer(peerID: honest.peerID, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/1")])])
        // The victim holds a connection to H, but H is not in its table yet.
        _ = try await victim.host.connect(to: honest.address)
        #expect(!victim.dht.state.withLockedValue { $0.table.contains(honest.peerID) })

        // Bootstrapping through the liar: it names H at 127.0.0.1:1; H answers on the live
        // connection and enters the table at the address that connection goes to, not the liar's.
        await victim.dht.bootstrap([liarAddress])
        var entry = try #require(victim.dht.state.withLockedValue { $0.table.entry(for: honest.peerID) })
        #expect(entry.peer.addresses == [trueAddress])

        // Without the connection, the next lookup hears the same lie and dials H where the table
        // says: H answers and stays, at its true address.
        victim.host.connection(to: honest.peerID)?.close()
        #expect(try await Self.eventually { victim.host.connection(to: honest.peerID) == nil })
        _ = await victim.dht.lookupClosestPeers(to: Array("after the lie".utf8))
        entry = try #require(victim.dht.state.withLockedValue { $0.table.entry(for: honest.peerID) })
        #expect(entry.peer.addresses == [trueAddress])

        // Hearsay that does not work says nothing about a peer; a dead table address does.
        let stranger = KademliaPeer(
            id: PeerID(publicKey: Ed25519.PrivateKey().publicKey), addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/1")])
        do {
            _ = try await victim.dht.exchange(KadMessage(type: .ping), with: stranger, hearsay: true)
            Issue.record("a request to 127.0.0.1:1 succeeded")
        } catch {
            #expect(error.kind == .unreachableByHearsay)
        }
        await network.stop(1)
        do {
            _ = try await victim.dht.exchange(
                KadMessage(type: .ping), with: KademliaPeer(id: honest.peerID), hearsay: true)
            Issue.record("a request to a stopped node succeeded")
        } catch {
            #expect(error.kind == .unreachable)
        }
        await liar.shutdown()
        try await network.shutdown()
    }

    @Test(
        "a peer that opens kad streams enters only after a dial-back to an address it advertised; one that cannot be dialled back never does"
    )
    func admissionByDialBack() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let server = try await network.addNode()
        let honest = try await network.addNode()
        await honest.dht.bootstrap([server.address])
        // The server learned of it from its inbound kad stream: it enters once the dial-back
        // reached it at its listen address.
        #expect(try await Self.eventually { server.dht.state.withLockedValue { $0.table.contains(honest.peerID) } })
        let entry = try #require(server.dht.state.withLockedValue { $0.table.entry(for: honest.peerID) })
        #expect(entry.peer.addresses == [honest.address.decapsulatingPeer()])
        // The probe left no connection behind on either side.
        #expect(await server.host.connections().filter { $0.remotePeer == honest.peerID }.count == 1)
        #expect(await honest.host.connections().filter { $0.remotePeer == server.peerID }.count == 1)

        // A node that serves kad (identify lists it) but listens nowhere: nothing to dial back.
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let hiddenHost = Network.Host(identity: Ed25519.PrivateKey(), group: network.group, logger: logger)
        let hidden = DHT(
            host: hiddenHost, store: try RecordStore(path: nil), configuration: DHTLoopbackNetwork.configuration(),
            logger: logger)
        hidden.start()
        hiddenHost.spawn("dht service") { try? await hidden.run(maintenance: false) }
        await hidden.bootstrap([server.address])
        #expect(try await Self.eventually { server.host.peerInfo(hiddenHost.peerID) != nil })
        // Identify is known now: this request is judged at once.
        #expect(
            try await hidden.request(
                KadMessage(type: .ping), to: KademliaPeer(id: server.peerID, addresses: [server.address]))?.type
                == .ping)
        #expect(!server.dht.state.withLockedValue { $0.table.contains(hiddenHost.peerID) })
        await hiddenHost.shutdown()
        try await network.shutdown()
    }
}
