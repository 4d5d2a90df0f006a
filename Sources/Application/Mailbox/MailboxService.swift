import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network
import Resolution

/// `/agent/mailbox/1.0.0` (spec/mailbox.md): the replica side (serving STORE, FETCH, ACK, OFFER and
/// sending hints) over a `MailboxStore`, and the client calls that senders, recipients and
/// re-replicating replicas make to one replica.
///
/// Finding replicas (a closest-peers lookup) and resolving record keys belong to the node; they come
/// in as closures, so that tests can run the service on bare hosts.
public final class MailboxService: Sendable {
    public struct Configuration: Sendable {
        /// Deadline of a STORE's answer (the replica fsyncs first).
        public var storeTimeout: TimeAmount = .seconds(10)
        /// Deadline of one FETCH page.
        public var fetchTimeout: TimeAmount = .seconds(20)
        /// Deadline of other requests, and of reading a request on the replica side.
        public var requestTimeout: TimeAmount = .seconds(10)
        /// Largest FETCH page a replica sends.
        public var pageBytes = 4 * 1024 * 1024
        /// At most one hint per mailbox per this many seconds.
        public var hintInterval: UInt64 = 10
        /// Most pages one `fetchAll` reads from one replica (1,000 messages of at most 272 KiB fit
        /// in 68 pages of 4 MiB).
        public var maximumPages = 100

        public init() {}
    }

    /// Resolves the Ed25519 key that `name`'s current record names (the node: a DHT resolve).
    public typealias KeyResolver = @Sendable (AgentName) async throws -> Ed25519.PublicKey
    /// Called when a replica hints that `mailbox` has new messages.
    public typealias HintHandler = @Sendable (_ mailbox: [UInt8], _ from: PeerID) -> Void

    public let configuration: Configuration
    private let host: Host
    private let store: MailboxStore?
    private let resolveKey: KeyResolver
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var hintHandler: HintHandler?
        /// When each mailbox was last hinted (bounded: older entries are dropped past 4,096).
        var lastHint: [[UInt8]: UInt64] = [:]
    }

    /// - Parameters:
    ///   - store: the replica store; nil for a node that does not serve as a replica (it still sends).
    ///   - now: Unix seconds.
    public init(
        host: Host, store: MailboxStore?, configuration: Configuration = .init(), logger: Logger,
        now: @escaping @Sendable () -> UInt64, resolveKey: @escaping KeyResolver
    ) {
        self.host = host
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.now = now
        self.resolveKey = resolveKey
    }

    /// Serves the protocol (only with a store: a node without one does not claim to be a replica
    /// but still accepts hints).
    public func start() {
        host.handle(MailboxWire.protocolID) { [self] stream in await serve(stream) }
    }

    public func stop() {
        host.unhandle(MailboxWire.protocolID)
    }

    /// Where hints go (the recipient side).
    public func onHint(_ handler: @escaping HintHandler) {
        state.withLockedValue { $0.hintHandler = handler }
    }

    // MARK: Replica side

    private func serve(_ stream: MuxedStream) async {
        let peer = stream.remotePeer
        do {
            let bytes = try await stream.withDeadline(configuration.requestTimeout, "mailbox request") {
                try await stream.readLengthPrefixed(maximumLength: MailboxWire.maximumRequestSize)
            }
            guard let bytes else {
                stream.reset()
                return
            }
            let response: MailboxWire.Response
            do {
                let request = try MailboxWire.decodeRequest(bytes.readableBytesView)
                response = await answer(request, from: peer)
            } catch {
                response = .error(error)
            }
            try await stream.writeLengthPrefixed(ByteBuffer(bytes: try MailboxWire.encode(response)))
            try await stream.closeWrite()
        } catch {
            logger.debug("mailbox request failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            stream.reset()
        }
    }

    /// The replica's answer to `request` from `peer`.
    func answer(_ request: MailboxWire.Request, from peer: PeerID) async -> MailboxWire.Response {
        if case .hint(let mailbox) = request {
            let handler = state.withLockedValue { $0.hintHandler }
            handler?(mailbox, peer)
            return .ok
        }
        guard let store else {
            return .error(MailboxError(.storeFull, "this node does not serve as a mailbox replica"))
        }
        let now = self.now()
        do {
            switch request {
            case .store(let mailbox, let messages, let recipientPeer):
                var results: [String] = []
                var storedAny = false
                for item in messages {
                    do {
                        let outcome = try store.store(item, from: peer.description, now: now)
                        storedAny = storedAny || outcome == .stored
                        results.append(outcome.rawValue)
                    } catch {
                        results.append(error.kind.rawValue)
                    }
                }
                if storedAny, let recipientPeer { hint(mailbox, to: recipientPeer, now: now) }
                return .stored(results)
            case .fetch(let mailbox, let access, let cursor):
                // Nothing held: an empty page without resolving the name (every node drains its
                // mailboxes at start; a lookup per replica per name would be pure cost). A
                // requester learns only that this replica holds nothing for that mailbox.
                if try store.fetch(mailbox: mailbox, after: Int64(clamping: cursor), maximumBytes: 1, now: now).items.isEmpty {
                    return .page(messages: [], next: nil)
                }
                try await authorize(access, .fetch, mailbox: mailbox, ids: [], now: now)
                let page = try store.fetch(
                    mailbox: mailbox, after: Int64(clamping: cursor), maximumBytes: configuration.pageBytes, now: now)
                return .page(messages: page.items, next: page.next.map { UInt64($0) })
            case .ack(let mailbox, let ids, let access):
                try await authorize(access, .ack, mailbox: mailbox, ids: ids, now: now)
                return .acknowledged(try store.acknowledge(mailbox: mailbox, ids: ids, now: now))
            case .offer(let mailbox, let ids):
                return .wanted(try store.missing(mailbox: mailbox, ids: ids, now: now))
            case .hint:
                return .ok
            }
        } catch {
            return .error(error)
        }
    }

    private func authorize(
        _ access: MailboxAccess, _ operation: MailboxAccess.Operation, mailbox: [UInt8], ids: [[UInt8]], now: UInt64
    ) async throws(MailboxError) {
        let key: Ed25519.PublicKey
        do {
            key = try await resolveKey(access.name)
        } catch {
            throw MailboxError(.unknownRecipient, "no valid record for \(access.name): \(error)")
        }
        try access.check(operation, mailbox: mailbox, replica: host.peerID, ids: ids, key: key, now: now)
    }

    private func hint(_ mailbox: [UInt8], to recipient: PeerID, now: UInt64) {
        let due = state.withLockedValue { state -> Bool in
            if let last = state.lastHint[mailbox], now < last + configuration.hintInterval { return false }
            if state.lastHint.count >= 4096 { state.lastHint.removeAll(keepingCapacity: true) }
            state.lastHint[mailbox] = now
            return true
        }
        // Hints go only over a connection that exists: a replica never dials for one.
        guard due, let connection = host.connection(to: recipient) else { return }
        host.spawn("mailbox hint") { [self] in
            do {
                _ = try await self.request(.hint(mailbox: mailbox), on: connection, timeout: configuration.requestTimeout)
            } catch {
                logger.debug("mailbox hint failed", metadata: ["peer": "\(recipient)", "error": "\(error)"])
            }
        }
    }

    // MARK: Client side

    /// Sends `request` to the peer of `connection` and returns its answer (an `.error` answer is
    /// returned, not thrown).
    /// - Throws: `NetworkError` (the stream failed, timed out, or the peer does not speak the
    ///   protocol) or `MailboxError.malformed` (the answer is not one).
    public func request(_ request: MailboxWire.Request, on connection: Connection, timeout: TimeAmount) async throws
        -> MailboxWire.Response
    {
        // The request goes out behind the protocol proposal, in the same frame (multistream-select's
        // lazy dialer): one round trip less, and the replica finds the whole request with the
        // proposal, so its request deadline never depends on how soon this side writes.
        let body = try MailboxWire.encode(request)
        var framed = ByteBuffer()
        framed.writeUVarint(UInt64(body.count))
        framed.writeBytes(body)
        let stream = try await host.newStream(on: connection, lazyProtocol: MailboxWire.protocolID, initial: framed)
        do {
            let response = try await stream.withDeadline(timeout, "mailbox \(Self.name(of: request))") {
                try await stream.closeWrite()
                guard let bytes = try await stream.readLengthPrefixed(maximumLength: MailboxWire.maximumResponseSize) else {
                    throw NetworkError(.protocolViolation, "the replica closed the stream without answering")
                }
                return try MailboxWire.decodeResponse(bytes.readableBytesView, to: request)
            }
            stream.close()
            return response
        } catch {
            stream.reset()
            throw error
        }
    }

    /// Stores `items` (all for one mailbox) at the peer of `connection`.
    /// - Returns: one result per item (`stored`, `duplicate`, `acknowledged`, or an error code).
    /// - Throws: the replica's refusal of the whole request as `MailboxError`, or a network error.
    public func store(_ items: [MailboxStore.Item], recipientPeer: PeerID?, on connection: Connection) async throws -> [String] {
        guard let mailbox = items.first?.mailbox else { return [] }
        let response = try await request(
            .store(mailbox: mailbox, messages: items, recipientPeer: recipientPeer), on: connection,
            timeout: configuration.storeTimeout)
        switch response {
        case .stored(let results): return results
        case .error(let error): throw error
        default: throw MailboxError(.malformed, "a STORE was answered with \(response)")
        }
    }

    /// Every message waiting for `name` at the peer of `connection`, signing the access with `key`.
    public func fetchAll(name: AgentName, key: Ed25519.PrivateKey, on connection: Connection) async throws -> [MailboxStore.Item] {
        guard let replica = connection.remotePeer else {
            throw NetworkError(.connectionFailed, "the connection has no authenticated peer")
        }
        let mailbox = MailboxWire.mailboxKey(for: name)
        var items: [MailboxStore.Item] = []
        var cursor: UInt64 = 0
        for _ in 0..<configuration.maximumPages {
            let access = MailboxAccess(signing: .fetch, name: name, replica: replica, timestamp: now(), key: key)
            let response = try await request(
                .fetch(mailbox: mailbox, access: access, cursor: cursor), on: connection, timeout: configuration.fetchTimeout)
            switch response {
            case .page(let messages, let next):
                items += messages
                guard let next else { return items }
                guard next > cursor else {
                    throw MailboxError(.malformed, "replica \(replica) answered a page with a cursor that does not advance")
                }
                cursor = next
            case .error(let error): throw error
            default: throw MailboxError(.malformed, "a FETCH was answered with \(response)")
            }
        }
        return items
    }

    /// Acknowledges `ids` of `name`'s mailbox at the peer of `connection`.
    /// - Returns: how many the replica deleted.
    @discardableResult
    public func acknowledge(name: AgentName, ids: [[UInt8]], key: Ed25519.PrivateKey, on connection: Connection) async throws -> Int {
        guard let replica = connection.remotePeer else {
            throw NetworkError(.connectionFailed, "the connection has no authenticated peer")
        }
        let mailbox = MailboxWire.mailboxKey(for: name)
        var deleted = 0
        var start = 0
        while start < ids.count {
            let chunk = Array(ids[start..<min(ids.count, start + MailboxWire.maximumIDsPerRequest)])
            start += chunk.count
            let access = MailboxAccess(signing: .ack, name: name, replica: replica, ids: chunk, timestamp: now(), key: key)
            switch try await request(.ack(mailbox: mailbox, ids: chunk, access: access), on: connection, timeout: configuration.requestTimeout) {
            case .acknowledged(let count): deleted += count
            case .error(let error): throw error
            case let other: throw MailboxError(.malformed, "an ACK was answered with \(other)")
            }
        }
        return deleted
    }

    private static func name(of request: MailboxWire.Request) -> String {
        switch request {
        case .store: "STORE"
        case .fetch: "FETCH"
        case .ack: "ACK"
        case .offer: "OFFER"
        case .hint: "HINT"
        }
    }
}
