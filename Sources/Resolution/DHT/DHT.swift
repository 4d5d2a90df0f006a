import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import Network

/// The Kademlia DHT of a node: the kad protocol on the host (server side in `DHT+Server.swift`),
/// iterative lookups driven by `ClosestPeersLookup`, publishing and resolving `.agent` records, and
/// the maintenance that keeps buckets, replicas and the node's own records fresh (spec/dht.md).
///
/// The decisions are `KademliaBehaviour`'s (a sans-I/O state machine, spec/dht.md §10.1); this class
/// is its driver: it holds the behaviour behind one lock, feeds it events with the time, and
/// performs its actions (requests as child tasks of the query's caller; liveness checks, dial-backs
/// and job rounds in its service, `run()`, a swift-service-lifecycle `Service` that ends on a
/// graceful shutdown, when its task is cancelled, or with the host).
///
/// ```swift
/// let dht = DHT(host: host, store: store)
/// dht.start()                       // serve kad (server mode) from now on
/// group.addTask { try await dht.run() }   // the service: jobs, liveness checks, dial-backs
/// ```
public final class DHT: Sendable {
    public let host: Network.Host
    public let store: any RecordStoring
    public let configuration: DHTConfiguration
    /// The mode in force (`auto` resolved when the DHT starts).
    public var mode: DHTMode { state.withLockedValue { $0.mode } }

    let logger: Logger
    let unixClock: @Sendable () -> UInt64
    let state: NIOLockedValueBox<State>

    struct State {
        var mode: DHTMode
        /// The DHT's decisions: routing table, lookups, server answers, job schedule, own names.
        var behaviour: KademliaBehaviour<KademliaPeer>
        var inboundStreams: InboundStreamSlots<MuxedStream>
        /// Peers whose kad stream arrived before identify completed, with the connection it came
        /// on: decided on their `identified` host event (`watchIdentify`), dropped on disconnect.
        var awaitingIdentify: [PeerID: Connection] = [:]
        var started = false
        /// The task of each running query, where its actions go.
        var queryOwners: [KademliaQueryID: AsyncStream<QueryInput>.Continuation] = [:]
        /// The outcome of each owned query that finished, until its owner takes it (an owner
        /// cancelled meanwhile no longer reads its stream).
        var finishedQueries: [KademliaQueryID: KademliaQueryOutcome<KademliaPeer>] = [:]
        var nextRequestID: UInt64 = 0
        /// The job deadline the service's timer sleeps until (nil: none armed).
        var armedDeadline: NIODeadline?
        /// Service work the full queue refused (`enqueue`), since the start.
        var droppedServiceWork = 0
        /// Job rounds the service finished, since the start.
        var upkeepRounds = 0
        var replicationRounds = 0

        var table: RoutingTable {
            get { behaviour.table }
            set { behaviour.table = newValue }
        }
        var cache: ResolutionCache {
            get { behaviour.cache }
            set { behaviour.cache = newValue }
        }
        var providers: ProviderStore<KademliaPeer> {
            get { behaviour.providers }
            set { behaviour.providers = newValue }
        }
        var ownNames: OwnNames {
            get { behaviour.ownNames }
            set { behaviour.ownNames = newValue }
        }
    }

    /// Work for the DHT's service task (`runService`).
    let serviceWork: AsyncStream<ServiceWork>.Continuation
    /// What the service (`run()`) consumes: its work queue and the host events it watches
    /// (subscribed by `start()`); taken by the one `run()`.
    let serviceInputs: NIOLockedValueBox<ServiceInputs>

    struct ServiceInputs {
        var inbox: AsyncStream<ServiceWork>?
        var identifyEvents: AsyncStream<HostEvent>?
        var running = false
    }
    /// Held while an own record is signed (`register`, republish): signing reads the last seq and
    /// saves the next, so two signers of one name must not interleave, and a republish must see
    /// whether a register started (`OwnNames.republishable`) in the same step as it signs.
    let ownRecordSigning = NIOLock()
    /// Record-store failures seen since the start (each also logged as an error).
    public var storageFailures: Int { storageFailureCount.withLockedValue { $0 } }
    let storageFailureCount = NIOLockedValueBox(0)

    /// - Parameters:
    ///   - unixClock: seconds since the epoch; tests pass a fixed or shifted clock.
    public init(
        host: Network.Host, store: any RecordStoring, configuration: DHTConfiguration = DHTConfiguration(),
        logger: Logger = Logger(label: "agentd.dht"),
        unixClock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }
    ) {
        precondition(
            configuration.replicationConcurrency >= 1 && configuration.replicationRate >= 1,
            "replicationConcurrency and replicationRate must be at least 1")
        self.host = host
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.unixClock = unixClock
        var seeder = SystemRandomNumberGenerator()
        self.state = NIOLockedValueBox(
            State(
                mode: configuration.mode,
                behaviour: KademliaBehaviour(
                    localPeer: host.peerID, configuration: configuration, store: store, seed: seeder.next()),
                inboundStreams: InboundStreamSlots(
                    limits: .init(
                        total: configuration.maximumInboundStreams, perPeer: configuration.maximumInboundStreamsPerPeer,
                        perIP: configuration.maximumInboundStreamsPerIP))))
        let (inbox, work) = AsyncStream.makeStream(of: ServiceWork.self, bufferingPolicy: .bufferingOldest(4096))
        self.serviceWork = work
        self.serviceInputs = NIOLockedValueBox(ServiceInputs(inbox: inbox))
    }

    /// Resolves the mode and, in server mode, starts answering kad requests. Call after the host
    /// listens (`auto` looks at its listen addresses).
    public func start() {
        let listening = host.listenAddresses
        let loopbackOnly = listening.allSatisfy { AddressScope.of($0) == .loopback }
        let mode = state.withLockedValue { state -> DHTMode in
            guard !state.started else { return state.mode }
            state.started = true
            if state.mode == .auto {
                state.mode = listening.isEmpty ? .client : .server
            }
            switch configuration.loopbackExemption {
            case .never: state.table.exemptLoopback(false)
            case .always: state.table.exemptLoopback(true)
            case .whenLoopbackOnly: state.table.exemptLoopback(loopbackOnly)
            }
            return state.mode
        }
        // Subscribed before kad streams are served (in either mode: `auto` may become server
        // later): an identify that completes after a stream found no peer info is seen by the
        // service (`run()`), whenever it starts.
        serviceInputs.withLockedValue { inputs in
            if inputs.identifyEvents == nil, !inputs.running { inputs.identifyEvents = host.events(label: "dht") }
        }
        if mode == .server {
            host.handle(configuration.protocolID) { [self] stream in
                await serve(stream)
            }
        }
        logger.info("DHT started", metadata: ["mode": "\(mode.rawValue)", "protocol": "\(configuration.protocolID)"])
    }

    /// `--dht-mode auto` follows AutoNAT (spec/dht.md, "Modes"): server when the node is
    /// reachable from outside, client when it is not; while the verdict is unknown, the mode chosen
    /// at start (server when the node listens). Serving kad starts or stops at once, and connected
    /// peers learn it from an identify push. No effect with `--dht-mode client|server`, or before
    /// `start()`.
    public func reachabilityChanged(_ reachability: Reachability) {
        guard configuration.mode == .auto else { return }
        let target: DHTMode
        switch reachability {
        case .public: target = .server
        case .private: target = .client
        case .unknown: target = host.listenAddresses.isEmpty ? .client : .server
        }
        let changed = state.withLockedValue { state -> Bool in
            guard state.started, state.mode != target else { return false }
            state.mode = target
            return true
        }
        guard changed else { return }
        if target == .server {
            host.handle(configuration.protocolID) { [self] stream in
                await serve(stream)
            }
        } else {
            host.unhandle(configuration.protocolID)
        }
        logger.info(
            "DHT mode follows AutoNAT",
            metadata: ["mode": "\(target.rawValue)", "reachability": "\(reachability.rawValue)"])
    }

    // MARK: Routing table

    /// The routing table's entries, closest bucket first.
    public var routingTableEntries: [RoutingTableEntry] { state.withLockedValue { $0.table.entries } }

    /// Per-bucket counts of the non-empty buckets.
    public var bucketSummaries: [RoutingTable.BucketSummary] {
        state.withLockedValue { $0.table.bucketSummaries }
    }

    // MARK: Bootstrapping

    /// Joins the network through `addresses` (each with `/p2p/<peer id>`): asks them for the peers
    /// closest to us (the self-lookup), which fills the routing table. Returns the number of
    /// routing-table entries afterwards. Unreachable bootstrap peers are logged and skipped.
    @discardableResult
    public func bootstrap(_ addresses: [Multiaddr]) async -> Int {
        var seeds: [KademliaPeer] = []
        for address in addresses {
            guard let multihash = address.peerIDMultihash, let peer = try? PeerID(multihash: multihash) else {
                logger.warning(
                    "bootstrap address without a valid /p2p/<peer id> skipped", metadata: ["address": "\(address)"])
                continue
            }
            guard peer != host.peerID else { continue }
            if let index = seeds.firstIndex(where: { $0.id == peer }) {
                seeds[index].addresses.append(address)
            } else {
                seeds.append(KademliaPeer(id: peer, addresses: [address]))
            }
        }
        let result = await lookupClosestPeers(to: host.peerID.multihash.bytes, extraSeeds: seeds)
        let count = state.withLockedValue { $0.table.count }
        logger.info(
            "bootstrap: self-lookup done",
            metadata: [
                "seeds": "\(seeds.count)", "answered": "\(result.closest.count)", "table": "\(count)",
                "requests": "\(result.statistics.requests)",
            ])
        return count
    }

    /// Runs the bucket refreshes that are due, each a lookup of a random key in the bucket, plus a
    /// self-lookup.
    public func refreshBuckets() async {
        let targets = state.withLockedValue { state in
            state.behaviour.table.refreshTargets(now: .now(), using: &state.behaviour.random)
        }
        await refresh(targets)
    }

    /// The refresh lookups of `targets` (and a self-lookup), one after the other.
    func refresh(_ targets: [RoutingTable.RefreshTarget]) async {
        guard !targets.isEmpty else { return }
        _ = await lookupClosestPeers(to: host.peerID.multihash.bytes)
        let localKey = state.withLockedValue { $0.table.localKey }
        for target in targets {
            // Servers hash the FIND_NODE key, so the key sent must be a preimage whose hash falls in
            // the bucket (as libp2p does with generated peer ids), not the target point itself.
            guard let key = Self.preimage(inBucket: target.bucket, from: localKey) else { continue }
            _ = await lookupClosestPeers(to: key)
        }
    }

    /// Random 32 bytes whose SHA-256 lies in bucket `bucket` of `localKey`'s table, found by trying
    /// (2^(cpl+1) hashes on average; `nil` after 2^22 tries, which only very deep buckets need).
    static func preimage(inBucket bucket: Int, from localKey: KademliaKey) -> [UInt8]? {
        var generator = SystemRandomNumberGenerator()
        return preimage(inBucket: bucket, from: localKey, using: &generator)
    }

    /// `preimage(inBucket:from:)` drawing from `generator` (the simulator's seeded one).
    package static func preimage<G: RandomNumberGenerator>(
        inBucket bucket: Int, from localKey: KademliaKey, using generator: inout G
    ) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 32)
        for _ in 0..<(1 << 22) {
            // Eight bytes per draw: drawing each byte on its own went through the generic
            // `next<T: FixedWidthInteger>()` path, which took over half of agent-sim's time in a
            // 10,000-node churn run (perf, release), most of it spent here.
            for word in 0..<4 {
                let value = generator.next()
                for byte in 0..<8 { bytes[word * 8 + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
            }
            if localKey.distance(to: KademliaKey(hashing: bytes)).bucketIndex == bucket { return bytes }
        }
        return nil
    }

    // MARK: Lookups

    // MARK: Requests

    /// Sends `message` to `peer` on a new stream (dialling it if needed) and returns its answer, or
    /// `nil` for messages that get none (ADD_PROVIDER).
    /// - Parameter hearsay: `peer.addresses` were named by a third party (a lookup answer): they
    ///   are dialled only after the addresses the routing table and identify hold for the peer, and
    ///   a failure on them says nothing about the peer (spec/dht.md §6.4).
    /// - Throws: `KadRequestFailure` when the peer cannot be reached, does not answer within
    ///   `requestHardTimeout`, refuses, or answers with something that is not a kad message of the
    ///   same type.
    public func request(_ message: KadMessage, to peer: KademliaPeer, hearsay: Bool = false) async throws -> KadMessage?
    {
        try await exchange(message, with: peer, hearsay: hearsay).answer
    }

    /// An answered request and the connection it rode on.
    struct Exchange: Sendable {
        let answer: KadMessage?
        let connection: Connection
    }

    /// What a request was doing when its hard timeout struck.
    private struct RequestProgress: Sendable {
        var stream: MuxedStream?
        var abandoned = false
        /// Dialling addresses only a third party named: a timeout then is not the peer's fault.
        var diallingHearsay = false
    }

    /// `request`, also returning the connection the answer came on. Bounded by
    /// `requestHardTimeout` (`withDeadline`): past it, the dial or the stream in flight is
    /// cancelled (the stream reset) before the call throws.
    func exchange(_ message: KadMessage, with peer: KademliaPeer, hearsay: Bool) async throws(KadRequestFailure)
        -> Exchange
    {
        let progress = NIOLockedValueBox(RequestProgress())
        do {
            return try await withDeadline(configuration.requestHardTimeout) { [self] () async throws -> Exchange in
                try await withTaskCancellationHandler {
                    try await exchangeUntimed(message, with: peer, hearsay: hearsay, progress: progress)
                } onCancel: {
                    let stream = progress.withLockedValue { box -> MuxedStream? in
                        box.abandoned = true
                        return box.stream
                    }
                    stream?.reset()
                }
            }
        } catch let failure as KadRequestFailure {
            throw failure
        } catch is DeadlineExceeded {
            let hearsayOnly = progress.withLockedValue { $0.diallingHearsay }
            throw KadRequestFailure(
                hearsayOnly ? .unreachableByHearsay : .timedOut,
                "kad \(message.type) to \(peer.id) timed out after \(configuration.requestHardTimeout.nanoseconds / 1_000_000) ms"
            )
        } catch {
            // The caller was cancelled (its lookup ended): the request was abandoned.
            throw KadRequestFailure(.timedOut, "kad \(message.type) to \(peer.id) abandoned: \(error)")
        }
    }

    private func exchangeUntimed(
        _ message: KadMessage, with peer: KademliaPeer, hearsay: Bool, progress: NIOLockedValueBox<RequestProgress>
    ) async throws(KadRequestFailure) -> Exchange {
        var connection = try await connection(to: peer, hearsay: hearsay, progress: progress)
        let protocolID = configuration.protocolID
        // The request rides with the protocol proposal (lazy multistream-select): one round
        // trip per request, not two.
        var framed = ByteBuffer()
        let body = message.serialized()
        framed.writeUVarint(UInt64(body.count))
        framed.writeBytes(body)
        // From here on the peer is reached: a stream it resets or closes, during the negotiation
        // (which carries the request) or before the answer, is its refusal, and proves it alive.
        var opened: MuxedStream?
        for attempt in 0..<2 {
            do {
                opened = try await host.newStream(on: connection, lazyProtocol: protocolID, initial: framed)
                break
            } catch let error as NetworkError where error.kind == .protocolNotSupported {
                throw KadRequestFailure(.notServing, "\(peer.id) does not serve \(protocolID): \(error)")
            } catch  where connection.isClosing && attempt == 0 {
                // The connection is going away under the request (trimmed as idle just before
                // the stream opened, a GoAway from the peer, the peer gone): not the peer
                // refusing the request. Dial again, once; kad requests are idempotent, so one
                // that went out before the close does no harm twice.
                connection = try await self.connection(to: peer, hearsay: hearsay, progress: progress)
            } catch {
                throw KadRequestFailure(.refused, "\(peer.id) refused \(message.type): \(error)")
            }
        }
        guard let stream = opened else {
            throw KadRequestFailure(.refused, "\(peer.id): no stream for \(message.type)")
        }
        let abandoned = progress.withLockedValue { box -> Bool in
            box.stream = stream
            return box.abandoned
        }
        if abandoned {
            stream.reset()
            throw KadRequestFailure(.timedOut, "kad \(message.type) to \(peer.id) timed out")
        }
        guard message.type != .addProvider else {
            stream.close()
            return Exchange(answer: nil, connection: connection)
        }
        let reply: ByteBuffer
        do {
            guard let answer = try await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize) else {
                stream.reset()
                throw KadRequestFailure(.refused, "\(peer.id) closed the kad stream without answering \(message.type)")
            }
            reply = answer
        } catch let failure as KadRequestFailure {
            throw failure
        } catch {
            throw KadRequestFailure(.refused, "\(peer.id) refused \(message.type): \(error)")
        }
        // Done with it: anything more the peer sends is dropped, and the stream is freed.
        stream.close()
        let answer: KadMessage
        do {
            answer = try KadMessage(serialized: reply.readableBytesView)
        } catch {
            stream.reset()
            throw KadRequestFailure(
                .badAnswer, "\(peer.id) answered \(message.type) with a malformed message: \(error)")
        }
        guard answer.type == message.type else {
            throw KadRequestFailure(.badAnswer, "\(peer.id) answered \(message.type) with \(answer.type)")
        }
        return Exchange(answer: answer, connection: connection)
    }

    /// The addresses to dial `peer` at, in order (spec/dht.md §6.4): those the caller itself
    /// supplied (not hearsay), then those the routing table holds, then those the peer announced
    /// through identify; and, apart, the addresses a third party named, dialled only after all
    /// of those. Hearsay never replaces what we know.
    /// Identify addresses and hearsay are third-party addresses: dialled only as the scope rule
    /// allows (spec/network.md, "Addresses"); table entries were reached before.
    func dialPlan(for peer: KademliaPeer, hearsay: Bool) -> (known: [Multiaddr], hearsay: [Multiaddr]) {
        let rule = host.addressScopeRule
        var known: [Multiaddr] = hearsay ? [] : Self.dialable(peer.addresses)
        if let entry = state.withLockedValue({ $0.table.entry(for: peer.id) }) {
            known += Self.dialable(entry.peer.addresses)
        }
        if let info = host.peerInfo(peer.id) {
            known += rule.dialable(Self.reachableAddresses(info.listenAddresses, observed: nil), from: .thirdParty)
        }
        known = Self.unique(known)
        let told =
            hearsay ? Self.unique(rule.dialable(peer.addresses, from: .thirdParty)).filter { !known.contains($0) } : []
        return (known, told)
    }

    /// A live connection to `peer`, or a new one: through its known addresses first (at most 4),
    /// then through hearsay (at most 4).
    private func connection(
        to peer: KademliaPeer, hearsay: Bool, progress: NIOLockedValueBox<RequestProgress>
    ) async throws(KadRequestFailure) -> Connection {
        if let connection = host.connection(to: peer.id), !connection.isClosing { return connection }
        let plan = dialPlan(for: peer, hearsay: hearsay)
        var lastError: (any Error)?
        // Each group by the host's dial policy (ranked, raced, relayed after direct).
        if !plan.known.isEmpty {
            do {
                return try await host.connect(to: peer.id, addresses: Array(plan.known.prefix(4)))
            } catch {
                lastError = error
            }
        }
        let knownFailed = !plan.known.isEmpty
        progress.withLockedValue { $0.diallingHearsay = !knownFailed }
        if !plan.hearsay.isEmpty {
            do {
                let connection = try await host.connect(to: peer.id, addresses: Array(plan.hearsay.prefix(4)))
                progress.withLockedValue { $0.diallingHearsay = false }
                return connection
            } catch {
                lastError = error
            }
        }
        let reason = lastError.map { "\($0)" } ?? "no dialable address known for \(peer.id)"
        throw KadRequestFailure(knownFailed ? .unreachable : .unreachableByHearsay, reason)
    }

    /// A live connection to `peer` or a new one through the addresses we trust for it (for the
    /// liveness check: hearsay plays no part).
    func connection(to peer: KademliaPeer) async throws(KadRequestFailure) -> Connection {
        try await connection(to: peer, hearsay: false, progress: NIOLockedValueBox(RequestProgress()))
    }

    static func withPeer(_ address: Multiaddr, _ peer: PeerID) -> Multiaddr {
        address.ending(in: peer)
    }

    static func unique(_ addresses: [Multiaddr]) -> [Multiaddr] {
        var seen = Set<Multiaddr>()
        return addresses.filter { seen.insert($0).inserted }
    }

    /// The addresses of `addresses` the transport can dial (`AddressScopeRule.isDialable`): TCP over
    /// IP or DNS, not unspecified (0.0.0.0, ::). Whose addresses are dialled is the scope rule's call.
    static func dialable(_ addresses: [Multiaddr]) -> [Multiaddr] {
        addresses.filter(AddressScopeRule.isDialable)
    }
}

/// Thrown by `withDeadline` when the time ran out.
struct DeadlineExceeded: Error {}

/// Runs `body` in a child task under a deadline: past `timeout`, `body` is cancelled (it must end
/// promptly when cancelled, e.g. by resetting its stream in a cancellation handler) and, once it
/// has ended, `DeadlineExceeded` is thrown. Structured: nothing outlives the call, and cancelling
/// the caller cancels `body`.
func withDeadline<T: Sendable>(
    _ timeout: TimeAmount, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(max(timeout.nanoseconds, 0)))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw DeadlineExceeded() }
        guard let value = first else { throw DeadlineExceeded() }
        return value
    }
}
