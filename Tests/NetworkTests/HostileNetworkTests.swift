import AgentTesting
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network
@testable import Session

/// A host under attack over real TCP on 127.0.0.1. Each hostile peer must lose its connection, with
/// the reason in the node's log; the node must hold no more than its limits allow; and afterwards an
/// honest peer must still connect and ping it.
///
/// Serialized: several cases measure time (a deadline, a stall) and share two CPUs with the build.
@Suite("Host under attack: hostile peers over loopback TCP", .serialized)
struct HostileNetworkTests {
    // MARK: 1. Bytes that are not multistream-select

    /// Junk a scanner or a confused client sends first.
    enum Junk: String, CaseIterable, Sendable {
        case httpRequest = "an HTTP request"
        case tlsClientHello = "a TLS ClientHello"
        case randomBytes = "1 KiB of random bytes (seed 17)"
        case otherMultistreamVersion = "a multistream header of another version"

        var bytes: ByteBuffer {
            switch self {
            case .httpRequest:
                // 'G' reads as a 71-byte length: the request must be that long for the node to judge it
                // at once (a shorter one waits, like any partial message, for the handshake deadline).
                return ByteBuffer(
                    string: "GET / HTTP/1.1\r\nHost: 127.0.0.1:4001\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n")
            case .tlsClientHello:
                return ByteBuffer(
                    bytes: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]
                        + [UInt8](repeating: 0x42, count: 64))
            case .randomBytes:
                var generator = SeededGenerator(seed: 17)
                return ByteBuffer(bytes: generator.bytes(1024))
            case .otherMultistreamVersion:
                var buffer = ByteBuffer()
                buffer.writeMultistreamMessage("/multistream/2.0.0")
                return buffer
            }
        }
    }

    @Test(
        "junk instead of multistream-select is closed for it, with the reason, before the handshake deadline", .timeLimit(.minutes(1)),
        arguments: Junk.allCases)
    func junk(_ junk: Junk) async throws {
        try await TestNetwork.run(configure: { $0.handshakeTimeout = .seconds(30) }) { net in
            let peer = try await RawPeer.connect(to: net)
            try await peer.send(junk.bytes)
            // The node refused the bytes themselves: closed with a multistream reason (below), and
            // before the 30 s handshake deadline could have done it (10 s of margin for a loaded
            // machine: the reason, not the time, tells the two apart).
            let lifetime = try await peer.waitForClose(within: .seconds(20))
            #expect(lifetime < .seconds(20))
            let reasons = net.log.lines(containing: "connection error:")
            #expect(reasons.count == 1, "node log:\n\(net.log)")
            #expect(reasons.allSatisfy { $0.message.contains("multistream") }, "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test("a 10 MB multistream line is refused at its length prefix, before the body", .timeLimit(.minutes(1)))
    func hugeLine() async throws {
        try await TestNetwork.run(configure: { $0.handshakeTimeout = .seconds(30) }) { net in
            let peer = try await RawPeer.connect(to: net)
            var prefix = ByteBuffer()
            prefix.writeUVarint(10_000_000)
            try await peer.send(prefix)
            // Only the 4-byte prefix was sent: the node decided on it alone, before the 30 s
            // deadline (the log line below names the prefix as the reason), and never waited for
            // (or buffered) any of the body.
            try await peer.waitForClose(within: .seconds(20))

            // As an attacker sends it, the body right behind the prefix: the node does not take the
            // 10 MB, it resets the connection with them unread.
            let second = try await RawPeer.connect(to: net)
            var line = ByteBuffer()
            line.writeUVarint(10_000_000)
            line.writeRepeatingByte(UInt8(ascii: "a"), count: 10_000_000)
            await #expect(throws: (any Error).self, "the node took all of the 10 MB line") {
                try await second.send(line)
            }
            try await second.waitForClose(within: .seconds(20))

            #expect(
                net.log.lines(containing: "connection error:", "10000000 bytes is over the 1024-byte limit").count == 2,
                "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    // MARK: 2. Handshakes that never end

    /// How far a stalling peer gets before it stops sending.
    enum Stall: String, CaseIterable, Sendable {
        case silent = "connects and sends nothing"
        case afterHeader = "sends the multistream header only"
        case afterNoiseProposal = "sends the header and /noise"
        case afterFirstNoiseMessage = "sends the first Noise message and no third"
    }

    @Test(
        "a handshake that stalls is cut at the handshake deadline", .timeLimit(.minutes(1)), arguments: Stall.allCases)
    func stalledHandshake(_ stall: Stall) async throws {
        let deadline = TimeAmount.milliseconds(800)
        try await TestNetwork.run(configure: { $0.handshakeTimeout = deadline }) { net in
            let peer = try await RawPeer.connect(to: net)
            var bytes = ByteBuffer()
            if stall != .silent { bytes.writeMultistreamMessage(MultistreamMessage.protocolID) }
            if stall == .afterNoiseProposal || stall == .afterFirstNoiseMessage {
                bytes.writeMultistreamMessage(SecureConnectionHandler.noiseProtocolID)
            }
            if stall == .afterFirstNoiseMessage {
                var noise = NoiseHandshakeState(role: .initiator, localStatic: X25519.PrivateKey())
                bytes.writeNoiseFrame(try noise.writeMessage(payload: []))
            }
            try await peer.send(bytes)
            // The log line below proves that the 800 ms deadline cut the handshake; the lifetime
            // only has to fall short of the default 10 s deadline (a loaded machine runs the timer
            // late, never early). It runs from before our connect, so it is never shorter than the
            // node's view however late this task ran; the 200 ms allow for the clocks' granularity.
            let lifetime = try await peer.waitForClose(within: .seconds(9))
            #expect(lifetime >= .milliseconds(deadline.nanoseconds / 1_000_000) - .milliseconds(200))
            #expect(lifetime < .seconds(9))
            #expect(
                net.log.lines(containing: "connection error:", "did not finish within 800 ms").count == 1,
                "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test(
        "200 half-open handshakes: the pending-handshake limit refuses the excess; slots come back at the deadline",
        .timeLimit(.minutes(1)))
    func handshakeFlood() async throws {
        // Long enough that 200 sockets connect within it on a loaded machine.
        let deadline = TimeAmount.seconds(8)
        try await TestNetwork.run(configure: { $0.handshakeTimeout = deadline }) { net in
            // Every socket comes from 127.0.0.1: the per-IP limit is the one that refuses.
            let limit = net.victim.core.configuration.limits.ipPendingHandshakes
            var opening = ByteBuffer()
            opening.writeMultistreamMessage(MultistreamMessage.protocolID)
            opening.writeMultistreamMessage(SecureConnectionHandler.noiseProtocolID)

            /// Opens `count` half-open handshakes; returns those the node admitted (it answered with
            /// its header) after checking that the others were closed without a byte.
            func flood(_ count: Int) async throws -> [RawPeer] {
                var peers: [RawPeer] = []
                for _ in 0..<count {
                    let peer = try await RawPeer.connect(to: net)
                    try? await peer.send(opening)
                    peers.append(peer)
                }
                var admitted: [RawPeer] = []
                for peer in peers {
                    // The node writes its header on accepting, and closes a refused socket at once.
                    if try await peer.readMultistreamMessage(within: .seconds(5)) == MultistreamMessage.protocolID {
                        admitted.append(peer)
                    } else {
                        #expect(peer.buffer.readableBytes == 0)
                    }
                }
                return admitted
            }

            let firstWave = try await flood(200)
            #expect(firstWave.count == limit)
            // Each refusal is counted; the log has one line for them all (rate-limited).
            #expect(net.victim.resources.refusals(.ipPendingHandshakes) == 200 - limit)
            #expect(net.log.lines(containing: "refused inbound connection").count == 1, "node log:\n\(net.log)")

            // While the slots are taken, an honest peer is refused too: the limit does not queue.
            let early = net.makeGoodHost()
            await #expect(throws: (any Error).self, "an honest peer got in past a full handshake limit") {
                _ = try await early.connect(to: net.address)
            }
            #expect(net.victim.resources.refusals(.ipPendingHandshakes) == 200 - limit + 1)

            for peer in firstWave {
                let lifetime = try await peer.waitForClose(within: deadline + .seconds(5))
                #expect(lifetime >= .milliseconds(deadline.nanoseconds / 1_000_000) - .milliseconds(200))
            }
            #expect(net.log.lines(containing: "did not finish within 8000 ms").count == limit, "node log:\n\(net.log)")

            // Every slot came back: another wave gets exactly `limit` admissions again.
            let secondWave = try await flood(limit + 1)
            #expect(secondWave.count == limit)
            for peer in secondWave { _ = try await peer.waitForClose(within: deadline + .seconds(5)) }
            await net.expectGoodPeerServed()
        }
    }

    // MARK: 3. Noise payloads that do not bind the static key to the identity

    enum NoiseForgery: String, CaseIterable, Sendable {
        /// Control: a correct payload, so that the driver is known to be right.
        case none = "an honest payload (control)"
        case signatureOverAnotherStaticKey = "a signature over another Noise static key"
        case signatureByAnotherIdentity = "a signature by another identity key"
        case corruptedSignature = "a signature with a flipped bit"
        case missingSignature = "no signature"
    }

    @Test(
        "a Noise payload that does not bind the static key to the identity is refused", .timeLimit(.minutes(1)),
        arguments: NoiseForgery.allCases)
    func forgedNoisePayload(_ forgery: NoiseForgery) async throws {
        try await TestNetwork.run(configure: { $0.handshakeTimeout = .seconds(30) }) { net in
            let peer = try await RawPeer.connect(to: net)
            let identity = Ed25519.PrivateKey()
            let staticKey = X25519.PrivateKey()
            var noise = NoiseHandshakeState(role: .initiator, localStatic: staticKey)
            var opening = ByteBuffer()
            opening.writeMultistreamMessage(MultistreamMessage.protocolID)
            opening.writeMultistreamMessage(SecureConnectionHandler.noiseProtocolID)
            opening.writeNoiseFrame(try noise.writeMessage(payload: []))
            try await peer.send(opening)

            #expect(try await peer.readMultistreamMessage(within: .seconds(5)) == MultistreamMessage.protocolID)
            #expect(
                try await peer.readMultistreamMessage(within: .seconds(5)) == SecureConnectionHandler.noiseProtocolID)
            let second = try #require(try await peer.readNoiseFrame(within: .seconds(5)))
            _ = try noise.readMessage(second)

            var signed = NoiseHandshake.signaturePrefix + staticKey.publicKey.rawRepresentation
            var signer = identity
            switch forgery {
            case .signatureOverAnotherStaticKey:
                signed = NoiseHandshake.signaturePrefix + X25519.PrivateKey().publicKey.rawRepresentation
            case .signatureByAnotherIdentity: signer = Ed25519.PrivateKey()
            case .none, .corruptedSignature, .missingSignature: break
            }
            var signature = signer.signature(for: signed)
            if forgery == .corruptedSignature { signature[17] ^= 0x04 }
            let payload = Self.handshakePayload(
                identityKey: LibP2PPublicKey(identity.publicKey).protobuf,
                signature: forgery == .missingSignature ? nil : signature)
            var third = ByteBuffer()
            third.writeNoiseFrame(try noise.writeMessage(payload: payload))
            try await peer.send(third)

            if forgery == .none {
                // Authenticated: the node goes on to the muxer negotiation, encrypted.
                #expect(try await peer.readNoiseFrame(within: .seconds(5)) != nil)
                #expect(net.log.lines(containing: "connection error:").isEmpty, "node log:\n\(net.log)")
            } else {
                _ = try await peer.waitForClose(within: .seconds(3))
                #expect(peer.buffer.readableBytes == 0, "the node sent something to a peer it could not authenticate")
                let reason =
                    forgery == .missingSignature
                    ? "lacks identity_key or identity_sig" : "did not sign its Noise static key"
                #expect(net.log.lines(containing: "connection error:", reason).count == 1, "node log:\n\(net.log)")
            }
            await net.expectGoodPeerServed()
        }
    }

    /// `NoiseHandshakePayload` by hand (proto2: field 1 `identity_key`, field 2 `identity_sig`, both
    /// length-delimited), so that any field can be wrong or missing.
    static func handshakePayload(identityKey: [UInt8], signature: [UInt8]?) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1 << 3 | 2))
        buffer.writeUVarint(UInt64(identityKey.count))
        buffer.writeBytes(identityKey)
        if let signature {
            buffer.writeInteger(UInt8(2 << 3 | 2))
            buffer.writeUVarint(UInt64(signature.count))
            buffer.writeBytes(signature)
        }
        return Array(buffer.readableBytesView)
    }

    // MARK: 4. yamux abuse after a successful upgrade

    /// Frames no correct peer sends, with what the node must log about each.
    enum BadFrame: String, CaseIterable, Sendable {
        case dataForUnopenedStream = "data for a stream never opened"
        case windowUpdateForUnopenedStream = "a window update for a stream never opened"
        case synWithServerParity = "a SYN with the node's (even) parity"
        case synAndAck = "a frame with both SYN and ACK"
        case pingOnStream = "a ping on a stream instead of 0"
        case unknownType = "an unknown frame type"
        case unknownVersion = "yamux version 1"

        var bytes: ByteBuffer {
            var buffer = ByteBuffer()
            switch self {
            case .dataForUnopenedStream: buffer.writeYamuxFrame(.data(1, ByteBuffer(string: "x")))
            case .windowUpdateForUnopenedStream: buffer.writeYamuxFrame(.windowUpdate(3, delta: 1024))
            case .synWithServerParity: buffer.writeYamuxFrame(.windowUpdate(100, delta: 0, flags: .syn))
            case .synAndAck: buffer.writeYamuxFrame(.windowUpdate(5, delta: 0, flags: [.syn, .ack]))
            case .pingOnStream:
                buffer.writeYamuxFrame(YamuxFrame(type: .ping, flags: .syn, streamID: 7, length: 1))
            case .unknownType: buffer.writeYamuxHeader(version: 0, type: 7, flags: 0, streamID: 1, length: 0)
            case .unknownVersion: buffer.writeYamuxHeader(version: 1, type: 0, flags: 1, streamID: 1, length: 0)
            }
            return buffer
        }

        var reason: String {
            switch self {
            case .dataForUnopenedStream, .windowUpdateForUnopenedStream: "which was never opened"
            case .synWithServerParity: "opens odd ids only"
            case .synAndAck: "carries both SYN and ACK"
            case .pingOnStream: "pings use stream 0"
            case .unknownType: "unknown type 7"
            case .unknownVersion: "only version 0 exists"
            }
        }
    }

    @Test(
        "a yamux frame the protocol forbids ends the connection with GoAway", .timeLimit(.minutes(1)),
        arguments: BadFrame.allCases)
    func badFrame(_ frame: BadFrame) async throws {
        try await TestNetwork.run { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            try await peer.ping()
            try await peer.send(frame.bytes)
            #expect(try await peer.expectGoAwayAndClose() == .protocolError)
            #expect(net.log.lines(containing: "closing connection:", frame.reason).count == 1, "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test("a window update past 2^32-1 ends the connection; up to it is fine", .timeLimit(.minutes(1)))
    func windowOverflow() async throws {
        try await TestNetwork.run { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            try await peer.send([.windowUpdate(1, delta: 0, flags: .syn)])
            // The node's stream task writes its multistream header, which spends some of the 256 KiB
            // send window; then it waits for us. Bring the window to exactly 2^32-1.
            let header = try #require(try await peer.readFrames { $0.type == .data && $0.streamID == 1 })
            let window = YamuxConfiguration.specInitialWindow - header.length
            try await peer.send([.windowUpdate(1, delta: UInt32.max - window)])
            try await peer.ping()
            try await peer.send([.windowUpdate(1, delta: 1)])
            #expect(try await peer.expectGoAwayAndClose() == .protocolError)
            #expect(
                net.log.lines(containing: "closing connection:", "overflows the window").count == 1,
                "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test(
        "data up to the window is held for a handler that does not read; one byte more ends the connection",
        .timeLimit(.minutes(1)))
    func dataBeyondWindow() async throws {
        try await TestNetwork.run { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            let negotiation = try await peer.openStream(1, protocolID: TestNetwork.sinkProtocolID)
            let window = Int(YamuxConfiguration.specInitialWindow)
            try await peer.sendData(on: 1, count: window - negotiation)
            try await peer.ping()
            // The sink read nothing, so the node owes no credit: it must not have granted any.
            #expect(!peer.received.contains { $0.type == .windowUpdate && $0.streamID == 1 && $0.length > 0 })
            let connection = try #require(net.victim.connection(to: peer.peerID))
            let held = try #require(try await connection.diagnosticBufferedInboundBytes()[1])
            #expect(held == window - negotiation)

            try await peer.sendData(on: 1, count: 1)
            #expect(try await peer.expectGoAwayAndClose() == .protocolError)
            #expect(
                net.log.lines(containing: "closing connection:", "window allows").count == 1,
                "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test(
        "10,000 SYNs: the node accepts up to its stream limit and window budget, resets the rest, and keeps answering",
        .timeLimit(.minutes(2)))
    func synFlood() async throws {
        try await TestNetwork.run { net in
            // Whichever binds first: the stream limit, or the initial windows the budget holds.
            let yamux = net.victim.core.yamuxConfiguration
            let limit = min(
                yamux.maximumStreams, yamux.sessionReceiveWindowBudget / Int(yamux.initialReceiveWindow))
            let peer = try await RawYamuxPeer.connect(to: net)
            let count = 10_000
            let ids = (0..<count).map { YamuxStreamID(UInt32(2 * $0 + 1)) }
            try await peer.send(ids.map { .windowUpdate($0, delta: 0, flags: .syn) })

            var accepted = Set<YamuxStreamID>()
            var refused = Set<YamuxStreamID>()
            _ = try #require(
                try await peer.readFrames(within: .seconds(60)) { frame in
                    if frame.streamID.isClientInitiated && frame.type == .windowUpdate {
                        if frame.flags.contains(.ack) { accepted.insert(frame.streamID) }
                        if frame.flags.contains(.rst) { refused.insert(frame.streamID) }
                    }
                    return accepted.count + refused.count == count
                }, "the node closed the connection during the SYN flood; log:\n\(net.log)")
            #expect(accepted.count <= limit)
            #expect(accepted.count >= limit - 1)  // the node's own identify stream may hold one slot
            #expect(accepted.isDisjoint(with: refused))
            #expect(refused.count == count - accepted.count)

            // Still answering on this connection, which is still up, and not over its stream limit.
            try await peer.ping()
            let info = try #require(await net.victim.connections().first { $0.remotePeer == peer.peerID })
            #expect(info.streams <= limit)
            #expect(net.log.lines(containing: "closing connection:").isEmpty, "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test(
        "a peer that floods pings and never reads the answers is cut at the owed-frame limit", .timeLimit(.minutes(2)))
    func pingFloodWithoutReading() async throws {
        try await TestNetwork.run { net in
            let owedLimit = net.victim.core.configuration.yamux.maximumPendingControlFrames
            let events = net.victim.events(label: "test")
            let peer = try await RawYamuxPeer.connect(to: net)
            // The peer identifies first: on a loaded machine the flood can outlast the identify
            // deadline, which would then close the connection before the owed-frame limit does.
            try await peer.completeIdentify(observing: events)
            try await peer.ping()
            // From now on nothing is read: the answers fill our socket, then the node's; past that the
            // node must stop holding answers for us instead of queueing them without bound.
            try await peer.raw.channel.setOption(ChannelOptions.autoRead, value: false).get()
            var batch = ByteBuffer()
            for opaque in 0..<10_000 { batch.writeYamuxFrame(.ping(opaque: UInt32(opaque), ack: false)) }
            var sent = 0
            while sent < 3_000_000, net.log.lines(containing: "closing connection:").isEmpty {
                do {
                    try await peer.send(batch)
                } catch {
                    break  // the node closed the connection
                }
                sent += 10_000
            }
            // Read again (unless a failed write already closed our side): whatever answers made it out,
            // then the end. The GoAway may be lost behind the backlog.
            try? await peer.raw.channel.setOption(ChannelOptions.autoRead, value: true).get()
            _ = try await peer.readFrames(within: .seconds(30)) { $0.type == .goAway }
            try await peer.raw.waitForClose(within: .seconds(30))
            #expect(
                net.log.lines(containing: "closing connection:", "provoked \(owedLimit) yamux frames").count == 1,
                "after \(sent) pings; node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    @Test(
        "a data frame over the frame size limit is refused at its header", .timeLimit(.minutes(1)),
        arguments: [UInt32(1 << 20) + 1, UInt32(16 << 20) + 1, UInt32.max])
    func oversizeFrame(_ length: UInt32) async throws {
        try await TestNetwork.run { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            try await peer.ping()
            var header = ByteBuffer()
            header.writeYamuxHeader(
                version: 0, type: YamuxFrame.FrameType.data.rawValue, flags: 1, streamID: 1, length: length)
            try await peer.send(header)
            #expect(try await peer.expectGoAwayAndClose(within: .seconds(3)) == .protocolError)
            #expect(
                net.log.lines(containing: "closing connection:", "announces \(length) bytes").count == 1,
                "node log:\n\(net.log)")
            await net.expectGoodPeerServed()
        }
    }

    /// `YamuxSession.receive(bytes:now:)` refuses such a frame from its header (`receiveWindowLimit`);
    /// the host must not wait for, and buffer, a payload it will refuse anyway.
    @Test(
        "a data frame larger than the stream's window is refused at its header, not buffered",
        .timeLimit(.minutes(1)), arguments: [UInt32(256 * 1024 + 1), UInt32(1 << 20)])
    func frameOverWindow(_ length: UInt32) async throws {
        try await TestNetwork.run { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            try await peer.ping()
            var header = ByteBuffer()
            // A new stream's window is the spec's 256 KiB.
            header.writeYamuxHeader(
                version: 0, type: YamuxFrame.FrameType.data.rawValue, flags: 1, streamID: 1, length: length)
            header.writeRepeatingByte(0, count: 1024)
            try await peer.send(header)
            do {
                #expect(try await peer.expectGoAwayAndClose(within: .seconds(3)) == .protocolError)
            } catch RawPeerError.timedOut {
                Issue.record(
                    "the node still waits for (and buffers) the payload of a \(length)-byte frame on a stream whose window is 256 KiB"
                )
            }
            await net.expectGoodPeerServed()
        }
    }

    // MARK: 5. A handler that never reads

    @Test(
        "a writer to a handler that never reads stalls at window + queue; the node holds at most the window",
        .timeLimit(.minutes(1)))
    func neverReadingHandler() async throws {
        try await TestNetwork.run { net in
            let writer = net.makeGoodHost()
            let connection = try await writer.connect(to: net.address)
            let stream = try await writer.newStream(on: connection, protocols: [TestNetwork.sinkProtocolID])
            let total = 20 * 1024 * 1024
            let chunk = ByteBuffer(repeating: 7, count: 64 * 1024)
            let written = NIOLockedValueBox(0)
            let writing = Task {
                for _ in 0..<(total / chunk.readableBytes) {
                    try await stream.write(chunk)
                    written.withLockedValue { $0 += chunk.readableBytes }
                }
            }

            try await Task.sleep(for: .seconds(1.5))
            let stalledAt = written.withLockedValue { $0 }
            try await Task.sleep(for: .seconds(0.5))
            #expect(written.withLockedValue { $0 } == stalledAt, "the writer still made progress")
            let window = Int(YamuxConfiguration.specInitialWindow)
            let queue = YamuxConfiguration().maximumQueuedBytesPerStream
            // At most what the window let out plus what the stream's queue holds; and no less than
            // the queue, or the test would not show the stall is at the bound.
            #expect(stalledAt <= window + queue)
            #expect(stalledAt >= queue)

            // The same connection still serves other streams: no head-of-line blocking.
            #expect(try await Ping.ping(writer, peer: net.victim.peerID, count: 3).count == 3)

            let inbound = try #require(net.victim.connection(to: writer.peerID))
            let held = try await inbound.diagnosticBufferedInboundBytes()
            let sinkHeld = held.values.max() ?? 0
            #expect(sinkHeld <= window)
            #expect(sinkHeld >= window - 64, "the node should hold the full window of unread bytes")

            await net.expectGoodPeerServed()
            net.gate.open()
            await writer.shutdown()
            let outcome = await writing.result
            #expect(throws: (any Error).self, "the stalled write finished") { try outcome.get() }
        }
    }

    // MARK: 6. Shutting down with hostile peers still connected

    @Test("shutdown closes connections that are still in the handshake", .timeLimit(.minutes(1)))
    func shutdownClosesPendingHandshakes() async throws {
        try await TestNetwork.run(configure: { $0.handshakeTimeout = .seconds(30) }) { net in
            let peer = try await RawPeer.connect(to: net)
            var opening = ByteBuffer()
            opening.writeMultistreamMessage(MultistreamMessage.protocolID)
            opening.writeMultistreamMessage(SecureConnectionHandler.noiseProtocolID)
            try await peer.send(opening)
            #expect(try await peer.readMultistreamMessage(within: .seconds(5)) == MultistreamMessage.protocolID)
            await net.victim.shutdown()
            do {
                try await peer.waitForClose(within: .seconds(3))
            } catch RawPeerError.timedOut {
                Issue.record(
                    "Host.shutdown() returned with a half-open handshake still connected (until its 30 s deadline)")
            }
        }
    }

    /// Like Ping's handler: it reads until its stream fails, then cleans up on the stream.
    @Test("a handler still running when the host shuts down ends instead of hanging", .timeLimit(.minutes(1)))
    func handlerOutlivesShutdown() async throws {
        let protocolID = "/agentd-test/linger/1.0.0"
        let (finished, finish) = AsyncStream<Void>.makeStream()
        try await TestNetwork.run { net in
            net.victim.handle(protocolID) { stream in
                while (try? await stream.read()) != nil {}
                try? await Task.sleep(for: .milliseconds(300))
                try? await stream.closeWrite()
                finish.yield()
            }
            let good = net.makeGoodHost()
            _ = try await good.connect(to: net.address)
            _ = try await good.newStream(to: net.victim.peerID, protocols: [protocolID])
            await net.victim.shutdown()
        }
        // The host and its event loop group are shut down now.
        let ended = await withTaskGroup(of: Bool.self) { tasks in
            tasks.addTask { await finished.first { _ in true } != nil }
            tasks.addTask {
                try? await Task.sleep(for: .seconds(3))
                return false
            }
            let first = await tasks.next() ?? false
            tasks.cancelAll()
            return first
        }
        #expect(
            ended,
            "the handler's closeWrite() after shutdown never returned: its continuation was dropped with the event loop"
        )
    }
}

// MARK: - The arena

/// The node under attack, what it logged, and every host and socket a test started; `run` shuts all
/// of them down whatever the test's outcome.
final class TestNetwork: Sendable {
    /// A protocol whose handler never reads (it waits for `gate`).
    static let sinkProtocolID = "/agentd-test/sink/1.0.0"

    let group: MultiThreadedEventLoopGroup
    let victim: Host
    /// The victim's listen address with `/p2p/<peer id>`.
    let address: Multiaddr
    let log: LogRecorder
    let gate = Gate()
    private let hosts = NIOLockedValueBox<[Host]>([])
    private let channels = NIOLockedValueBox<[Channel]>([])

    private init(group: MultiThreadedEventLoopGroup, victim: Host, address: Multiaddr, log: LogRecorder) {
        self.group = group
        self.victim = victim
        self.address = address
        self.log = log
    }

    static func run(
        configure: (inout Host.Configuration) -> Void = { _ in }, _ body: (TestNetwork) async throws -> Void
    ) async throws {
        var configuration = Host.Configuration()
        configure(&configuration)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let log = LogRecorder()
        let victim = Host(
            identity: Ed25519.PrivateKey(), group: group, configuration: configuration, logger: log.logger)
        let net: TestNetwork
        do {
            let bound = try await victim.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            net = TestNetwork(
                group: group, victim: victim, address: bound.appending(.p2p(victim.peerID.multihash)), log: log)
        } catch {
            await victim.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        let gate = net.gate
        victim.handle(sinkProtocolID) { _ in await gate.wait() }
        do {
            try await body(net)
        } catch {
            await net.tearDown()
            throw error
        }
        await net.tearDown()
    }

    private func tearDown() async {
        gate.open()
        for channel in channels.withLockedValue({ $0 }) { try? await channel.close() }
        for host in hosts.withLockedValue({ $0 }) { await host.shutdown() }
        await victim.shutdown()
        try? await group.shutdownGracefully()
    }

    /// An honest host (not listening), shut down with the network.
    func makeGoodHost() -> Host {
        let host = Host(
            identity: Ed25519.PrivateKey(), group: group,
            logger: Logger(label: "good") { _ in SwiftLogNoOpLogHandler() })
        hosts.withLockedValue { $0.append(host) }
        return host
    }

    func track(_ channel: Channel) { channels.withLockedValue { $0.append(channel) } }

    /// Every hostile case ends here: a fresh honest peer connects to the victim and pings it.
    func expectGoodPeerServed(sourceLocation: SourceLocation = #_sourceLocation) async {
        let good = makeGoodHost()
        do {
            _ = try await good.connect(to: address)
            let rtts = try await Ping.ping(good, peer: victim.peerID, count: 3)
            #expect(rtts.count == 3, sourceLocation: sourceLocation)
        } catch {
            Issue.record(
                "an honest peer could not connect to and ping the node: \(error)\nnode log:\n\(log)",
                sourceLocation: sourceLocation)
        }
    }
}

/// Suspends callers until `open()`; used by the handler that never reads.
final class Gate: Sendable {
    private let state = NIOLockedValueBox<(isOpen: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLockedValue { state in
                if state.isOpen { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLockedValue { state in
            state.isOpen = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The log lines of one host, kept for assertions.
final class LogRecorder: Sendable, CustomStringConvertible {
    struct Line: Sendable, CustomStringConvertible {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
        var description: String {
            "[\(level)] \(message) "
                + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
    }

    private let box = NIOLockedValueBox<[Line]>([])

    var lines: [Line] { box.withLockedValue { $0 } }

    /// Lines whose message contains every fragment.
    func lines(containing fragments: String...) -> [Line] {
        lines.filter { line in fragments.allSatisfy { line.message.contains($0) } }
    }

    var description: String { lines.map(\.description).joined(separator: "\n") }

    var logger: Logger {
        Logger(label: "agentd.host.victim") { _ in Handler(recorder: self) }
    }

    fileprivate func append(_ line: Line) { box.withLockedValue { $0.append(line) } }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            recorder.append(
                Line(level: event.level, message: event.message.description, metadata: merged.mapValues { "\($0)" }))
        }
    }
}

// MARK: - Raw peers

enum RawPeerError: Error, CustomStringConvertible {
    case timedOut(TimeAmount)
    case closed(String)

    var description: String {
        switch self {
        case .timedOut(let amount): "nothing from the node within \(amount.nanoseconds / 1_000_000) ms"
        case .closed(let waitingFor): "the node closed the connection while we waited for \(waitingFor)"
        }
    }
}

/// Passes what reaches the top of a raw peer's pipeline to an async stream; reports the end of the
/// upgrade when there is one.
private final class InboundRelay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let continuation: AsyncThrowingStream<ByteBuffer, Error>.Continuation
    private var established: EventLoopPromise<Void>?

    init(continuation: AsyncThrowingStream<ByteBuffer, Error>.Continuation, established: EventLoopPromise<Void>?) {
        self.continuation = continuation
        self.established = established
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        continuation.yield(unwrapInboundIn(data))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .established? = event as? SecureConnectionEvent {
            established?.succeed(())
            established = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        established?.fail(error)
        established = nil
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        established?.fail(RawPeerError.closed("the upgrade"))
        established = nil
        continuation.finish()
        context.fireChannelInactive()
    }
}

/// A peer under the test's control byte by byte, over a real TCP connection to the victim; with
/// `secure`, after a real multistream + Noise + yamux-negotiation upgrade (then it reads and writes
/// plaintext and the test speaks yamux itself).
final class RawPeer {
    let channel: Channel
    /// What the node sent that no read has taken yet.
    private(set) var buffer = ByteBuffer()
    private var inbound: AsyncThrowingStream<ByteBuffer, Error>.AsyncIterator
    private let continuation: AsyncThrowingStream<ByteBuffer, Error>.Continuation
    /// Taken before the TCP connect began, so before the node accepted: a lifetime measured from it
    /// is never shorter than what the node's timers saw, however late this task ran.
    private let connectingSince: ContinuousClock.Instant
    private var isClosed = false

    private init(
        channel: Channel, inbound: AsyncThrowingStream<ByteBuffer, Error>,
        continuation: AsyncThrowingStream<ByteBuffer, Error>.Continuation, connectingSince: ContinuousClock.Instant
    ) {
        self.channel = channel
        self.connectingSince = connectingSince
        self.inbound = inbound.makeAsyncIterator()
        self.continuation = continuation
    }

    /// - Parameter source: the local address to connect from (`127.0.0.2`, …: each is a distinct
    ///   remote address for the node's per-IP limits); any when nil.
    static func connect(
        to net: TestNetwork, from source: String? = nil, secure: SecureConnectionHandler.Configuration? = nil
    ) async throws -> RawPeer {
        let (host, port) = try TCPAddress.hostAndPort(of: net.address)
        let connectingSince = ContinuousClock.now
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, Error>.makeStream()
        let established = net.group.next().makePromise(of: Void.self)
        let channel: Channel
        do {
            var bootstrap = ClientBootstrap(group: net.group)
            if let source { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0)) }
            channel = try await bootstrap
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let relay = InboundRelay(
                            continuation: continuation, established: secure == nil ? nil : established)
                        if let secure {
                            try channel.pipeline.syncOperations.addHandlers([
                                SecureConnectionHandler(configuration: secure), relay,
                            ])
                        } else {
                            try channel.pipeline.syncOperations.addHandler(relay)
                        }
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            established.fail(error)
            throw error
        }
        net.track(channel)
        if secure == nil { established.succeed(()) }
        try await established.futureResult.get()
        return RawPeer(channel: channel, inbound: stream, continuation: continuation, connectingSince: connectingSince)
    }

    func send(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes).get()
    }

    /// The next bytes from the node, or `nil` once it closed the connection.
    /// - Throws: `RawPeerError.timedOut` past `deadline` (the connection is then closed).
    private func nextChunk(before deadline: NIODeadline) async throws -> ByteBuffer? {
        if isClosed { return nil }
        let continuation = self.continuation
        let channel = self.channel
        let amount = deadline - .now()
        let timer = channel.eventLoop.scheduleTask(deadline: deadline) {
            continuation.finish(throwing: RawPeerError.timedOut(amount))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        guard let chunk = try await inbound.next() else {
            isClosed = true
            return nil
        }
        return chunk
    }

    /// Reads until `parse` finds what it wants in the bytes received so far; `nil` if the node
    /// closes the connection first.
    func read<Value>(
        within timeout: TimeAmount, _ parse: (inout ByteBuffer) throws -> Value?
    ) async throws -> Value? {
        let deadline = NIODeadline.now() + timeout
        while true {
            if let value = try parse(&buffer) { return value }
            guard var chunk = try await nextChunk(before: deadline) else { return nil }
            buffer.writeBuffer(&chunk)
        }
    }

    /// Waits until the node closes the connection, keeping what it still sends in `buffer`, and
    /// returns how long the connection lived.
    @discardableResult
    func waitForClose(within timeout: TimeAmount) async throws -> Duration {
        let deadline = NIODeadline.now() + timeout
        while var chunk = try await nextChunk(before: deadline) { buffer.writeBuffer(&chunk) }
        return ContinuousClock.now - connectingSince
    }

    func readMultistreamMessage(within timeout: TimeAmount) async throws -> String? {
        try await read(within: timeout) { try $0.readMultistreamMessage() }
    }

    /// One Noise handshake message: `uint16 length ‖ body`.
    func readNoiseFrame(within timeout: TimeAmount) async throws -> [UInt8]? {
        try await read(within: timeout) { buffer in
            SecureConnectionHandler.readFrame(&buffer).map { Array($0.readableBytesView) }
        }
    }
}

/// A peer that completes a correct upgrade (multistream, Noise, yamux) and then writes whatever
/// yamux frames the test wants. It answers the node's keepalive pings while it reads.
final class RawYamuxPeer {
    let raw: RawPeer
    let peerID: PeerID
    /// Every frame the node sent, in order.
    private(set) var received: [YamuxFrame] = []
    private var nextPing: UInt32 = 0x7e57_0000

    private init(raw: RawPeer, peerID: PeerID) {
        self.raw = raw
        self.peerID = peerID
    }

    static func connect(to net: TestNetwork, from source: String? = nil) async throws -> RawYamuxPeer {
        let identity = Ed25519.PrivateKey()
        let raw = try await RawPeer.connect(
            to: net, from: source,
            secure: .init(
                role: .initiator, identity: identity, staticKey: X25519.PrivateKey(), expectedPeer: net.victim.peerID))
        return RawYamuxPeer(raw: raw, peerID: PeerID(publicKey: identity.publicKey))
    }

    func send(_ bytes: ByteBuffer) async throws { try await raw.send(bytes) }

    func send(_ frames: [YamuxFrame]) async throws {
        var buffer = ByteBuffer()
        for frame in frames { buffer.writeYamuxFrame(frame) }
        try await raw.send(buffer)
    }

    /// Sends `count` bytes of data on `stream`, in frames of at most 16 KiB.
    func sendData(on stream: YamuxStreamID, count: Int) async throws {
        var frames: [YamuxFrame] = []
        var remaining = count
        while remaining > 0 {
            let size = min(remaining, 16 * 1024)
            frames.append(.data(stream, ByteBuffer(repeating: 0x5a, count: size)))
            remaining -= size
        }
        try await send(frames)
    }

    /// Reads frames until `done` returns true for one, and returns that one; `nil` if the node closes
    /// the connection first.
    func readFrames(
        within timeout: TimeAmount = .seconds(10), until done: (YamuxFrame) -> Bool
    ) async throws -> YamuxFrame? {
        let deadline = NIODeadline.now() + timeout
        while true {
            let remaining = max(deadline - .now(), .zero)
            guard let frame = try await raw.read(within: remaining, { try $0.readYamuxFrame(maximumPayload: 16 << 20) })
            else { return nil }
            received.append(frame)
            if frame.type == .ping && frame.flags == .syn {
                try? await send([.ping(opaque: frame.length, ack: true)])
            }
            if done(frame) { return frame }
        }
    }

    /// Answers the node's identify with an empty message (every field is optional) and returns
    /// once the node took it (`events`, subscribed before connecting): from then on the identify
    /// deadline no longer applies to this connection.
    func completeIdentify(observing events: AsyncStream<HostEvent>) async throws {
        let id = try await acceptStream(proposing: Identify.protocolID)
        try await send([.data(id, ByteBuffer(), flags: .fin)])
        for await event in events {
            if case .identified(let peer, _, _) = event, peer == peerID { return }
        }
        throw RawPeerError.closed("the node's events, before it took our identify")
    }

    /// Pings the node and waits for the answer: it still reads and answers this connection.
    func ping() async throws {
        nextPing += 1
        let opaque = nextPing
        try await send([.ping(opaque: opaque, ack: false)])
        let answer = try await readFrames { $0.type == .ping && $0.flags == .ack && $0.length == opaque }
        if answer == nil { throw RawPeerError.closed("the answer to ping \(opaque)") }
    }

    /// Opens `stream` and agrees `protocolID` with multistream-select; returns the bytes of data that
    /// took on the stream.
    func openStream(_ stream: YamuxStreamID, protocolID: String) async throws -> Int {
        var negotiation = MultistreamNegotiation(dialerProposing: [protocolID])
        var proposal = ByteBuffer()
        for case .send(var bytes) in negotiation.start() { proposal.writeBuffer(&bytes) }
        let sent = proposal.readableBytes
        try await send([.windowUpdate(stream, delta: 0, flags: .syn), .data(stream, proposal)])
        var answer = ByteBuffer()
        let agreed = try await readFrames { frame in
            guard frame.type == .data, frame.streamID == stream else { return false }
            var payload = frame.payload
            answer.writeBuffer(&payload)
            _ = try? negotiation.receive(&answer)
            return negotiation.negotiatedProtocol != nil
        }
        if agreed == nil { throw RawPeerError.closed("the negotiation of \(protocolID)") }
        return sent
    }

    /// Reads until the node's GoAway, then until it closes the connection; returns the GoAway's code,
    /// or `nil` if the connection closed without one.
    func expectGoAwayAndClose(within timeout: TimeAmount = .seconds(5)) async throws -> YamuxFrame.GoAwayCode? {
        let goAway = try await readFrames(within: timeout) { $0.type == .goAway }
        try await raw.waitForClose(within: timeout)
        return goAway.map { YamuxFrame.GoAwayCode(rawValue: $0.length) }
    }
}

// MARK: - Wire helpers

extension ByteBuffer {
    /// A Noise handshake message as it travels: `uint16 length ‖ body`.
    fileprivate mutating func writeNoiseFrame(_ message: [UInt8]) {
        writeInteger(UInt16(message.count))
        writeBytes(message)
    }

    /// A yamux header with any field, valid or not.
    fileprivate mutating func writeYamuxHeader(
        version: UInt8, type: UInt8, flags: UInt16, streamID: UInt32, length: UInt32
    ) {
        writeInteger(version)
        writeInteger(type)
        writeInteger(flags)
        writeInteger(streamID)
        writeInteger(length)
    }
}
