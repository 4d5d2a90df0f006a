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
        let (host, port) = try TCPAddress.hostAndPort(of: address)
        try core.checkNotShutDown()
        let eventLoop = core.group.next()
        let authenticated = eventLoop.makePromise(of: Void.self)
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
                    try channel.pipeline.syncOperations.addHandlers([
                        SecureConnectionHandler(configuration: configuration),
                        ProbeHandler(promise: authenticated),
                    ])
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            authenticated.fail(error)
            throw NetworkError(
                .connectionFailed, "cannot connect to \(address): \(HostCore.describe(connectError: error))")
        }
        do {
            try await authenticated.futureResult.get()
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
    }
}
