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
}
