import AgentTesting
import Identity
import NIOCore
import NIOEmbedded
import Testing

@testable import Session

/// The two handshake extensions: early muxer negotiation (libp2p/specs
/// `connections/inlined-muxer-negotiation.md`) and agentd's rekeying (spec/session.md §3.1).
@Suite("SecureConnectionHandler: early muxer negotiation and rekeying")
struct SecureConnectionExtensionTests {
    /// Two handlers on embedded channels, kept for inspection.
    struct Pair {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        let clientHandler: SecureConnectionHandler
        let serverHandler: SecureConnectionHandler
        let clientRecorder = Recorder()
        let serverRecorder = Recorder()

        init(
            clientMuxers: [String] = ["/yamux/1.0.0"], serverMuxers: [String] = ["/yamux/1.0.0"],
            clientAnnounces: Bool = true, serverAnnounces: Bool = true,
            clientRekey: NoiseRekeyPolicy? = NoiseRekeyPolicy(), serverRekey: NoiseRekeyPolicy? = NoiseRekeyPolicy()
        ) throws {
            let serverIdentity = Ed25519.PrivateKey()
            clientHandler = SecureConnectionHandler(
                configuration: .init(
                    role: .initiator, identity: Ed25519.PrivateKey(), staticKey: X25519.PrivateKey(),
                    expectedPeer: PeerID(publicKey: serverIdentity.publicKey), muxers: clientMuxers,
                    announceMuxers: clientAnnounces, rekey: clientRekey))
            serverHandler = SecureConnectionHandler(
                configuration: .init(
                    role: .responder, identity: serverIdentity, staticKey: X25519.PrivateKey(), muxers: serverMuxers,
                    announceMuxers: serverAnnounces, rekey: serverRekey))
            try client.pipeline.syncOperations.addHandlers([clientHandler, clientRecorder])
            try server.pipeline.syncOperations.addHandlers([serverHandler, serverRecorder])
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        }

        /// Moves what `from` has written to `to`; whether anything moved.
        @discardableResult
        func move(from: EmbeddedChannel, to: EmbeddedChannel) throws -> Bool {
            var moved = false
            while let bytes = try from.readOutbound(as: ByteBuffer.self) {
                try to.writeInbound(bytes)
                moved = true
            }
            return moved
        }

        /// Round trips (client → server, server → client) until the initiator is established.
        func roundTripsUntilClientEstablished() throws -> Int {
            var rounds = 0
            while clientRecorder.established == nil {
                try move(from: client, to: server)
                try move(from: server, to: client)
                rounds += 1
                try #require(rounds < 10)
            }
            return rounds
        }

        func shuttle() throws {
            while try move(from: client, to: server) || move(from: server, to: client) {}
        }

        /// Everything `from` writes, as wire bytes (not delivered).
        func drain(_ from: EmbeddedChannel) throws -> ByteBuffer {
            var wire = ByteBuffer()
            while var bytes = try from.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&bytes) }
            return wire
        }
    }

    /// Splits wire bytes into Noise message lengths.
    static func messageLengths(_ wire: ByteBuffer) -> [Int] {
        var wire = wire
        var lengths: [Int] = []
        while let length = wire.readInteger(as: UInt16.self) {
            lengths.append(Int(length))
            wire.moveReaderIndex(forwardBy: Int(length))
        }
        return lengths
    }

    // MARK: Early muxer negotiation

    @Test("both list muxers: the initiator is established once it sent message 3, the responder once it read it")
    func earlyMuxer() throws {
        let pair = try Pair(clientMuxers: ["/yamux/1.0.0", "/mplex/6.7.0"], serverMuxers: ["/mplex/6.7.0", "/yamux/1.0.0"])
        // The initiator is established on reading message 2, in the first round trip.
        #expect(try pair.roundTripsUntilClientEstablished() == 1)
        #expect(pair.serverRecorder.established == nil)
        // Message 3 is the initiator's last handshake word; the responder is done on reading it,
        // and neither side has anything more to say: no multistream-select for the muxer.
        try pair.move(from: pair.client, to: pair.server)
        #expect(pair.serverRecorder.established != nil)
        #expect(try pair.server.readOutbound(as: ByteBuffer.self) == nil)
        #expect(try pair.client.readOutbound(as: ByteBuffer.self) == nil)
        // The first of the initiator's list that the responder supports.
        #expect(pair.clientRecorder.established?.muxer == "/yamux/1.0.0")
        #expect(pair.serverRecorder.established?.muxer == "/yamux/1.0.0")

        pair.client.writeAndFlush(ByteBuffer(string: "first bytes"), promise: nil)
        try pair.shuttle()
        #expect(pair.serverRecorder.received == ByteBuffer(string: "first bytes"))
    }

    @Test("a peer that lists no muxers (as py-libp2p) gets multistream-select, either side")
    func fallback() throws {
        for (clientAnnounces, serverAnnounces) in [(false, true), (true, false)] {
            let pair = try Pair(clientAnnounces: clientAnnounces, serverAnnounces: serverAnnounces)
            let rounds = try pair.roundTripsUntilClientEstablished()
            // Round 1: the /noise proposal with message 1 (lazy), message 2 back; round 2: message 3
            // with the muxer proposal, the answer back. Established only after that answer.
            #expect(pair.serverRecorder.established != nil)
            #expect(pair.clientRecorder.established?.muxer == "/yamux/1.0.0")
            #expect(rounds == 2, "clientAnnounces \(clientAnnounces)")
        }
        #expect(try Pair().roundTripsUntilClientEstablished() == 1, "early negotiation saves a round trip")
    }

    @Test("both list muxers with none in common: the handshake fails, as the spec requires")
    func noCommonMuxer() throws {
        let pair = try Pair(clientMuxers: ["/yamux/1.0.0"], serverMuxers: ["/mplex/6.7.0"])
        try pair.shuttle()
        #expect(pair.clientRecorder.established == nil)
        let error = try #require(pair.clientRecorder.errors.first as? SessionError)
        #expect(error.kind == .negotiationFailed)
        #expect(error.message.contains("/mplex/6.7.0"))
        #expect(!pair.client.isActive)
    }

    @Test("a muxer name the peer chose is escaped in the error (issue #10 finding 9: forged log lines)")
    func hostileMuxerNameEscaped() throws {
        let forged = "/mplex/6.7.0\n2026-12-06T10:00:00+0000 critical agentd : identity key file replaced"
        let pair = try Pair(clientMuxers: ["/yamux/1.0.0"], serverMuxers: [forged])
        try pair.shuttle()
        let error = try #require(pair.clientRecorder.errors.first as? SessionError)
        #expect(error.kind == .negotiationFailed)
        #expect(!error.message.contains("\n"), "\(error.message)")
        #expect(error.message.contains("/mplex/6.7.0\\n2026-12-06"), "\(error.message)")
    }

    // MARK: Rekeying

    @Test("both announce: a signal every 3 messages, both keys follow, every byte arrives")
    func rekeyEveryThreeMessages() throws {
        let policy = NoiseRekeyPolicy(messages: 3)
        let pair = try Pair(clientRekey: policy, serverRekey: policy)
        try pair.shuttle()
        #expect(pair.clientHandler.rekeyAgreed && pair.serverHandler.rekeyAgreed)
        var sent = ByteBuffer()
        var wire = ByteBuffer()
        for index in 0..<10 {
            let message = ByteBuffer(string: "message \(index);")
            sent.writeImmutableBuffer(message)
            pair.client.writeAndFlush(message, promise: nil)
            var bytes = try pair.drain(pair.client)
            wire.writeImmutableBuffer(bytes)
            try pair.server.writeInbound(bytes.readSlice(length: bytes.readableBytes)!)
        }
        #expect(pair.serverRecorder.received == sent)
        // Messages 4, 7 and 10 each come after a signal (an empty message: its tag only).
        let lengths = Self.messageLengths(wire)
        #expect(lengths.filter { $0 == NoiseCipherState.tagLength }.count == 3)
        #expect(lengths.count == 13)
        #expect(pair.clientHandler.rekeysSent == 3)
        #expect(pair.serverHandler.rekeysReceived == 3)
        #expect(pair.serverHandler.rekeysSent == 0)

        // The other direction rekeys on its own count.
        for index in 0..<4 {
            pair.server.writeAndFlush(ByteBuffer(string: "reply \(index)"), promise: nil)
        }
        try pair.shuttle()
        #expect(pair.serverHandler.rekeysSent == 1)
        #expect(pair.clientHandler.rekeysReceived == 1)
        #expect(pair.clientRecorder.received == ByteBuffer(string: "reply 0reply 1reply 2reply 3"))
    }

    @Test("a key older than the interval is replaced before the next message")
    func rekeyByAge() async throws {
        let policy = NoiseRekeyPolicy(messages: 1000, interval: .milliseconds(20))
        let pair = try Pair(clientRekey: policy, serverRekey: policy)
        try pair.shuttle()
        pair.client.writeAndFlush(ByteBuffer(string: "young key"), promise: nil)
        try pair.shuttle()
        #expect(pair.clientHandler.rekeysSent == 0)
        try await Task.sleep(for: .milliseconds(30))
        pair.client.writeAndFlush(ByteBuffer(string: ", old key"), promise: nil)
        try pair.shuttle()
        #expect(pair.clientHandler.rekeysSent == 1)
        #expect(pair.serverRecorder.received == ByteBuffer(string: "young key, old key"))
    }

    @Test("only one side announces: no signal is ever sent and nothing breaks")
    func rekeyNeedsBoth() throws {
        for (clientRekey, serverRekey) in [(NoiseRekeyPolicy(messages: 1), nil), (nil, NoiseRekeyPolicy(messages: 1))] {
            let pair = try Pair(clientRekey: clientRekey, serverRekey: serverRekey)
            try pair.shuttle()
            #expect(!pair.clientHandler.rekeyAgreed && !pair.serverHandler.rekeyAgreed)
            var wire = ByteBuffer()
            for index in 0..<5 {
                pair.client.writeAndFlush(ByteBuffer(string: "\(index)"), promise: nil)
                pair.server.writeAndFlush(ByteBuffer(string: "\(index)"), promise: nil)
                var bytes = try pair.drain(pair.client)
                wire.writeImmutableBuffer(bytes)
                try pair.server.writeInbound(bytes.readSlice(length: bytes.readableBytes)!)
                try pair.shuttle()
            }
            #expect(!Self.messageLengths(wire).contains(NoiseCipherState.tagLength))
            #expect(pair.serverRecorder.received == ByteBuffer(string: "01234"))
            #expect(pair.clientRecorder.received == ByteBuffer(string: "01234"))
            #expect(pair.clientHandler.rekeysSent + pair.serverHandler.rekeysSent == 0)
        }
    }
}
