import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOEmbedded
import Testing

@testable import Network
@testable import Session

/// Liveness (issue #10, finding 1): identify and protocol negotiation have deadlines, a silent
/// stream does not keep a connection busy, and protected peers keep their connections. Hostile
/// peers are `RawYamuxPeer`s (HostileNetworkTests.swift) over real loopback TCP; every timeout is
/// configured short and the tests wait for the node's GoAway, RST or close, never for a time.
@Suite("Host liveness: identify and negotiation deadlines, idleness, protection", .serialized)
struct LivenessTests {
    @Test(
        "a connection whose identify never completes and whose stream carries no data is closed at the identify deadline",
        .timeLimit(.minutes(1)))
    func identifyNeverCompletes() async throws {
        try await TestNetwork.run(configure: { $0.identifyTimeout = .seconds(2) }) { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            // A ping stream, agreed and then silent; the node's identify stream is never answered.
            // (On a loaded machine the deadline may pass before the stream is agreed: then the close
            // came first, which the log line below still attributes.)
            _ = try? await peer.openStream(1, protocolID: Ping.protocolID)
            _ = try await peer.readFrames(within: .seconds(30)) { $0.type == .goAway }
            try await peer.raw.waitForClose(within: .seconds(30))
            let goAway = peer.received.first { $0.type == .goAway }
            #expect(goAway.map { YamuxFrame.GoAwayCode(rawValue: $0.length) } == .normal)
            #expect(
                net.log.lines(containing: "identify did not complete within 2000 ms").count == 1,
                "node log:\n\(net.log)")
            // That an honest peer's connection stays is `identifyCompletionCancelsDeadline` below,
            // on virtual time: here the 2 s deadline would apply to it too, and a loaded machine
            // can take longer than that to identify an honest peer.
        }
    }

    @Test(
        "identify completing cancels the identify deadline; without it the connection closes at the deadline, not before"
    )
    func identifyCompletionCancelsDeadline() throws {
        for completes in [false, true] {
            let loop = EmbeddedEventLoop()
            let connection = Connection(
                id: 1, direction: .inbound,
                transport: TransportChannelInfo(path: .direct, remoteAddress: nil, remoteIP: nil), eventLoop: loop,
                host: nil, configuration: YamuxConfiguration(),
                liveness: ConnectionLiveness(streamQuietPeriod: .seconds(30), idleTimeout: nil),
                identifyTimeout: .seconds(2), logger: Logger(label: "test"))
            let channel = EmbeddedChannel(handler: connection, loop: loop)
            let peer = Ed25519.PrivateKey().publicKey
            channel.pipeline.fireUserInboundEventTriggered(
                SecureConnectionEvent.established(
                    .init(remotePeer: PeerID(publicKey: peer), remoteIdentity: peer, muxer: "/yamux/1.0.0")))
            loop.advanceTime(by: .milliseconds(1999))
            #expect(!connection.isClosing, "closed before the identify deadline")
            if completes { connection.identifyCompleted() }
            loop.advanceTime(by: .seconds(10))
            #expect(connection.isClosing == !completes, "identify completed: \(completes)")
            _ = try? channel.finish()
        }
    }

    @Test(
        "an inbound stream that never finishes protocol negotiation is reset; the connection stays",
        .timeLimit(.minutes(1)))
    func inboundNegotiationDeadline() async throws {
        try await TestNetwork.run(configure: { $0.streamNegotiationTimeout = .milliseconds(500) }) { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            // The multistream header, and never a protocol.
            var header = ByteBuffer()
            header.writeMultistreamMessage(MultistreamMessage.protocolID)
            try await peer.send([.windowUpdate(1, delta: 0, flags: .syn), .data(1, header)])
            let reset = try await peer.readFrames(within: .seconds(10)) { $0.streamID == 1 && $0.flags.contains(.rst) }
            #expect(reset != nil)
            try await peer.ping()
            #expect(net.victim.connection(to: peer.peerID) != nil)
        }
    }

    @Test("an outbound stream the peer never answers is reset and the caller gets a timeout", .timeLimit(.minutes(1)))
    func outboundNegotiationDeadline() async throws {
        try await TestNetwork.run(configure: { $0.streamNegotiationTimeout = .milliseconds(500) }) { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            try await peer.ping()
            let connection = try #require(net.victim.connection(to: peer.peerID))
            let attempt = Task {
                try await net.victim.newStream(on: connection, protocols: ["/agentd-test/unanswered/1.0.0"])
            }
            // Read (and so answer pings) while the node waits for an answer that never comes.
            let reset = try await peer.readFrames(within: .seconds(10)) {
                $0.flags.contains(.rst) && !$0.streamID.isClientInitiated
            }
            #expect(reset != nil, "the node did not reset the stream")
            switch await attempt.result {
            case .success: Issue.record("negotiation with a silent peer succeeded")
            case .failure(let error): #expect((error as? NetworkError)?.kind == .timeout, "\(error)")
            }
        }
    }

    @Test(
        "our identify to a peer that agrees the protocol and never answers gives up and resets the stream",
        .timeLimit(.minutes(1)))
    func ownIdentifyGivesUp() async throws {
        try await TestNetwork.run(configure: { $0.identifyStreamTimeout = .milliseconds(500) }) { net in
            let peer = try await RawYamuxPeer.connect(to: net)
            // Negotiation completes (so its own deadline does not apply); the response never comes.
            let id = try await peer.acceptStream(proposing: Identify.protocolID)
            let reset = try await peer.readFrames(within: .seconds(10)) { $0.streamID == id && $0.flags.contains(.rst) }
            #expect(reset != nil)
            // The connection itself stays until the (default, 30 s) identify deadline.
            try await peer.ping()
        }
    }

    @Test(
        "an identify exchange that timed out is tried again on a new stream; answering that one completes identify",
        .timeLimit(.minutes(1)))
    func identifyTriedAgainAfterTimeout() async throws {
        try await TestNetwork.run(configure: { $0.identifyStreamTimeout = .milliseconds(500) }) { net in
            let events = net.victim.events(label: "test")
            let peer = try await RawYamuxPeer.connect(to: net)
            // The first exchange is agreed and never answered: the node resets it at its deadline.
            let first = try await peer.acceptStream(proposing: Identify.protocolID)
            let reset = try await peer.readFrames(within: .seconds(10)) { $0.streamID == first && $0.flags.contains(.rst) }
            #expect(reset != nil)
            // The node asks again (a slow answer once does not doom the connection to the identify
            // deadline); the answer to the second stream completes identify.
            try await peer.completeIdentify(observing: events)
            #expect(net.victim.connection(to: peer.peerID) != nil)
            #expect(net.log.lines(containing: "identify did not complete").isEmpty)
        }
    }

    @Test("identify is tried again after a timeout or a reset, never after a wrong answer, a refusal or a closed connection")
    func identifyNotRetriedAfterWrongAnswer() {
        #expect(Identify.isWorthRetrying(NetworkError(.timeout, "identify did not finish within 10000 ms")))
        #expect(Identify.isWorthRetrying(SessionError(.streamReset, "stream 2 was reset by the peer")))
        #expect(!Identify.isWorthRetrying(NetworkError(.protocolViolation, "identify message is not a valid protobuf")))
        #expect(!Identify.isWorthRetrying(NetworkError(.protocolNotSupported, "peer supports none of /ipfs/id/1.0.0")))
        #expect(!Identify.isWorthRetrying(NetworkError(.connectionClosed, "connection is closed")))
    }

    @Test("a stream that stays silent does not keep its connection from the idle timeout", .timeLimit(.minutes(1)))
    func silentStreamDoesNotKeepConnection() async throws {
        try await TestNetwork.run(configure: {
            $0.idleTimeout = .seconds(1)
            $0.streamQuietPeriod = .seconds(1)
        }) { net in
            let good = net.makeGoodHost()
            // Protected until the silent stream is open: on a loaded machine setting up can take
            // longer than the 1 s idle timeout, which would close the connection before the test.
            net.victim.protect(good.peerID, tag: "setup")
            let onVictim = try await net.connectSettled(good)
            let stream = try await good.newStream(to: net.victim.peerID, protocols: [Ping.protocolID])
            // The victim's ping handler waits on the stream, which never carries a ping.
            #expect(try await onVictim.eventLoop.submit { onVictim.info()?.streams }.get() == 1)
            #expect(!net.victim.unprotect(good.peerID, tag: "setup"))
            let closed = await HostCore.wait(for: onVictim.closeFuture, timeout: .seconds(15))
            #expect(closed, "a connection with a silent ping stream was never closed as idle")
            stream.reset()
        }
    }

    @Test(
        "a protected idle connection survives the idle timeout while unprotected ones are closed",
        .timeLimit(.minutes(1)))
    func protectionAgainstIdleTimeout() async throws {
        try await TestNetwork.run(configure: { $0.idleTimeout = .seconds(1) }) { net in
            let kept = net.makeGoodHost()
            net.victim.protect(kept.peerID, tag: "test")
            let keptOnVictim = try await net.connectSettled(kept)
            // Two unprotected peers, the second connected after the first was closed: by the time
            // the second closes, `kept` has been idle longer than the timeout plus one tick (ticks
            // come each second), so without protection its own tick would have closed it.
            for _ in 0..<2 {
                let droppedOnVictim = try await net.connectSettled(net.makeGoodHost())
                #expect(await HostCore.wait(for: droppedOnVictim.closeFuture, timeout: .seconds(15)))
            }
            #expect(!keptOnVictim.isClosing)
            #expect(net.victim.isProtected(kept.peerID, tag: "test"))
            // Unprotected, it goes like the others.
            #expect(!net.victim.unprotect(kept.peerID, tag: "test"))
            #expect(await HostCore.wait(for: keptOnVictim.closeFuture, timeout: .seconds(15)))
        }
    }

    @Test("trimming closes idle unprotected connections and keeps protected ones", .timeLimit(.minutes(1)))
    func protectionAgainstTrimming() async throws {
        try await TestNetwork.run(configure: {
            $0.connectionLowWater = 0
            $0.connectionHighWater = 100  // trims only when the test asks
            $0.connectionGracePeriod = .zero
        }) { net in
            let kept = net.makeGoodHost()
            let dropped = net.makeGoodHost()
            net.victim.protect(kept.peerID, tag: "relay")
            net.victim.protect(kept.peerID, tag: "conversation")
            let keptOnVictim = try await net.connectSettled(kept)
            let droppedOnVictim = try await net.connectSettled(dropped)
            #expect(await net.victim.core.trim() == 1)
            try await droppedOnVictim.closeFuture.get()
            #expect(!keptOnVictim.isClosing)
            // One tag removed: still protected by the other.
            #expect(net.victim.unprotect(kept.peerID, tag: "relay"))
            #expect(await net.victim.core.trim() == 0)
            #expect(!net.victim.unprotect(kept.peerID, tag: "conversation"))
            #expect(await net.victim.core.trim() == 1)
            try await keptOnVictim.closeFuture.get()
        }
    }

    // MARK: The rules, on virtual time

    @Test("idleness: no stream, or no stream frame for the quiet period; the idle timeout waits for both")
    func livenessRules() {
        let rules = ConnectionLiveness(streamQuietPeriod: .seconds(30), idleTimeout: .seconds(300))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        #expect(rules.isIdle(streams: 0, lastStreamTraffic: start, now: start))
        #expect(!rules.isIdle(streams: 2, lastStreamTraffic: start, now: start + .seconds(29)))
        #expect(rules.isIdle(streams: 2, lastStreamTraffic: start, now: start + .seconds(30)))
        #expect(!rules.idleTimeoutExpired(streams: 0, lastStreamTraffic: start, now: start + .seconds(299)))
        #expect(rules.idleTimeoutExpired(streams: 0, lastStreamTraffic: start, now: start + .seconds(300)))
        #expect(rules.idleTimeoutExpired(streams: 3, lastStreamTraffic: start, now: start + .seconds(300)))
        let short = ConnectionLiveness(streamQuietPeriod: .seconds(30), idleTimeout: .seconds(2))
        #expect(short.idleTimeoutExpired(streams: 0, lastStreamTraffic: start, now: start + .seconds(2)))
        #expect(!short.idleTimeoutExpired(streams: 1, lastStreamTraffic: start, now: start + .seconds(29)))
        #expect(short.idleTimeoutExpired(streams: 1, lastStreamTraffic: start, now: start + .seconds(30)))
        let never = ConnectionLiveness(streamQuietPeriod: .seconds(30), idleTimeout: nil)
        #expect(!never.idleTimeoutExpired(streams: 0, lastStreamTraffic: start, now: start + .hours(100)))
    }

    @Test("protection tags: a peer stays protected while any tag holds")
    func protectionTags() {
        var protection = ConnectionProtection()
        let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        #expect(!protection.isProtected(peer))
        protection.protect(peer, tag: "a")
        protection.protect(peer, tag: "b")
        #expect(protection.isProtected(peer) && protection.isProtected(peer, tag: "a"))
        #expect(!protection.isProtected(peer, tag: "c"))
        let stillProtected = protection.unprotect(peer, tag: "a")
        #expect(stillProtected)
        #expect(!protection.isProtected(peer, tag: "a") && protection.isProtected(peer))
        let lastTagGone = !protection.unprotect(peer, tag: "b")
        #expect(lastTagGone)
        #expect(!protection.isProtected(peer))
        let unknownTag = protection.unprotect(peer, tag: "b")
        #expect(!unknownTag)
    }
}

extension TestNetwork {
    /// Connects `host` to the victim and returns the victim's side of the connection, once the
    /// victim has registered it (a ping answered) and its streams (identify, the ping) are gone.
    func connectSettled(_ host: Network.Host) async throws -> Connection {
        _ = try await host.connect(to: address)
        _ = try await Ping.ping(host, peer: victim.peerID)
        let connection = try #require(victim.connection(to: host.peerID))
        #expect(try await HostTests.settledStreamCount(connection) == 0)
        return connection
    }
}

extension RawYamuxPeer {
    /// Waits for the node to open a stream proposing `protocolID`, acknowledges it and agrees the
    /// protocol; returns the stream's id.
    func acceptStream(proposing protocolID: String, within timeout: TimeAmount = .seconds(10)) async throws
        -> YamuxStreamID
    {
        var opening: [YamuxStreamID: ByteBuffer] = [:]
        let proposal = try #require(
            try await readFrames(within: timeout) { frame in
                guard frame.type == .data, !frame.streamID.isClientInitiated else { return false }
                var payload = frame.payload
                opening[frame.streamID, default: ByteBuffer()].writeBuffer(&payload)
                var received = opening[frame.streamID]!
                guard let header = try? received.readMultistreamMessage(),
                    let proposed = try? received.readMultistreamMessage()
                else { return false }
                return header == MultistreamMessage.protocolID && proposed == protocolID
            }, "the node opened no stream proposing \(protocolID)")
        var answer = ByteBuffer()
        answer.writeMultistreamMessage(MultistreamMessage.protocolID)
        answer.writeMultistreamMessage(protocolID)
        try await send([.windowUpdate(proposal.streamID, delta: 0, flags: .ack), .data(proposal.streamID, answer)])
        return proposal.streamID
    }
}
