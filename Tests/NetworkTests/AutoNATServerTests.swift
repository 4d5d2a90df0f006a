import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

/// The AutoNAT server over real loopback connections: dial-backs on fresh connections, refusals,
/// rate limits and hostile messages. 127.0.0.0/8 is made public for the server (as
/// `--public-cidr 127.0.0.0/8` would); the requester connects from 127.0.0.1, so 127.0.0.2 is a
/// third party.
@Suite("AutoNAT server over loopback", .timeLimit(.minutes(1)))
struct AutoNATServerTests {
    struct Pair {
        let group: MultiThreadedEventLoopGroup
        let server: Host
        let service: AutoNATServer
        let requester: Host
        let requesterAddress: Multiaddr

        func shutdown() async throws {
            await requester.shutdown()
            await server.shutdown()
            try await group.shutdownGracefully()
        }

        /// Sends `bytes` as one length-prefixed message on a new AutoNAT stream (then closes our
        /// side when `closeWrite`); the answer.
        func exchange(_ bytes: ByteBuffer, prefix: UInt64? = nil, closeWrite: Bool = false) async throws
            -> AutoNATDialResponse
        {
            let stream = try await requester.newStream(to: server.peerID, protocols: [AutoNAT.protocolID])
            var framed = ByteBuffer()
            framed.writeUVarint(prefix ?? UInt64(bytes.readableBytes))
            var body = bytes
            framed.writeBuffer(&body)
            try await stream.write(framed)
            if closeWrite { try await stream.closeWrite() }
            let answer = try await stream.readLengthPrefixed(maximumLength: AutoNAT.maximumMessageLength)
            stream.close()
            return try AutoNATMessage.decodeResponse(try #require(answer))
        }

        func ask(_ addresses: [Multiaddr], as peer: PeerID? = nil) async throws -> AutoNATDialResponse {
            try await exchange(
                AutoNATMessage.encode(AutoNATDialRequest(peer: peer ?? requester.peerID, addresses: addresses)))
        }
    }

    static func pair(_ configure: (inout AutoNATServer.Configuration) -> Void = { _ in }) async throws -> Pair {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = Host(identity: Ed25519.PrivateKey(), group: group)
        var configuration = AutoNATServer.Configuration()
        configuration.policy.scopeRule = AddressScopeRule(publicNetworks: [try IPNetwork("127.0.0.0/8")])
        configuration.policy.requestsPerPeer = 100
        // Generous: a loaded CI machine must not turn a reachable dial-back into E_DIAL_ERROR.
        configuration.dialTimeout = .seconds(10)
        configure(&configuration)
        let service = AutoNATServer.register(on: server, configuration: configuration)
        let serverAddress = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        let requester = Host(identity: Ed25519.PrivateKey(), group: group)
        let requesterAddress = try await requester.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        _ = try await requester.connect(to: serverAddress.appending(.p2p(server.peerID.multihash)))
        return Pair(
            group: group, server: server, service: service, requester: requester, requesterAddress: requesterAddress)
    }

    /// A listener that counts the connections it accepts and never answers (a silent port).
    final class SilentListener: Sendable {
        let channel: Channel
        let accepted = NIOLockedValueBox(0)
        var port: Int { channel.localAddress!.port! }

        init(group: EventLoopGroup, host: String) async throws {
            let accepted = self.accepted
            channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { _ in
                    accepted.withLockedValue { $0 += 1 }
                    return group.next().makeSucceededVoidFuture()
                }
                .bind(host: host, port: 0).get()
        }
    }

    @Test("a reachable requester gets OK with the address that worked, over a fresh connection never merged")
    func reachable() async throws {
        let pair = try await Self.pair()
        let closed = try await AddressProbeTests.closedPort(pair.group)
        let response = try await pair.ask([try Multiaddr("/ip4/127.0.0.1/tcp/\(closed)"), pair.requesterAddress])
        #expect(response.status == .ok)
        #expect(response.address == pair.requesterAddress)
        // The dial-back stopped inside the handshake: still exactly one connection each way.
        #expect(await pair.requester.connections().count == 1)
        #expect(await pair.server.connections().count == 1)
        try await pair.shutdown()
    }

    @Test("nobody listening, or a listener that never completes the handshake: E_DIAL_ERROR within the timeout")
    func unreachable() async throws {
        let pair = try await Self.pair { $0.dialTimeout = .milliseconds(500) }
        let closed = try await AddressProbeTests.closedPort(pair.group)
        let refused = try await pair.ask([try Multiaddr("/ip4/127.0.0.1/tcp/\(closed)")])
        #expect(refused.status == .dialError)
        let silent = try await SilentListener(group: pair.group, host: "127.0.0.1")
        let stalled = try await pair.ask([try Multiaddr("/ip4/127.0.0.1/tcp/\(silent.port)")])
        #expect(stalled.status == .dialError)
        #expect(stalled.statusText.contains("500 ms"))
        #expect(silent.accepted.withLockedValue { $0 } == 1, "the dial-back did reach the listener")
        try await silent.channel.close()
        try await pair.shutdown()
    }

    @Test("a third party's IP is refused and never dialled; another peer's id is a bad request")
    func refusals() async throws {
        let pair = try await Self.pair()
        let victim = try await SilentListener(group: pair.group, host: "127.0.0.2")
        let thirdParty = try await pair.ask([try Multiaddr("/ip4/127.0.0.2/tcp/\(victim.port)")])
        #expect(thirdParty.status == .dialRefused)
        let other = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let wrongPeer = try await pair.ask([pair.requesterAddress], as: other)
        #expect(wrongPeer.status == .badRequest)
        #expect(victim.accepted.withLockedValue { $0 } == 0)
        try await victim.channel.close()
        try await pair.shutdown()
    }

    @Test("hostile messages: garbage, a DIAL_RESPONSE, an oversized length: E_BAD_REQUEST, and the server serves on")
    func hostile() async throws {
        let pair = try await Self.pair()
        #expect(try await pair.exchange(ByteBuffer(bytes: [0x08, 0x00, 0x12, 0x7f, 0x01])).status == .badRequest)
        #expect(try await pair.exchange(AutoNATMessage.encode(AutoNATDialResponse(status: .ok))).status == .badRequest)
        #expect(try await pair.exchange(ByteBuffer(bytes: [0x08]), prefix: 1 << 20).status == .badRequest)
        #expect(try await pair.exchange(ByteBuffer()).status == .badRequest, "an empty message has no type")
        let truncated = try await pair.exchange(ByteBuffer(bytes: [0x08]), prefix: 40, closeWrite: true)
        #expect(truncated.status == .badRequest && truncated.statusText.contains("ended inside"))
        #expect(try await pair.ask([pair.requesterAddress]).status == .ok)
        #expect(pair.server.connection(to: pair.requester.peerID) != nil)
        try await pair.shutdown()
    }

    @Test("a requester that opens a stream and never sends is cut off at the request timeout")
    func silentRequester() async throws {
        let pair = try await Self.pair { $0.requestTimeout = .milliseconds(300) }
        let connection = try #require(pair.requester.connection(to: pair.server.peerID))
        let stream = try await pair.requester.newStream(to: pair.server.peerID, protocols: [AutoNAT.protocolID])
        // No answer, the stream reset: the read fails or ends without a message.
        let answer = try? await stream.readLengthPrefixed(maximumLength: AutoNAT.maximumMessageLength)
        #expect(answer == nil)
        #expect(pair.service.counters.answers.isEmpty)
        // Only the stream was cut off: the connection serves on. (Not shown with another request:
        // its round trip would race the 300 ms deadline, which a loaded machine can lose.)
        _ = try await Ping.ping(pair.requester, peer: pair.server.peerID)
        #expect(pair.requester.connection(to: pair.server.peerID)?.id == connection.id && !connection.isClosing)
        #expect(pair.server.connection(to: pair.requester.peerID)?.isClosing == false)
        try await pair.shutdown()
    }

    @Test("rate limit per peer: the third request in the window is refused")
    func rateLimit() async throws {
        let pair = try await Self.pair { $0.policy.requestsPerPeer = 2 }
        #expect(try await pair.ask([pair.requesterAddress]).status == .ok)
        #expect(try await pair.ask([pair.requesterAddress]).status == .ok)
        let third = try await pair.ask([pair.requesterAddress])
        #expect(third.status == .dialRefused)
        #expect(third.statusText.contains("too many"))
        #expect(pair.service.counters.answers == [.ok: 2, .dialRefused: 1])
        try await pair.shutdown()
    }
}
