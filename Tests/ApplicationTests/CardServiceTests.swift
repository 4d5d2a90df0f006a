import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Network
import Resolution
import Testing

@testable import Application

/// `/agent/card/1.0.0` between hosts over loopback TCP, with the DHT replaced by an in-memory
/// provider table and the record resolver by a name → key table, and then over a few real DHT
/// nodes.
@Suite("capability cards between hosts")
struct CardServiceTests {
    static let now: UInt64 = 1_800_000_000
    static let alice = try! AgentName("alice.agent")
    static let carol = try! AgentName("carol.agent")
    static let translate = CapabilityCard(
        name: "translate", version: try! SemanticVersion("1.2.0"), description: "Translates text.",
        interfaces: [
            .init(name: "Translator", methods: [.init(name: "translate", parameters: [.init(name: "text", type: "string")])])
        ])

    /// The DHT's part, in memory: who provides which key.
    final class Providers: Sendable {
        let table = NIOLockedValueBox<[[UInt8]: [KademliaPeer]]>([:])

        func add(_ key: [UInt8], _ peer: KademliaPeer) {
            table.withLockedValue { table in
                if !(table[key] ?? []).contains(where: { $0.id == peer.id }) { table[key, default: []].append(peer) }
            }
        }
    }

    struct Node {
        let host: Host
        let address: Multiaddr
        let key: Ed25519.PrivateKey
        let service: CardService
    }

    /// A host with the card service; its agents are `names`, its resolver answers from `keys`.
    static func node(
        _ group: EventLoopGroup, names: [AgentName], keys: NIOLockedValueBox<[AgentName: Ed25519.PublicKey]>,
        providers: Providers, configuration: CardService.Configuration = .init()
    ) async throws -> Node {
        let key = Ed25519.PrivateKey()
        let host = Host(identity: key, group: group)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        for name in names { keys.withLockedValue { $0[name] = key.publicKey } }
        let peer = KademliaPeer(id: host.peerID, addresses: [bound])
        let service = CardService(
            host: host, store: try CardStore(path: nil), identity: key, configuration: configuration,
            logger: Logger(label: "test.cards"), now: { Self.now }, localNames: { names },
            resolveKey: { name in keys.withLockedValue { $0[name] } },
            provide: { key in providers.add(key, peer) },
            findProviders: { key, limit in Array(providers.table.withLockedValue { $0[key] ?? [] }.prefix(limit)) })
        service.start()
        return Node(host: host, address: bound.appending(.p2p(host.peerID.multihash)), key: key, service: service)
    }

    @Test("a card set on one node is announced, fetched by another, verified, and found by capability and range")
    func setGetFind() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let keys = NIOLockedValueBox<[AgentName: Ed25519.PublicKey]>([:])
        let providers = Providers()
        let a = try await Self.node(group, names: [Self.alice], keys: keys, providers: providers)
        let b = try await Self.node(group, names: [Self.carol], keys: keys, providers: providers)

        let signed = try await a.service.set(Self.translate)
        #expect(signed.agent == Self.alice)
        #expect(signed.timestamp == Self.now)
        #expect(providers.table.withLockedValue { $0[CapabilityCard.providerKey(capability: "translate")]?.map(\.id) } == [a.host.peerID])
        var newer = Self.translate
        newer.version = try SemanticVersion("1.3.0")
        try await b.service.set(newer)

        let fetched = try await b.service.cards(of: Self.alice, at: a.host.peerID, addresses: [a.address])
        #expect(fetched.cards == [signed])
        #expect(fetched.dropped.isEmpty)

        let all = try await a.service.find(capability: "translate")
        #expect(all.found.map(\.agent) == [Self.alice, Self.carol])
        #expect(all.found.map(\.peer) == [a.host.peerID, b.host.peerID])
        #expect(all.found.map(\.card.card.version.description) == ["1.2.0", "1.3.0"])
        #expect(all.dropped.isEmpty)
        #expect(try await a.service.find(capability: "translate", versions: try VersionRange("~1.2")).found.map(\.agent) == [Self.alice])
        #expect(try await a.service.find(capability: "translate", versions: try VersionRange(">=1.3")).found.map(\.agent) == [Self.carol])
        #expect(try await a.service.find(capability: "translate", versions: try VersionRange("^2")).found.isEmpty)
        #expect(try await a.service.find(capability: "summarize").found.isEmpty)

        // Removed: served no more (the provider record stays until it expires).
        #expect(try a.service.remove(capability: "translate"))
        #expect(try await b.service.find(capability: "translate").found.map(\.agent) == [Self.carol])
        #expect(try !a.service.remove(capability: "translate"))

        await a.host.shutdown()
        await b.host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a card is set only for a local agent; with several, the agent must be named")
    func localAgents() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let keys = NIOLockedValueBox<[AgentName: Ed25519.PublicKey]>([:])
        let a = try await Self.node(group, names: [Self.alice, Self.carol], keys: keys, providers: Providers())
        let unnamed = await #expect(throws: CardError.self) { try await a.service.set(Self.translate) }
        #expect(unnamed?.kind == .wrongAgent)
        let mallory = try AgentName("mallory.agent")
        let foreign = await #expect(throws: CardError.self) { try await a.service.set(Self.translate, agent: mallory) }
        #expect(foreign?.kind == .wrongAgent)
        #expect(try await a.service.set(Self.translate, agent: Self.carol).agent == Self.carol)
        #expect(try a.service.cards(of: Self.carol).count == 1)
        #expect(try a.service.cards(of: Self.alice).isEmpty)
        await a.host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("find drops providers that serve forged, misaddressed or garbage cards, and keeps the honest one")
    func hostileProviders() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let keys = NIOLockedValueBox<[AgentName: Ed25519.PublicKey]>([:])
        let providers = Providers()
        let honest = try await Self.node(group, names: [Self.alice], keys: keys, providers: providers)
        try await honest.service.set(Self.translate)
        let key = CapabilityCard.providerKey(capability: "translate")

        // Each liar is a bare host that answers the card protocol with `answer`.
        func liar(_ answer: @escaping @Sendable (MuxedStream) async throws -> Void) async throws -> Host {
            let host = Host(identity: Ed25519.PrivateKey(), group: group)
            let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            host.handle(CardWire.protocolID) { stream in
                do {
                    _ = try await stream.readLengthPrefixed(maximumLength: CardWire.maximumRequestBytes)
                    try await answer(stream)
                } catch {
                    stream.reset()
                }
            }
            providers.add(key, KademliaPeer(id: host.peerID, addresses: [bound]))
            return host
        }
        func respond(_ cards: [[UInt8]]) -> @Sendable (MuxedStream) async throws -> Void {
            { stream in
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: CardWire.encode(CardWire.Response(cards: cards))))
                try await stream.closeWrite()
            }
        }
        let mallory = Ed25519.PrivateKey()
        // alice's card signed by mallory's key: alice's record names another key.
        let forged = try SignedCapabilityCard(card: Self.translate, agent: Self.alice, timestamp: Self.now, signedWith: mallory).bytes
        // A valid card of carol's, but for another capability than asked.
        keys.withLockedValue { $0[Self.carol] = mallory.publicKey }
        var summarize = Self.translate
        summarize.name = "summarize"
        let misaddressed = try SignedCapabilityCard(card: summarize, agent: Self.carol, timestamp: Self.now, signedWith: mallory).bytes
        // Dated 10 minutes ahead, and an agent with no record at all.
        let future = try SignedCapabilityCard(card: Self.translate, agent: Self.carol, timestamp: Self.now + 600, signedWith: mallory).bytes
        let unknown = try SignedCapabilityCard(
            card: Self.translate, agent: try AgentName("nobody.agent"), timestamp: Self.now, signedWith: mallory).bytes
        var oversized = Self.translate
        oversized.description = String(repeating: "x", count: 1024)
        let liars = [
            try await liar(respond([forged])),
            try await liar(respond([misaddressed, future, unknown])),
            try await liar(respond([[0x0A, 0x03, 0x01, 0x02]])),  // a card that is not one
            try await liar { stream in  // an answer that is not a CardResponse
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]))
                try await stream.closeWrite()
            },
            try await liar { stream in  // a length prefix over the response limit
                var buffer = ByteBuffer()
                buffer.writeUVarint(UInt64(CardWire.maximumResponseBytes + 1))
                try await stream.write(buffer)
            },
            try await liar { _ in  // silence until the client gives up (its 5 s deadline)
                try await Task.sleep(for: .seconds(60))
            },
        ]
        // The silent liar costs the find this deadline; long enough for the honest answer under load.
        var configuration = CardService.Configuration()
        configuration.requestTimeout = .seconds(5)
        let client = try await Self.node(group, names: [Self.carol], keys: keys, providers: Providers(), configuration: configuration)
        // The client's lookups go to the shared table.
        let seeker = CardService(
            host: client.host, store: try CardStore(path: nil), identity: client.key, configuration: configuration,
            logger: Logger(label: "test.cards"), now: { Self.now }, localNames: { [] },
            resolveKey: { name in keys.withLockedValue { $0[name] } }, provide: { _ in },
            findProviders: { key, limit in Array(providers.table.withLockedValue { $0[key] ?? [] }.prefix(limit)) })

        let result = try await seeker.find(capability: "translate")
        #expect(result.found.map(\.agent) == [Self.alice])
        #expect(result.found.map(\.peer) == [honest.host.peerID])
        let reasons = Dictionary(grouping: result.dropped, by: \.peer).mapValues { $0.map(\.reason) }
        #expect(reasons[liars[0].peerID]?.map { $0.hasPrefix("bad_signature") } == [true])
        #expect(
            reasons[liars[1].peerID]?.map { String($0.prefix { $0 != ":" }) } == ["wrong_capability", "from_the_future", "unknown_agent"])
        #expect(reasons[liars[2].peerID]?.map { $0.hasPrefix("malformed") } == [true])
        for liar in liars[3...] { #expect(reasons[liar.peerID]?.count == 1, "\(liar.peerID): \(reasons[liar.peerID] ?? [])") }
        #expect(result.dropped.count == 8)

        await honest.host.shutdown()
        await client.host.shutdown()
        for liar in liars { await liar.shutdown() }
        try await group.shutdownGracefully()
    }

    @Test("garbage, oversized and silent requests on the card stream are refused; the server keeps serving")
    func hostileRequests() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let keys = NIOLockedValueBox<[AgentName: Ed25519.PublicKey]>([:])
        // The server that answers keeps the default deadline (10 s): under load a request may take a
        // while to arrive, and only the silent stream below is meant to run out of time, at a
        // server of its own.
        let server = try await Self.node(group, names: [Self.alice], keys: keys, providers: Providers())
        try await server.service.set(Self.translate)
        var impatient = CardService.Configuration()
        impatient.requestTimeout = .milliseconds(300)
        let hurried = try await Self.node(group, names: [], keys: keys, providers: Providers(), configuration: impatient)
        let client = try await Self.node(group, names: [Self.carol], keys: keys, providers: Providers())
        let connection = try await client.host.connect(to: server.address)

        func ask(_ bytes: [UInt8]) async throws -> CardWire.Response {
            let stream = try await client.host.newStream(on: connection, protocols: [CardWire.protocolID])
            try await stream.writeLengthPrefixed(ByteBuffer(bytes: bytes))
            try await stream.closeWrite()
            let answer = try #require(try await stream.readLengthPrefixed(maximumLength: CardWire.maximumResponseBytes))
            return try CardWire.decodeResponse(answer.readableBytesView)
        }
        #expect(try await ask([0xFF, 0xFF, 0xFF, 0x01]).error == "malformed")
        #expect(try await ask(CardWire.encode(CardWire.Request(capability: "Bad Name"))).error == "invalid_capability")
        #expect(try await ask(CardWire.encode(CardWire.Request(capability: "all", agent: "Alice"))).error == "invalid_name")
        // Not canonical: the agent field before the capability.
        #expect(try await ask([0x12, 0x01, 0x61, 0x0A, 0x01, 0x61]).error == "malformed")
        #expect(try await ask(CardWire.encode(CardWire.Request(capability: "all"))).cards.count == 1)
        #expect(try await ask(CardWire.encode(CardWire.Request(capability: "all", agent: "carol.agent"))).cards.isEmpty)

        // A length prefix over the request limit: reset, nothing read.
        let oversized = try await client.host.newStream(on: connection, protocols: [CardWire.protocolID])
        var prefix = ByteBuffer()
        prefix.writeUVarint(UInt64(CardWire.maximumRequestBytes + 1))
        try await oversized.write(prefix)
        await #expect(throws: (any Error).self) { while try await oversized.read() != nil {} }
        // Silence: reset after the request deadline.
        let hurriedConnection = try await client.host.connect(to: hurried.address)
        let silent = try await client.host.newStream(on: hurriedConnection, protocols: [CardWire.protocolID])
        await #expect(throws: (any Error).self) { while try await silent.read() != nil {} }

        // Still serving.
        let fetched = try await client.service.cards(of: Self.alice, at: server.host.peerID, addresses: [server.address])
        #expect(fetched.cards.map(\.card) == [Self.translate])
        await client.host.shutdown()
        await server.host.shutdown()
        await hurried.host.shutdown()
        try await group.shutdownGracefully()
    }
}
