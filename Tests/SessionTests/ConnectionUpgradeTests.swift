import AgentTesting
import Identity
import NIOCore
import Testing

@testable import Session

/// `ConnectionUpgrade` and `SecureTransport` driven without a channel, a socket or a clock: two
/// state machines hand each other their `.send` bytes in memory.
@Suite("ConnectionUpgrade: the upgrade as a pure state machine")
struct ConnectionUpgradeTests {
    static let allocator = ByteBufferAllocator()
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// What one side ended with.
    struct Outcome {
        var established: SecureConnectionEvent.Established?
        var transport: SecureTransport?
        var leftover: ByteBuffer?
        var authenticated: PeerID?
        var failure: SessionError?
    }

    /// Two upgrades wired to each other. `chunk` splits every delivery into pieces of that size.
    struct Pair {
        var client: ConnectionUpgrade
        var server: ConnectionUpgrade
        var clientOutcome = Outcome()
        var serverOutcome = Outcome()
        var toServer = ByteBuffer()
        var toClient = ByteBuffer()
        let clientIdentity: Ed25519.PrivateKey
        let serverIdentity: Ed25519.PrivateKey

        init(
            expected: PeerID? = nil, clientMuxers: [String] = ["/yamux/1.0.0"], serverMuxers: [String] = ["/yamux/1.0.0"],
            announceMuxers: Bool = true, authenticateOnly: Bool = false
        ) {
            clientIdentity = Ed25519.PrivateKey()
            serverIdentity = Ed25519.PrivateKey()
            var clientConfiguration = ConnectionUpgrade.Configuration(
                role: .initiator, identity: clientIdentity, staticKey: X25519.PrivateKey(),
                expectedPeer: expected ?? PeerID(publicKey: serverIdentity.publicKey), muxers: clientMuxers,
                announceMuxers: announceMuxers)
            clientConfiguration.authenticateOnly = authenticateOnly
            client = ConnectionUpgrade(configuration: clientConfiguration)
            server = ConnectionUpgrade(
                configuration: .init(
                    role: .responder, identity: serverIdentity, staticKey: X25519.PrivateKey(), muxers: serverMuxers,
                    announceMuxers: announceMuxers))
        }

        static func apply(_ actions: [ConnectionUpgrade.Action], to outcome: inout Outcome, sending out: inout ByteBuffer) {
            for action in actions {
                switch action {
                case .send(var bytes): out.writeBuffer(&bytes)
                case .established(let established, let transport, let leftover):
                    #expect(outcome.established == nil, "established twice")
                    outcome.established = established
                    outcome.transport = transport
                    outcome.leftover = leftover
                case .authenticated(let peer): outcome.authenticated = peer
                case .failed(let error):
                    #expect(outcome.failure == nil, "failed twice")
                    outcome.failure = error
                }
            }
        }

        mutating func start() {
            Self.apply(client.start(allocator: allocator), to: &clientOutcome, sending: &toServer)
            Self.apply(server.start(allocator: allocator), to: &serverOutcome, sending: &toClient)
        }

        /// Delivers what is in flight until both sides are quiet.
        mutating func run(chunk: Int = .max) {
            while toServer.readableBytes > 0 || toClient.readableBytes > 0 {
                if toServer.readableBytes > 0 {
                    var input = toServer
                    toServer.clear()
                    var buffer = ByteBuffer()
                    while input.readableBytes > 0 {
                        var piece = input.readSlice(length: min(chunk, input.readableBytes))!
                        buffer.writeBuffer(&piece)
                        let actions = server.receive(&buffer, now: t0, allocator: allocator)
                        Self.apply(actions, to: &serverOutcome, sending: &toClient)
                        if server.isFinished { break }
                    }
                }
                if toClient.readableBytes > 0 {
                    var input = toClient
                    toClient.clear()
                    var buffer = ByteBuffer()
                    while input.readableBytes > 0 {
                        var piece = input.readSlice(length: min(chunk, input.readableBytes))!
                        buffer.writeBuffer(&piece)
                        let actions = client.receive(&buffer, now: t0, allocator: allocator)
                        Self.apply(actions, to: &clientOutcome, sending: &toServer)
                        if client.isFinished { break }
                    }
                }
            }
        }
    }

    @Test("initiator and responder establish; each side's transport opens what the other seals")
    func establishes() throws {
        var pair = Pair()
        pair.start()
        pair.run()
        let client = try #require(pair.clientOutcome.established)
        let server = try #require(pair.serverOutcome.established)
        #expect(client.remotePeer == PeerID(publicKey: pair.serverIdentity.publicKey))
        #expect(server.remotePeer == PeerID(publicKey: pair.clientIdentity.publicKey))
        #expect(client.muxer == "/yamux/1.0.0" && server.muxer == "/yamux/1.0.0")
        var clientTransport = try #require(pair.clientOutcome.transport)
        var serverTransport = try #require(pair.serverOutcome.transport)
        #expect(clientTransport.rekeyAgreed && serverTransport.rekeyAgreed)
        var plain = ByteBuffer(string: "hello over the transport")
        var sealed = try clientTransport.seal(&plain, now: Self.t0, allocator: Self.allocator)
        let frame = try #require(SecureTransport.readFrame(&sealed))
        let opened = try #require(try serverTransport.open(frame, allocator: Self.allocator))
        #expect(String(buffer: opened) == "hello over the transport")
    }

    @Test("bytes delivered one at a time establish the same connection", arguments: [1, 2, 7, 64])
    func byteByByte(chunk: Int) throws {
        var pair = Pair()
        pair.start()
        pair.run(chunk: chunk)
        #expect(pair.clientOutcome.established != nil && pair.serverOutcome.established != nil)
        #expect(pair.clientOutcome.failure == nil && pair.serverOutcome.failure == nil)
    }

    @Test("muxer by multistream-select inside the encrypted channel when the handshake lists none")
    func muxerByMultistream() throws {
        var pair = Pair(clientMuxers: ["/mplex/6.7.0", "/yamux/1.0.0"], announceMuxers: false)
        pair.start()
        pair.run()
        #expect(pair.clientOutcome.established?.muxer == "/yamux/1.0.0")
        #expect(pair.serverOutcome.established?.muxer == "/yamux/1.0.0")
    }

    @Test("no common muxer in the handshake payloads fails both sides' upgrade")
    func noCommonMuxer() throws {
        var pair = Pair(clientMuxers: ["/mplex/6.7.0"], serverMuxers: ["/yamux/1.0.0"])
        pair.start()
        pair.run()
        #expect(pair.clientOutcome.established == nil && pair.serverOutcome.established == nil)
        #expect(pair.serverOutcome.failure?.kind == .negotiationFailed || pair.clientOutcome.failure?.kind == .negotiationFailed)
    }

    @Test("the wrong peer at the address: the initiator fails with peer_id_mismatch and never establishes")
    func wrongPeer() throws {
        var pair = Pair(expected: PeerID(publicKey: Ed25519.PrivateKey().publicKey))
        pair.start()
        pair.run()
        #expect(pair.clientOutcome.established == nil)
        #expect(pair.clientOutcome.failure?.kind == .peerIDMismatch)
        #expect(pair.serverOutcome.established == nil)
    }

    @Test("authenticate-only stops after message 2: the initiator learns the peer, the responder never establishes")
    func authenticateOnly() throws {
        var pair = Pair(authenticateOnly: true)
        pair.start()
        pair.run()
        #expect(pair.clientOutcome.authenticated == PeerID(publicKey: pair.serverIdentity.publicKey))
        #expect(pair.clientOutcome.established == nil && pair.serverOutcome.established == nil)
        #expect(pair.client.isFinished && !pair.server.isFinished)
    }

    @Test("the deadline fails an unfinished upgrade once, and does nothing after establishment")
    func deadline() throws {
        var stalled = Pair()
        stalled.start()
        let actions = stalled.server.deadlinePassed()
        guard case .failed(let error)? = actions.first, actions.count == 1 else {
            Issue.record("expected one failure, got \(actions)")
            return
        }
        #expect(error.kind == .timeout)
        #expect(stalled.server.deadlinePassed().isEmpty)
        #expect(stalled.server.connectionClosed().isEmpty)

        var done = Pair()
        done.start()
        done.run()
        #expect(done.client.deadlinePassed().isEmpty && done.server.deadlinePassed().isEmpty)
        #expect(done.client.connectionClosed().isEmpty)
    }

    @Test("a connection closed during the upgrade fails it")
    func closedDuringUpgrade() throws {
        var pair = Pair()
        pair.start()
        let actions = pair.client.connectionClosed()
        guard case .failed(let error)? = actions.first else {
            Issue.record("expected a failure, got \(actions)")
            return
        }
        #expect(error.kind == .protocolViolation)
    }

    @Test("hostile input: random bytes at the responder never establish, never crash", arguments: 0..<4)
    func garbage(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        for round in 0..<500 {
            var upgrade = ConnectionUpgrade(
                configuration: .init(role: .responder, identity: Ed25519.PrivateKey(), staticKey: X25519.PrivateKey()))
            _ = upgrade.start(allocator: Self.allocator)
            var input = ByteBuffer()
            // Half the rounds start with a valid multistream header and `/noise` proposal, so the
            // garbage reaches the Noise and muxer stages too.
            if round % 2 == 0 { input.writeBytes(Array("\u{13}/multistream/1.0.0\n\u{07}/noise\n".utf8)) }
            let count = Int.random(in: 0...300, using: &generator)
            input.writeBytes((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let actions = upgrade.receive(&input, now: Self.t0, allocator: Self.allocator)
            for action in actions {
                if case .established = action { Issue.record("garbage established a connection (round \(round))") }
                if case .authenticated = action { Issue.record("garbage authenticated (round \(round))") }
            }
        }
    }

    @Test("rekeying follows the time passed in, not a clock read inside")
    func rekeyOnPassedTime() throws {
        var pair = Pair()
        pair.start()
        pair.run()
        var transport = try #require(pair.clientOutcome.transport)
        var receiver = try #require(pair.serverOutcome.transport)
        var plain = ByteBuffer(string: "a")
        let first = try transport.seal(&plain, now: Self.t0, allocator: Self.allocator)
        #expect(transport.rekeysSent == 0)
        // Ten minutes (the default interval) later by the caller's clock: the next seal rekeys.
        plain = ByteBuffer(string: "b")
        let second = try transport.seal(&plain, now: Self.t0 + .minutes(10), allocator: Self.allocator)
        #expect(transport.rekeysSent == 1)
        var opened: [String] = []
        for var sealed in [first, second] {
            while let frame = SecureTransport.readFrame(&sealed) {
                if let bytes = try receiver.open(frame, allocator: Self.allocator) { opened.append(String(buffer: bytes)) }
            }
        }
        #expect(opened == ["a", "b"])
        #expect(receiver.rekeysReceived == 1)
    }
}

