import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

@Suite("connect and close in a loop", .timeLimit(.minutes(1)))
struct ConnectCloseLoopTests {
    @Test("200 connects, each closed at once, never hang")
    func loop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (server, address) = try await HostTests.makeHost(group)
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
}
