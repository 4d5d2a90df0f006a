import Identity
import Multiformats
import NIOCore
import Session

/// A `Connection` over QUIC (spec/network.md, "QUIC"): the host's connection object with a
/// `QUICConnectionCore` under it instead of a pipeline with Noise and yamux. Streams, closing,
/// idleness and the registry work as for TCP; everything runs on the QUIC socket's event loop.
extension Connection {
    /// Wires an authenticated QUIC connection to this object: the peer and address become known,
    /// inbound streams go to the host, the close reaches the host, the idle timeout applies. Then
    /// `establishedFuture` succeeds. On the event loop.
    func quicEstablished() {
        eventLoop.assertInEventLoop()
        guard let quic, let peer = quic.peer, !quic.isClosed else {
            quicFailed(NetworkError(.connectionClosed, "the QUIC connection closed right after its handshake"))
            return
        }
        remote.withLockedValue {
            $0.peer = peer
            $0.address = QUICAddress.multiaddr(of: quic.remote)
        }
        quic.establishedAt = .now()
        quic.onClosed = { [self] _ in quicFinished() }
        quic.onStreamOpened = { [self] id in
            host?.acceptStream(RawStream(connection: self, id: YamuxStreamID(UInt32(truncatingIfNeeded: id)), peer: peer, quicID: id), on: self)
        }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        quic.tickTask = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            loopBound.value.quicTick()
        }
        if let identifyTimeout {
            quic.identifyDeadline = eventLoop.scheduleTask(in: identifyTimeout) {
                loopBound.value.quicIdentifyDeadlinePassed(identifyTimeout)
            }
        }
        established.succeed(self)
    }

    /// As over TCP: a peer that did not complete identify within `timeout` is closed.
    private func quicIdentifyDeadlinePassed(_ timeout: TimeAmount) {
        guard let quic, !quic.isClosed, quic.identifyDeadline != nil else { return }
        quic.identifyDeadline = nil
        logger.info(
            "closing connection: identify did not complete within \(timeout.nanoseconds / 1_000_000) ms",
            metadata: ["peer": "\(quic.peer?.description ?? "?")"])
        quic.close()
    }

    /// The QUIC connection failed before it was wired (a refused registration closes it later).
    func quicFailed(_ error: Error) {
        closingFlag.withLockedValue { $0 = true }
        established.fail(error)
        closePromise.succeed(())
    }

    private func quicFinished() {
        quic?.tickTask?.cancel()
        quic?.tickTask = nil
        closingFlag.withLockedValue { $0 = true }
        host?.connectionClosed(self)
        closePromise.succeed(())
    }

    private func quicTick() {
        guard let quic, !quic.isClosed, let peer = remotePeer else { return }
        let now = NIODeadline.now()
        if liveness.idleTimeoutExpired(streams: quic.streams.count, lastStreamTraffic: quic.lastStreamTraffic, now: now),
            !isProtected(peer)
        {
            logger.debug("closing idle QUIC connection", metadata: ["peer": "\(peer)"])
            close()
            return
        }
        if liveness.isIdle(streams: quic.streams.count, lastStreamTraffic: quic.lastStreamTraffic, now: now) {
            host?.trimIfCrowded()
        }
    }

    func openQUICStream() -> EventLoopFuture<RawStream> {
        guard let quic, let peer = remotePeer else {
            return eventLoop.makeFailedFuture(NetworkError(.connectionClosed, "connection is closed"))
        }
        do {
            let id = try quic.openStream()
            return eventLoop.makeSucceededFuture(
                RawStream(connection: self, id: YamuxStreamID(UInt32(truncatingIfNeeded: id)), peer: peer, quicID: id))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    func quicActivity(_ quic: QUICConnectionCore, now: NIODeadline) -> (
        streams: Int, isIdle: Bool, establishedAt: NIODeadline?, lastStreamTraffic: NIODeadline
    ) {
        let isIdle = liveness.isIdle(streams: quic.streams.count, lastStreamTraffic: quic.lastStreamTraffic, now: now)
        return (quic.streams.count, isIdle, quic.establishedAt, quic.lastStreamTraffic)
    }
}
