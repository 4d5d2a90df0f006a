import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore

/// The AutoNAT server on a host: reads one DIAL per stream, lets `AutoNATServerPolicy` decide,
/// dials the requester back on fresh connections (`Host.probe`: a new TCP connection and the
/// first two Noise messages, which authenticate the requester; never merged with the connection
/// the request came on) and answers one DIAL_RESPONSE.
public final class AutoNATServer: Sendable {
    public struct Configuration: Sendable {
        public var policy = AutoNATServerPolicy.Configuration()
        /// All dial-backs of one request end after this long (go-libp2p: 15 s; on a LAN or the
        /// internet a reachable TCP listener answers well within 5 s). The requester then gets
        /// `E_DIAL_ERROR`.
        public var dialTimeout: TimeAmount = .seconds(5)
        /// The request must arrive within this long after the protocol is agreed.
        public var requestTimeout: TimeAmount = .seconds(10)

        public init() {}
    }

    /// What the server has answered since it started, by status (`agentctl nat`).
    public struct Counters: Sendable, Hashable {
        public var answers: [AutoNATStatus: Int] = [:]
    }

    let host: Host
    let configuration: Configuration
    let logger: Logger
    private let state: NIOLockedValueBox<(policy: AutoNATServerPolicy, counters: Counters)>

    private init(host: Host, configuration: Configuration, logger: Logger) {
        self.host = host
        self.configuration = configuration
        self.logger = logger
        self.state = NIOLockedValueBox((AutoNATServerPolicy(configuration: configuration.policy), Counters()))
    }

    /// Serves `/libp2p/autonat/1.0.0` on `host`.
    @discardableResult
    public static func register(
        on host: Host, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "agentd.autonat")
    ) -> AutoNATServer {
        let server = AutoNATServer(host: host, configuration: configuration, logger: logger)
        host.handle(AutoNAT.protocolID) { stream in await server.serve(stream) }
        return server
    }

    /// The answers given so far.
    public var counters: Counters { state.withLockedValue { $0.counters } }

    func serve(_ stream: MuxedStream) async {
        let request: Result<AutoNATDialRequest, NetworkError>
        do {
            let message = try await stream.raw.withDeadline(configuration.requestTimeout, "AutoNAT request") {
                try await stream.readMessage(AutoNATMessage.Wire.self, maximumSize: AutoNAT.maximumMessageLength)
            }
            guard let message else {
                stream.close()
                return
            }
            request = Result { () throws(NetworkError) in try AutoNATMessage.request(from: message) }
        } catch let error as NetworkError where error.kind == .protocolViolation {
            // Oversized, garbage, or the stream ended inside the message: answered, then closed.
            request = .failure(error)
        } catch {
            stream.reset()
            return
        }
        let requester = stream.remotePeer
        let observed = stream.connection.remoteAddress
        let relayed = stream.connection.path.isRelayed
        let decision = state.withLockedValue {
            $0.policy.decide(request, from: requester, observedAddress: observed, relayed: relayed, now: .now())
        }
        let response: AutoNATDialResponse
        switch decision {
        case .respond(let answer):
            response = answer
        case .dial(let targets):
            if let reached = await dialBack(targets) {
                response = AutoNATDialResponse(status: .ok, address: reached.removingPeerID)
            } else {
                response = AutoNATDialResponse(
                    status: .dialError,
                    statusText:
                        "could not dial you back at \(targets.count) address(es) (refused, unreachable or silent; timeout \(configuration.dialTimeout.nanoseconds / 1_000_000) ms)"
                )
            }
        }
        state.withLockedValue { $0.counters.answers[response.status, default: 0] += 1 }
        logger.debug(
            "AutoNAT answered",
            metadata: ["peer": "\(requester)", "status": "\(response.status)", "text": "\(response.statusText)"])
        do {
            try await stream.writeMessage(AutoNATMessage.wire(response), maximumSize: AutoNAT.maximumMessageLength)
            try await stream.closeWrite()
            stream.close()
        } catch {
            stream.reset()
        }
    }

    /// Probes `targets` at once; the first that authenticates the requester wins (the others are
    /// cancelled, closing their sockets). Nil when none did within `dialTimeout`.
    private func dialBack(_ targets: [Multiaddr]) async -> Multiaddr? {
        enum Outcome: Sendable {
            case reached(Multiaddr)
            case failed
            case timedOut
        }
        let host = self.host
        let timeout = configuration.dialTimeout
        return await withTaskGroup(of: Outcome.self) { group in
            for target in targets {
                group.addTask {
                    do {
                        try await host.probe(target)
                        return .reached(target)
                    } catch {
                        return .failed
                    }
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(nanoseconds: UInt64(timeout.nanoseconds))
                    return .timedOut
                } catch {
                    return .failed
                }
            }
            var pending = targets.count
            while let outcome = await group.next() {
                switch outcome {
                case .reached(let address):
                    group.cancelAll()
                    return address
                case .timedOut:
                    group.cancelAll()
                    return nil
                case .failed:
                    pending -= 1
                    if pending == 0 {
                        group.cancelAll()
                        return nil
                    }
                }
            }
            return nil
        }
    }
}

extension Multiaddr {
    /// The address without a trailing `/p2p/…`.
    var removingPeerID: Multiaddr {
        guard case .p2p? = components.last else { return self }
        return Multiaddr(Array(components.dropLast()))
    }
}
