import AgentTesting
import Foundation
import Identity
import Multiformats
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// The varint-length-prefixed protobuf framing that relay, DCUtR and AutoNAT share
/// (`MuxedStream.readMessage` / `writeMessage`), over a real stream on loopback.
@Suite(
    "Varint-framed protobuf messages on a stream: round trip, and a clear error for each kind of bad input",
    .timeLimit(.minutes(1)))
struct ProtobufFramingTests {
    static let protocolID = "/agentd-test/framing/1.0.0"
    static let limit = 64

    /// A server that reads messages from each inbound stream until it ends or fails, and reports
    /// what it read; a client stream to it.
    struct Pair {
        let group: MultiThreadedEventLoopGroup
        let server: Network.Host
        let client: Network.Host
        let results: AsyncStream<Result<[RelayHopMessage], NetworkError>>

        static func start() async throws -> Pair {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let server = Network.Host(identity: Ed25519.PrivateKey(), group: group)
            let client = Network.Host(identity: Ed25519.PrivateKey(), group: group)
            let (results, continuation) = AsyncStream.makeStream(of: Result<[RelayHopMessage], NetworkError>.self)
            server.handle(protocolID) { stream in
                var read: [RelayHopMessage] = []
                do {
                    while let message = try await stream.readMessage(RelayHopMessage.self, maximumSize: limit) {
                        read.append(message)
                    }
                    continuation.yield(.success(read))
                } catch let error as NetworkError {
                    continuation.yield(.failure(error))
                } catch {
                    Issue.record("not a NetworkError: \(error)")
                }
                stream.reset()
            }
            let address = try await server.listen(on: Multiaddr("/ip4/127.0.0.1/tcp/0"))
            _ = try await client.connect(to: address.appending(.p2p(server.peerID.multihash)))
            return Pair(group: group, server: server, client: client, results: results)
        }

        /// Sends `bytes` on a new stream, half-closes it, and returns what the server made of them.
        func send(_ bytes: [UInt8]) async throws -> Result<[RelayHopMessage], NetworkError> {
            let stream = try await client.newStream(to: server.peerID, protocols: [protocolID])
            var results = self.results.makeAsyncIterator()
            if !bytes.isEmpty { try await stream.write(ByteBuffer(bytes: bytes)) }
            try await stream.closeWrite()
            return try #require(await results.next())
        }

        func shutdown() async throws {
            await client.shutdown()
            await server.shutdown()
            try await group.shutdownGracefully()
        }
    }

    static func reserve() -> RelayHopMessage {
        var message = RelayHopMessage()
        message.type = .reserve
        return message
    }

    static func messages(_ result: Result<[RelayHopMessage], NetworkError>) -> [RelayHopMessage]? {
        if case .success(let messages) = result { return messages }
        Issue.record("read failed: \(result)")
        return nil
    }

    static func failure(_ result: Result<[RelayHopMessage], NetworkError>) -> String? {
        if case .failure(let error) = result {
            #expect(error.kind == .protocolViolation)
            return error.message
        }
        return nil
    }

    @Test("messages written one after another are read back in order; a clean end reads nil")
    func roundTrip() async throws {
        let pair = try await Pair.start()
        let stream = try await pair.client.newStream(to: pair.server.peerID, protocols: [Self.protocolID])
        var results = pair.results.makeAsyncIterator()
        var connect = RelayHopMessage()
        connect.type = .connect
        connect.peer.id = Data(pair.client.peerID.bytes)
        try await stream.writeMessage(Self.reserve(), maximumSize: Self.limit)
        try await stream.writeMessage(connect, maximumSize: Self.limit)
        try await stream.closeWrite()
        #expect(Self.messages(try #require(await results.next())) == [Self.reserve(), connect])
        // RESERVE is `08 00` behind its length: type is written although it is 0.
        #expect(Self.messages(try await pair.send([0x02, 0x08, 0x00])) == [Self.reserve()])
        #expect(Self.messages(try await pair.send([])) == [])
        try await pair.shutdown()
    }

    @Test(
        "a length over the limit is refused before its body arrives; a stream that ends inside a message; a length that is not a varint; a body that is not the protobuf"
    )
    func hostile() async throws {
        let pair = try await Pair.start()
        // 5000 announced, nothing sent after it: refused at once (the half-close only ends the
        // stream; the refusal does not wait for the 5000 bytes).
        var oversized = ByteBuffer()
        oversized.writeUVarint(5000)
        let tooLong = Self.failure(try await pair.send(Array(oversized.readableBytesView)))
        #expect(tooLong?.contains("over the \(Self.limit)-byte limit") == true, "\(tooLong ?? "no error")")
        #expect(tooLong?.contains("HopMessage") == true)

        let truncated = Self.failure(try await pair.send([0x0A, 0x08, 0x00]))
        #expect(truncated?.contains("ended inside") == true, "\(truncated ?? "no error")")

        let notVarint = Self.failure(try await pair.send([UInt8](repeating: 0xFF, count: 11)))
        #expect(notVarint?.contains("bad length prefix") == true, "\(notVarint ?? "no error")")

        let garbage = Self.failure(try await pair.send([0x03, 0xFF, 0xFF, 0xFF]))
        #expect(garbage?.contains("malformed") == true, "\(garbage ?? "no error")")

        // Seeded random frames: each is read or refused with protocolViolation, never a trap.
        var generator = SeededGenerator(seed: 11)
        for _ in 0..<200 {
            let length = Int.random(in: 0...12, using: &generator)
            var bytes = [UInt8(length)]
            for _ in 0..<Int.random(in: 0...length, using: &generator) {
                bytes.append(UInt8.random(in: 0...255, using: &generator))
            }
            if case .failure(let error) = try await pair.send(bytes) { #expect(error.kind == .protocolViolation) }
        }
        try await pair.shutdown()
    }

    @Test("a message over the limit is not sent: the writer gets the error, the stream carries nothing")
    func oversizedWrite() async throws {
        let pair = try await Pair.start()
        let stream = try await pair.client.newStream(to: pair.server.peerID, protocols: [Self.protocolID])
        var results = pair.results.makeAsyncIterator()
        var big = RelayHopMessage()
        big.type = .connect
        big.peer.id = Data(repeating: 7, count: 100)
        await #expect(throws: NetworkError.self) { try await stream.writeMessage(big, maximumSize: Self.limit) }
        try await stream.closeWrite()
        #expect(Self.messages(try #require(await results.next())) == [])
        try await pair.shutdown()
    }
}
