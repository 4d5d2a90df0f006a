import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

@Suite("connect and close in a loop", .timeLimit(.minutes(1)))
struct ConnectCloseLoopTests {
    @Test("200 connects, each closed at once, never hang, never corrupt a stream, leave no handler behind")
    func loop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let serverLog = LogRecorder()
        let server = Host(identity: Ed25519.PrivateKey(), group: group, logger: serverLog.logger)
        let bound = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let address = bound.appending(.p2p(server.peerID.multihash))
        let client = Host(identity: Ed25519.PrivateKey(), group: group)
        for index in 0..<200 {
            let connection = try await client.connect(to: address)
            connection.close()
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await connection.closeFuture.get() }
                tasks.addTask {
                    try await Task.sleep(for: .seconds(5))
                    throw NetworkError(.timeout, "close of connection \(index) (\(connection.id)) did not complete")
                }
                try await tasks.next()
                tasks.cancelAll()
            }
        }
        await client.shutdown()
        await server.shutdown()
        try await group.shutdownGracefully()
        // Each connection carries a yamux ping at once and the client's identify stream; closing
        // at once makes the server answer into a reset socket, which once (1) dropped a Noise
        // message read re-entrantly and (2) accepted a stream after the connection had gone.
        #expect(serverLog.lines(containing: "failed authentication").isEmpty, "\(serverLog)")
        #expect(serverLog.lines(containing: "did not finish").isEmpty, "\(serverLog)")
    }

    @Test("reconnecting right after a close gets a live connection, not the closing one")
    func reconnectAfterClose() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (server, address) = try await HostTests.makeHost(group)
        let client = Host(identity: Ed25519.PrivateKey(), group: group)
        for _ in 0..<50 {
            let first = try await client.connect(to: address)
            first.close()
            // No wait for the close: the server may still hold the old connection when the new one
            // arrives, and must keep the new one.
            let second = try await client.connect(to: address)
            #expect(second !== first)
            #expect(try await Ping.ping(client, peer: server.peerID).count == 1)
            second.close()
            try await second.closeFuture.get()
        }
        await client.shutdown()
        await server.shutdown()
        try await group.shutdownGracefully()
    }
    @Test("concurrent connects to one peer share one dial and get the same connection")
    func concurrentConnectsShareOneDial() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (server, address) = try await HostTests.makeHost(group)
        for _ in 0..<50 {
            let client = Host(identity: Ed25519.PrivateKey(), group: group)
            let connections = try await withThrowingTaskGroup(of: Connection.self) { tasks in
                for _ in 0..<8 { tasks.addTask { try await client.connect(to: address) } }
                var all: [Connection] = []
                for try await connection in tasks { all.append(connection) }
                return all
            }
            // One dial: every caller holds the same connection, and it is the only connection this
            // fresh client ever made (ids count up from 1 per host; a second dial would be id 2).
            #expect(connections.allSatisfy { $0 === connections[0] })
            #expect(connections[0].id == 1)
            #expect(client.core.connectionsMade == 1)
            await client.shutdown()
        }
        await server.shutdown()
        try await group.shutdownGracefully()
    }
}
