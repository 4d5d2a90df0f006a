import Identity
import Logging
import Multiformats
import NIOCore
import Network
import Resolution

/// Capability cards on a node (spec/cards.md §7–9): the local agents' cards (signed, kept in a
/// `CardStore`), served on `/agent/card/1.0.0`, announced as DHT provider records under each
/// capability's key, and the client side: fetching another agent's cards and finding the agents
/// that offer a capability, each card verified against its agent's record.
///
/// The DHT and the record resolver come in as closures, so that tests can run the service on bare
/// hosts; `init(host:dht:…)` wires them to a `DHT`.
public final class CardService: Sendable {
    public struct Configuration: Sendable {
        /// Deadline of one card request (both sides).
        public var requestTimeout: TimeAmount = .seconds(10)
        /// Provider records live 48 h (DHTConfiguration.providerRecordTTL); announced again this
        /// often, and at start.
        public var republishInterval: TimeAmount = .hours(22)
        /// Most providers a `find` asks.
        public var maximumProviders = 20
        /// Providers asked at once by `find`.
        public var concurrentFetches = 8

        public init() {}
    }

    /// The Ed25519 key of `name`'s current record, or nil when it has none (a DHT resolve).
    public typealias KeyResolver = @Sendable (AgentName) async throws -> Ed25519.PublicKey?
    /// Announces this node as a provider of a key.
    public typealias Provide = @Sendable ([UInt8]) async -> Void
    /// Finds up to `limit` providers of a key.
    public typealias FindProviders = @Sendable (_ key: [UInt8], _ limit: Int) async -> [KademliaPeer]

    /// One agent found by `find`.
    public struct Found: Hashable, Sendable {
        public let agent: AgentName
        public let peer: PeerID
        public let card: SignedCapabilityCard
    }

    /// What `find` found, and what it dropped with why.
    public struct FindResult: Sendable {
        public let found: [Found]
        public let dropped: [(peer: PeerID, reason: String)]
    }

    public let configuration: Configuration
    private let host: Host
    private let store: CardStore
    private let identity: Ed25519.PrivateKey
    private let logger: Logger
    private let now: @Sendable () -> UInt64
    private let localNames: @Sendable () -> [AgentName]
    private let resolveKey: KeyResolver
    private let provideKey: Provide
    private let findProviders: FindProviders

    /// - Parameters:
    ///   - identity: the key that signs the local agents' cards (the key their records name).
    ///   - localNames: the names this node publishes (a card is set only for one of them).
    ///   - now: Unix seconds.
    public init(
        host: Host, store: CardStore, identity: Ed25519.PrivateKey, configuration: Configuration = .init(),
        logger: Logger, now: @escaping @Sendable () -> UInt64, localNames: @escaping @Sendable () -> [AgentName],
        resolveKey: @escaping KeyResolver, provide: @escaping Provide, findProviders: @escaping FindProviders
    ) {
        self.host = host
        self.store = store
        self.identity = identity
        self.configuration = configuration
        self.logger = logger
        self.now = now
        self.localNames = localNames
        self.resolveKey = resolveKey
        self.provideKey = provide
        self.findProviders = findProviders
    }

    /// Serves `/agent/card/1.0.0`.
    public func start() {
        host.handle(CardWire.protocolID) { [self] stream in await serve(stream) }
    }

    public func stop() {
        host.unhandle(CardWire.protocolID)
    }

    // MARK: Local cards

    /// Signs `card` for `agent` (default: the only local name, else the only one that is not the
    /// self-certifying name), keeps it (replacing the agent's card for the same capability) and
    /// announces the capability in the DHT.
    /// - Throws: `.wrongAgent` when `agent` is not a local name or none can be chosen; what
    ///   `CapabilityCard.check()` and `CardStore.put` throw.
    @discardableResult
    public func set(_ card: CapabilityCard, agent: AgentName? = nil) async throws(CardError) -> SignedCapabilityCard {
        let agent = try localAgent(agent)
        let signed = try SignedCapabilityCard(card: card, agent: agent, timestamp: now(), signedWith: identity)
        try store.put(signed)
        await provideKey(CapabilityCard.providerKey(capability: card.name))
        logger.info("card set", metadata: ["name": "\(agent)", "capability": "\(card.name)", "version": "\(card.version)"])
        return signed
    }

    /// Removes `agent`'s card for `capability` (its provider records expire within 48 h; until
    /// then the node answers without the card). Returns whether there was one.
    public func remove(capability: String, agent: AgentName? = nil) throws(CardError) -> Bool {
        try store.remove(agent: try localAgent(agent), capability: capability)
    }

    /// The local cards (of `agent`, or all).
    public func cards(of agent: AgentName? = nil) throws(CardError) -> [SignedCapabilityCard] {
        try store.cards(of: agent)
    }

    /// Announces every local capability (at start, then every `republishInterval`).
    /// - Returns: the capabilities announced.
    @discardableResult
    public func republishProviders() async throws(CardError) -> [String] {
        let capabilities = Set(try store.cards().map(\.card.name)).sorted()
        for capability in capabilities { await provideKey(CapabilityCard.providerKey(capability: capability)) }
        if !capabilities.isEmpty { logger.info("capabilities announced", metadata: ["capabilities": "\(capabilities)"]) }
        return capabilities
    }

    /// Runs `republishProviders` now and every `republishInterval` until cancelled (the node runs
    /// it as a host task, so it ends with the host).
    public func runRepublishing() async {
        while !Task.isCancelled {
            do {
                try await republishProviders()
            } catch {
                logger.error("cannot announce the local capabilities: \(error.message)")
            }
            do {
                try await Task.sleep(nanoseconds: UInt64(configuration.republishInterval.nanoseconds))
            } catch {
                return
            }
        }
    }

    private func localAgent(_ agent: AgentName?) throws(CardError) -> AgentName {
        let names = localNames()
        if let agent {
            guard names.contains(agent) else {
                throw CardError(.wrongAgent, "\(agent) is not published by this node (it publishes \(names.map(\.value).joined(separator: ", ")))")
            }
            return agent
        }
        if names.count == 1 { return names[0] }
        let chosen = names.filter { $0.selfCertifyingPeerID == nil }
        if chosen.count == 1 { return chosen[0] }
        throw CardError(
            .wrongAgent, "this node publishes \(names.map(\.value).joined(separator: ", ")): say which agent the card is for (--name)")
    }

    // MARK: Serving

    private func serve(_ stream: MuxedStream) async {
        let peer = stream.remotePeer
        do {
            let bytes = try await stream.withDeadline(configuration.requestTimeout, "card request") {
                try await stream.readLengthPrefixed(maximumLength: CardWire.maximumRequestBytes)
            }
            guard let bytes else {
                stream.reset()
                return
            }
            let response: CardWire.Response
            do {
                response = try answer(try CardWire.decodeRequest(bytes.readableBytesView))
            } catch {
                logger.debug("card request refused", metadata: ["peer": "\(peer)", "error": "\(error)"])
                response = CardWire.Response(error: error.kind.rawValue)
            }
            try await stream.withDeadline(configuration.requestTimeout, "card response") {
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: CardWire.encode(response)))
                try await stream.closeWrite()
            }
        } catch {
            logger.debug("card request failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            stream.reset()
        }
    }

    /// The answer to `request`: the matching local cards, at most 64 and 1 MiB.
    func answer(_ request: CardWire.Request) throws(CardError) -> CardWire.Response {
        if request.capability != CardWire.all { try CapabilityCard.checkCapabilityName(request.capability) }
        var agent: AgentName?
        if !request.agent.isEmpty {
            do {
                agent = try AgentName(canonical: request.agent)
            } catch {
                throw CardError(.invalidName, error.message)
            }
        }
        var cards: [[UInt8]] = []
        var size = 0
        for card in try store.cards(of: agent) where request.capability == CardWire.all || card.card.name == request.capability {
            // A length-delimited field costs its bytes, its length (≤ 3 bytes) and its key (1 byte).
            guard cards.count < CardWire.maximumCards, size + card.bytes.count + 4 <= CardWire.maximumResponseBytes else { break }
            cards.append(card.bytes)
            size += card.bytes.count + 4
        }
        return CardWire.Response(cards: cards)
    }

    // MARK: Client side

    /// Asks the peer of `connection` for its cards (`capability` or all, of `agent` or every agent).
    /// - Returns: the answer's cards as bytes, not yet decoded or verified.
    /// - Throws: `NetworkError` (the stream failed, timed out, the peer does not speak the
    ///   protocol), `CardError` (a malformed answer, or the peer's refusal with its kind).
    public func request(
        capability: String, agent: AgentName?, on connection: Connection
    ) async throws -> [[UInt8]] {
        let stream = try await host.newStream(on: connection, protocols: [CardWire.protocolID])
        do {
            let response = try await stream.withDeadline(configuration.requestTimeout, "card request") {
                let request = CardWire.Request(capability: capability, agent: agent?.value ?? "")
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: CardWire.encode(request)))
                try await stream.closeWrite()
                guard let bytes = try await stream.readLengthPrefixed(maximumLength: CardWire.maximumResponseBytes) else {
                    throw NetworkError(.protocolViolation, "the peer closed the card stream without answering")
                }
                return try CardWire.decodeResponse(bytes.readableBytesView)
            }
            stream.close()
            guard response.error.isEmpty else {
                let kind = CardError.Kind(rawValue: response.error) ?? .malformed
                throw CardError(kind, "the peer refused the card request: \(response.error)")
            }
            return response.cards
        } catch {
            stream.reset()
            throw error
        }
    }

    /// Decodes and verifies `bytes` as `agent`'s (or any agent's) card for `capability` (or any):
    /// spec/cards.md §6, the cheap rules before the record lookup.
    public func verify(_ bytes: [UInt8], agent: AgentName?, capability: String?) async throws(CardError) -> SignedCapabilityCard {
        let card = try SignedCapabilityCard(bytes: bytes)
        try card.checkAddressing(agent: agent, capability: capability, now: now())
        var key: Ed25519.PublicKey?
        if card.agent.selfCertifyingPeerID == nil {
            do {
                key = try await resolveKey(card.agent)
            } catch {
                throw CardError(.unknownAgent, "cannot resolve \(card.agent) to check its card: \(error)")
            }
        }
        try card.checkSignature(key: key)
        return card
    }

    /// `agent`'s cards, fetched from `peer` (dialled at `addresses` unless connected) and verified;
    /// the invalid ones are dropped and reported.
    /// - Throws: `NetworkError` when the peer cannot be reached or does not answer, `CardError`
    ///   for a malformed answer or a refusal.
    public func cards(
        of agent: AgentName, at peer: PeerID, addresses: [Multiaddr]
    ) async throws -> (cards: [SignedCapabilityCard], dropped: [String]) {
        let connection = try await host.connect(to: peer, addresses: addresses, origin: .thirdParty)
        var cards: [SignedCapabilityCard] = []
        var dropped: [String] = []
        for bytes in try await request(capability: CardWire.all, agent: agent, on: connection) {
            do {
                cards.append(try await verify(bytes, agent: agent, capability: nil))
            } catch {
                logger.info("card dropped", metadata: ["peer": "\(peer)", "name": "\(agent)", "error": "\(error)"])
                dropped.append("\(error.kind.rawValue): \(error.message)")
            }
        }
        return (cards, dropped)
    }

    /// The agents that offer `capability` in a version within `range` (nil: any): the capability's
    /// providers from the DHT, each asked for its cards for it, each card verified (§9). Providers
    /// that cannot be reached, answer garbage or serve cards that fail verification are dropped
    /// and reported; cards outside the range are left out silently.
    /// - Throws: `.invalidCapability`.
    public func find(capability: String, versions range: VersionRange? = nil) async throws(CardError) -> FindResult {
        try CapabilityCard.checkCapabilityName(capability)
        let providers = await findProviders(CapabilityCard.providerKey(capability: capability), configuration.maximumProviders)
        typealias Outcome = (peer: PeerID, cards: [SignedCapabilityCard], failures: [String])
        var outcomes: [Outcome] = []
        await withTaskGroup(of: Outcome.self) { group in
            var pending = providers[...]
            func launch() {
                guard let provider = pending.popFirst() else { return }
                group.addTask { [self] in await self.ask(provider, for: capability) }
            }
            for _ in 0..<configuration.concurrentFetches { launch() }
            for await outcome in group {
                outcomes.append(outcome)
                launch()
            }
        }
        var found: [Found] = []
        var dropped: [(peer: PeerID, reason: String)] = []
        for outcome in outcomes {
            for failure in outcome.failures { dropped.append((outcome.peer, failure)) }
            for card in outcome.cards where range?.contains(card.card.version) ?? true {
                found.append(Found(agent: card.agent, peer: outcome.peer, card: card))
            }
        }
        found.sort { ($0.agent, $0.peer.description) < ($1.agent, $1.peer.description) }
        return FindResult(found: found, dropped: dropped)
    }

    /// One provider's verified cards for `capability` (our own from the store).
    private func ask(_ provider: KademliaPeer, for capability: String) async -> (peer: PeerID, cards: [SignedCapabilityCard], failures: [String]) {
        let answered: [[UInt8]]
        do {
            if provider.id == host.peerID {
                answered = try answer(CardWire.Request(capability: capability)).cards
            } else {
                let connection = try await host.connect(to: provider.id, addresses: provider.addresses, origin: .thirdParty)
                answered = try await request(capability: capability, agent: nil, on: connection)
            }
        } catch {
            logger.info("card provider failed", metadata: ["peer": "\(provider.id)", "error": "\(error)"])
            return (provider.id, [], ["\(error)"])
        }
        var cards: [SignedCapabilityCard] = []
        var failures: [String] = []
        for bytes in answered {
            do {
                cards.append(try await verify(bytes, agent: nil, capability: capability))
            } catch {
                logger.info("card dropped", metadata: ["peer": "\(provider.id)", "error": "\(error)"])
                failures.append("\(error.kind.rawValue): \(error.message)")
            }
        }
        return (provider.id, cards, failures)
    }
}

extension CardService {
    /// A service whose provider records and key lookups go through `dht`.
    public convenience init(
        host: Host, dht: DHT, store: CardStore, identity: Ed25519.PrivateKey, configuration: Configuration = .init(),
        logger: Logger, now: @escaping @Sendable () -> UInt64
    ) {
        self.init(
            host: host, store: store, identity: identity, configuration: configuration, logger: logger, now: now,
            localNames: { [host] in
                let names = dht.registeredNames
                let own = AgentName(selfCertifying: host.peerID)
                return names.contains(own) ? names : [own] + names
            },
            resolveKey: { name in
                do throws(ResolutionError) {
                    return try await dht.resolve(name).record.record.publicKey
                } catch {
                    if error.kind == .notFound { return nil }
                    throw error
                }
            },
            provide: { key in
                let report = await dht.provide(key)
                logger.debug("provider record sent", metadata: ["peers": "\(report.sentTo.count)", "failures": "\(report.failures.count)"])
            },
            findProviders: { key, limit in await dht.findProviders(key, limit: limit) })
    }
}
