import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// Runs the AutoNAT client (`ReachabilityTracker`) on a host: learns servers, observed addresses
/// and listen addresses from `Host.events`, performs the tracker's requests, and announces
/// verdict changes as `HostEvent.reachabilityChanged`. Its work is a host task (`Host.spawn`): it
/// ends when the host shuts down.
public final class AutoNATService: Sendable {
    public struct Configuration: Sendable {
        public var tracker = ReachabilityTracker.Configuration()
        /// One request (stream, DIAL, DIAL_RESPONSE) gives up after this long: longer than a
        /// server's dial-back timeout (agentd 5 s, go-libp2p 15 s), or a server that dials would
        /// be cut off before it can answer `E_DIAL_ERROR`.
        public var requestTimeout: TimeAmount = .seconds(30)

        public init() {}
    }

    /// The client's state, for `agentctl nat`.
    public struct Status: Sendable {
        public var tracker: ReachabilityTracker
        /// When the snapshot was taken (to age the answers' times).
        public var at: NIODeadline
    }

    let host: Host
    let configuration: Configuration
    let logger: Logger
    private let snapshot: NIOLockedValueBox<Status>

    private init(host: Host, configuration: Configuration, logger: Logger) {
        self.host = host
        self.configuration = configuration
        self.logger = logger
        self.snapshot = NIOLockedValueBox(
            Status(tracker: ReachabilityTracker(configuration: configuration.tracker), at: .now()))
    }

    /// Starts the client on `host`; it runs until the host shuts down.
    public static func start(
        on host: Host, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "agentd.autonat")
    ) -> AutoNATService {
        let service = AutoNATService(host: host, configuration: configuration, logger: logger)
        // Subscribed before the task starts: no event between now and its first read is lost.
        let events = host.events(label: "autonat")
        host.spawn("autonat client") { await service.run(events: events) }
        return service
    }

    /// The client's state now.
    public var status: Status { snapshot.withLockedValue { $0 } }

    private enum Input: Sendable {
        case host(HostEvent)
        case answer(PeerID, AutoNATDialResponse?, failure: String)
        case tick
    }

    private func run(events: AsyncStream<HostEvent>) async {
        let (inputs, continuation) = AsyncStream.makeStream(of: Input.self)
        var tracker = ReachabilityTracker(configuration: configuration.tracker)
        tracker.setAddresses(listen: host.listenAddresses, own: host.advertisedAddresses)
        // Peers connected and identified before we subscribed.
        for connection in await host.connections() where !connection.path.isRelayed {
            if let observed = host.peerInfo(connection.remotePeer)?.observedAddress,
                AddressScope.of(observed) != .relayed
            {
                tracker.observed(observed)
            }
            if isServer(connection.remotePeer) { tracker.serverAvailable(connection.remotePeer) }
        }
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await event in events { continuation.yield(.host(event)) }
                continuation.finish()
            }
            var wake: NIODeadline?
            continuation.yield(.tick)
            for await input in inputs {
                let now = NIODeadline.now()
                var actions: [AutoNATClientAction] = []
                switch input {
                case .host(let event):
                    apply(event, to: &tracker)
                case .answer(let server, let response, let failure):
                    actions += tracker.answered(by: server, response: response, failure: failure, now: now)
                case .tick:
                    if let pending = wake, now >= pending { wake = nil }
                }
                actions += tracker.tick(now: now)
                // Before the events go out: whoever reacts to one reads the state that caused it.
                snapshot.withLockedValue { $0 = Status(tracker: tracker, at: now) }
                for action in actions {
                    switch action {
                    case .ask(let server, let addresses):
                        group.addTask {
                            let (response, failure) = await self.ask(server, addresses)
                            continuation.yield(.answer(server, response, failure: failure))
                        }
                    case .reachabilityChanged(let reachability, let confidence):
                        logger.info(
                            "AutoNAT: reachability \(reachability.rawValue)", metadata: ["confidence": "\(confidence)"])
                        host.core.events.emit(.reachabilityChanged(reachability, confidence: confidence))
                    }
                }
                if let deadline = tracker.nextDeadline(now: now), deadline > now, wake.map({ deadline < $0 }) ?? true {
                    wake = deadline
                    group.addTask {
                        do {
                            try await Task.sleep(
                                nanoseconds: UInt64(max(0, (deadline - NIODeadline.now()).nanoseconds)))
                        } catch {
                            return
                        }
                        continuation.yield(.tick)
                    }
                }
            }
            group.cancelAll()
        }
    }

    private func apply(_ event: HostEvent, to tracker: inout ReachabilityTracker) {
        switch event {
        case .identified(let peer, let connection, let info):
            // The observed address first: a server's identify tells us both what to ask it about
            // and that we may ask it. What a peer sees of a relayed connection is the relay's
            // address (quirk 32 of the NAT notes: py ignores those too). Identify push comes here
            // as well; the separate `.observedAddress` event repeats this one and is not needed.
            if let observed = info.observedAddress, isDirect(connection: connection),
                AddressScope.of(observed) != .relayed
            {
                tracker.observed(observed)
            }
            if info.protocols.contains(AutoNAT.protocolID), hasDirectConnection(peer) {
                tracker.serverAvailable(peer)
            } else {
                tracker.serverGone(peer)
            }
        case .connected(let peer, _, _, _):
            if isServer(peer) { tracker.serverAvailable(peer) }
        case .disconnected(let peer, _, _):
            // A server is asked over a direct connection only: a relayed one would be refused.
            if !hasDirectConnection(peer) { tracker.serverGone(peer) }
        case .listenAddressesChanged(let listen):
            tracker.setAddresses(listen: listen, own: host.advertisedAddresses)
        case .advertisedAddressesChanged(let advertised):
            // Relayed (`/p2p-circuit`) addresses among them are never candidates (TCP only).
            tracker.setAddresses(listen: host.listenAddresses, own: advertised)
        case .observedAddress, .reachabilityChanged, .reservation, .reservationLost, .holePunch:
            break
        }
    }

    private func isServer(_ peer: PeerID) -> Bool {
        host.peerInfo(peer)?.protocols.contains(AutoNAT.protocolID) == true && hasDirectConnection(peer)
    }

    /// Whether we hold a direct connection to `peer` (new streams use it before a relayed one).
    private func hasDirectConnection(_ peer: PeerID) -> Bool {
        host.connection(to: peer).map { !$0.path.isRelayed } ?? false
    }

    /// Whether connection `id` is live and direct.
    private func isDirect(connection id: Int) -> Bool {
        host.core.liveConnections.first { $0.id == id }.map { !$0.path.isRelayed } ?? false
    }

    /// One DIAL to `server` on a new stream; the response, or nil and what went wrong.
    private func ask(_ server: PeerID, _ addresses: [Multiaddr]) async -> (AutoNATDialResponse?, String) {
        let stream: MuxedStream
        do {
            stream = try await host.newStream(to: server, protocols: [AutoNAT.protocolID])
        } catch {
            return (nil, "\(error)")
        }
        let request = AutoNATDialRequest(peer: host.peerID, addresses: addresses)
        do {
            let response = try await stream.raw.withDeadline(configuration.requestTimeout, "AutoNAT request") {
                try await stream.writeMessage(AutoNATMessage.wire(request), maximumSize: AutoNAT.maximumMessageLength)
                try await stream.closeWrite()
                guard
                    let message = try await stream.readMessage(
                        AutoNATMessage.Wire.self, maximumSize: AutoNAT.maximumMessageLength)
                else {
                    throw NetworkError(.protocolViolation, "the server closed the stream without an answer")
                }
                return try AutoNATMessage.response(from: message)
            }
            stream.close()
            return (response, "")
        } catch {
            stream.reset()
            return (nil, "\(error)")
        }
    }
}
