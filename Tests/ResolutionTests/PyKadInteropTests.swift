import AgentTesting
import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network
@testable import Resolution

/// Interop with py-libp2p 0.8.1's kad-dht (`/ipfs/kad/1.0.0`, server mode), driven through
/// Tests/Interop/py/kad_peer.py: our node finds py nodes through FIND_NODE, and answers theirs.
@Suite("kad-dht interop with py-libp2p", .enabled(if: Python.available), .serialized, .timeLimit(.minutes(3)))
struct PyKadInteropTests {
    struct PyNode {
        let process: PyPeer
        let peerID: PeerID
        let address: String
    }

    static func startPy() async throws -> PyNode {
        let process = try PyPeer(script: "kad_peer.py", ["--no-inbound-events"])
        let ready = try await process.waitFor("ready", timeout: .seconds(60))
        let address = try #require((ready["addrs"] as? [String])?.first)
        let peerID = try PeerID(try #require(ready["peer_id"] as? String))
        return PyNode(process: process, peerID: peerID, address: address)
    }

    static func makeNode(_ group: EventLoopGroup) async throws -> (Network.Host, DHT, Multiaddr) {
        var logger = Logger(label: "kad-interop")
        logger.logLevel = .critical
        let host = Network.Host(identity: Ed25519.PrivateKey(), group: group, logger: logger)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        var configuration = DHTConfiguration()
        configuration.protocolID = DHTConfiguration.libp2pProtocolID
        configuration.mode = .server
        let dht = DHT(host: host, store: try RecordStore(path: nil), configuration: configuration, logger: logger)
        dht.start()
        host.spawn("dht service") { try? await dht.run(maintenance: false) }
        return (host, dht, bound.appending(.p2p(host.peerID.multihash)))
    }

    @Test("we find py nodes and their neighbours through FIND_NODE; py's FIND_NODE and GET_VALUE get our answers")
    func findAndAnswer() async throws {
        let a = try await Self.startPy()
        let b = try await Self.startPy()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (host, dht, ourAddress) = try await Self.makeNode(group)
        do {
            // py A and py B know each other; we know only A.
            _ = try await b.process.command("connect", ["addr": a.address])
            _ = try await a.process.command("connect", ["addr": b.address])

            // Our self-lookup through A must reach B too: A names B in its FIND_NODE answer, and B
            // answers our query (only peers that answered enter the table).
            let entries = await dht.bootstrap([try Multiaddr(a.address)])
            #expect(entries == 2)
            let known = Set(dht.routingTableEntries.map(\.peer.id))
            #expect(known == [a.peerID, b.peerID])
            let closest = await dht.lookupClosestPeers(to: b.peerID.multihash.bytes)
            #expect(closest.closest.first?.id == b.peerID)
            #expect(Set(closest.closest.map(\.id)) == [a.peerID, b.peerID])

            // py A asks us (one FIND_NODE): we answer with the peers we know, without A itself.
            _ = try await a.process.command("connect", ["addr": ourAddress.description])
            let answer = try await a.process.command(
                "query_peer", ["peer_id": host.peerID.description, "key_hex": Hex.encode(b.peerID.multihash.bytes)])
            let peers = answer["peers"] as? [String] ?? []
            #expect(peers == [b.peerID.description])
            let addresses = (answer["addrs"] as? [String: [String]])?[b.peerID.description] ?? []
            #expect(!addresses.isEmpty, "our FIND_NODE answer carried no addresses for B: \(answer.fields)")

            // A record we hold is served to py's GET_VALUE byte for byte.
            let name = try AgentName("py-interop.agent")
            let report = try await dht.register(name)
            let value = try await a.process.command(
                "get_value_from", ["peer_id": host.peerID.description, "key": String(decoding: name.recordKey, as: UTF8.self)])
            #expect((value["value_hex"] as? String) == Hex.encode(report.record.bytes))

            // py's own iterative lookup, through its table (A, B, us), finds us.
            let found = try await b.process.command("connect", ["addr": ourAddress.description])
            #expect((found["ok"] as? Bool) == true)
            let lookup = try await b.process.command("find_closest", ["peer_id": host.peerID.description])
            #expect((lookup["peers"] as? [String] ?? []).contains(host.peerID.description))
        } catch {
            await a.process.stop()
            await b.process.stop()
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        await a.process.stop()
        await b.process.stop()
        await host.shutdown()
        try await group.shutdownGracefully()
    }

    /// Waits (up to `seconds`) until `condition` holds; false if it never did.
    static func eventually(_ seconds: Int = 15, _ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<(seconds * 20) {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    @Test("py kad servers that join through us stay in our table when they refuse our requests; a third party's FIND_NODE returns them")
    func pyPeersStayAfterRefusals() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (host, dht, ourAddress) = try await Self.makeNode(group)
        var peers: [PyNode] = []
        do {
            // As agentd does: our self-certifying name is published (locally: nobody is known yet).
            _ = try await dht.register(AgentName(selfCertifying: host.peerID))
            // Two py servers bootstrap through us: connect, put us in their table, look themselves up.
            for _ in 0..<2 {
                let py = try await Self.startPy()
                peers.append(py)
                _ = try await py.process.command("connect", ["addr": ourAddress.description])
                _ = try await py.process.command("find_closest", ["peer_id": py.peerID.description])
            }
            let expected = Set(peers.map(\.peerID))
            #expect(try await Self.eventually { Set(dht.routingTableEntries.map(\.peer.id)) == expected })
            // Republishing our record looks up its key ("/agent/<base36 id>.agent", 70 bytes): py
            // refuses FIND_NODE for keys over 50 bytes that are not multihashes, by resetting the
            // stream. A refusal proves the peer alive: both stay.
            #expect(await dht.republishOwnRecords(force: true) == 1)
            #expect(Set(dht.routingTableEntries.map(\.peer.id)) == expected)

            // A third party that knows only us asks us for peers: it gets both py servers.
            let third = try await Self.startPy()
            peers.append(third)
            _ = try await third.process.command("connect", ["addr": ourAddress.description])
            let answer = try await third.process.command(
                "query_peer", ["peer_id": host.peerID.description, "key_hex": Hex.encode(third.peerID.multihash.bytes)])
            #expect(Set(answer["peers"] as? [String] ?? []) == Set(expected.map(\.description)))
        } catch {
            for py in peers { await py.process.stop() }
            await host.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        for py in peers { await py.process.stop() }
        await host.shutdown()
        try await group.shutdownGracefully()
    }
}
