import Identity
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Session

/// Proves that a peer is reachable at an address: a fresh TCP connection and the first two Noise
/// messages, which authenticate the responder as the peer named in the address; then the
/// connection is closed before our third message. The responder never completes the handshake, so
/// neither side registers a connection (the peer's existing connection to us is left alone).
enum AddressProbe {
    static func probe(_ address: Multiaddr, core: HostCore) async throws {
        guard let multihash = address.peerIDMultihash, let peer = try? PeerID(multihash: multihash) else {
            throw NetworkError(.invalidAddress, "\(address) has no /p2p/<peer id>: the peer to authenticate is unknown")
        }
        guard peer != core.peerID else { throw NetworkError(.invalidAddress, "\(address) is this node itself") }
        if QUICAddress.isQUIC(address) {
            // QUIC: the server's certificate authenticates it; the handshake is aborted before our
            // Finished, so the peer registers no connection (spec/network.md, "QUIC").
            try core.checkNotShutDown()
            _ = try await core.quic.dial(address, peer: peer, on: core.group.next(), authenticateOnly: true).get()
            return
        }
        let (host, port) = try TCPAddress.hostAndPort(of: address)
        try core.checkNotShutDown()
        let eventLoop = core.group.next()
        // The promise is made by the channel initializer, on the channel's loop: a connect that
        // fails (also because the loop group is shutting down) leaves no promise behind that would
        // have to be failed on a loop that no longer runs tasks (NIO traps on a leaked promise).
        let authenticated = NIOLockedValueBox<EventLoopPromise<Void>?>(nil)
        // The probe's channel, and whether the probe was cancelled before the channel existed.
        let probeChannel = NIOLockedValueBox<(channel: Channel?, cancelled: Bool)>((nil, false))
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(core.configuration.dialTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    var configuration = SecureConnectionHandler.Configuration(
                        role: .initiator, identity: core.identity, staticKey: core.staticKey, expectedPeer: peer,
                        handshakeTimeout: core.configuration.handshakeTimeout, rekey: nil,
                        staticKeySignature: core.staticKeySignature)
                    configuration.authenticateOnly = true
                    // Cancelled before the channel existed: no promise is made (one made and never
                    // completed traps in NIO as a leaked promise).
                    let cancelled = probeChannel.withLockedValue { state -> Bool in
                        state.channel = channel
                        return state.cancelled
                    }
                    if cancelled { throw CancellationError() }
                    let promise = channel.eventLoop.makePromise(of: Void.self)
                    authenticated.withLockedValue { $0 = promise }
                    do {
                        try channel.pipeline.syncOperations.addHandlers([
                            SecureConnectionHandler(configuration: configuration),
                            ProbeHandler(promise: promise),
                        ])
                    } catch {
                        // The handler that would complete the promise is not in the pipeline.
                        promise.fail(error)
                        throw error
                    }
                }
            }
        // Cancelled (the host shuts down): the socket is closed, which ends the connect or the
        // handshake at once instead of at their timeouts.
        try await withTaskCancellationHandler {
            try await connectAndAuthenticate(bootstrap, host: host, port: port, address: address, peer: peer, authenticated: authenticated)
        } onCancel: {
            let channel = probeChannel.withLockedValue { state -> Channel? in
                state.cancelled = true
                return state.channel
            }
            channel?.close(promise: nil)
        }
    }

    private static func connectAndAuthenticate(
        _ bootstrap: ClientBootstrap, host: String, port: Int, address: Multiaddr, peer: PeerID,
        authenticated: NIOLockedValueBox<EventLoopPromise<Void>?>
    ) async throws {
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            // A connect that failed after the initializer ran: its pipeline was torn down on the
            // channel's loop, and `ProbeHandler.handlerRemoved` failed the promise there.
            throw NetworkError(
                .connectionFailed, "cannot connect to \(address): \(HostCore.describe(connectError: error))")
        }
        guard let promise = authenticated.withLockedValue({ $0 }) else {
            preconditionFailure("a connected probe channel ran its initializer")
        }
        do {
            try await promise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw NetworkError(.connectionFailed, "\(address) did not authenticate as \(peer): \(error)")
        }
    }

    /// Completes the promise on `.authenticated`; fails it on an error or a close before that.
    private final class ProbeHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<Void>

        init(promise: EventLoopPromise<Void>) {
            self.promise = promise
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .authenticated? = event as? SecureConnectionEvent { promise.succeed() }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(NetworkError(.connectionClosed, "closed before the peer authenticated"))
        }

        /// A channel whose connect failed never goes active (no `channelInactive`); its pipeline
        /// is still torn down on its loop, and that ends the wait. (A completed promise ignores it.)
        func handlerRemoved(context: ChannelHandlerContext) {
            promise.fail(NetworkError(.connectionClosed, "closed before the peer authenticated"))
        }
    }
}
