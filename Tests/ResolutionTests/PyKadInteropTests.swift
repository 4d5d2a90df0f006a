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
}
