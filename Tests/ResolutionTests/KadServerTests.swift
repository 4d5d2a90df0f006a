import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// The kad protocol server: each request type answered as the spec says, and hostile input over
/// real streams (garbage, oversized frames, bad PUTs, floods) refused without harm to other peers.
@Suite("kad server: answers and hostile input", .serialized)
struct KadServerTests {
    /// Two nodes: `server` (a DHT) and `client` (a DHT too, so it can send raw requests), connected.
    static func pair() async throws -> (DHTLoopbackNetwork, DHTLoopbackNetwork.Node, DHTLoopbackNetwork.Node) {
        let network = DHTLoopbackNetwork(threads: 1)
        let server = try await network.addNode()
        let client = try await network.addNode()
        await client.dht.bootstrap([server.address])
        return (network, server, client)
    }

    static func peer(_ node: DHTLoopbackNetwork.Node) -> KademliaPeer {
        KademliaPeer(id: node.peerID, addresses: [node.address])
    }

    /// Opens a raw kad stream from `client` to `server`.
    static func rawStream(_ client: DHTLoopbackNetwork.Node, to server: DHTLoopbackNetwork.Node) async throws -> MuxedStream {
        let connection = try await client.host.connect(to: server.address)
        return try await client.host.newStream(on: connection, protocols: [DHTConfiguration.agentProtocolID])
    }

    /// Reads until the stream ends or is reset; true if it was reset (or ended) without an answer.
    static func isRefused(_ stream: MuxedStream) async -> Bool {
        do {
            return try await stream.readLengthPrefixed(maximumLength: KadLimits.maximumMessageSize) == nil
        } catch {
            return true
        }
    }

    @Test("PING, FIND_NODE, GET_VALUE, PUT_VALUE, ADD_PROVIDER and GET_PROVIDERS are answered per the spec")
    func answers() async throws {
        let (network, server, client) = try await Self.pair()
        let third = try await network.addNode()
        await third.dht.bootstrap([server.address])
        // The server adds inbound peers once identify has told it they serve the DHT.
        for _ in 0..<100 where server.dht.routingTableEntries.count < 2 {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(Set(server.dht.routingTableEntries.map(\.peer.id)) == [client.peerID, third.peerID])

        let ping = try await client.dht.request(KadMessage(type: .ping), to: Self.peer(server))
        #expect(ping?.type == .ping)

        // FIND_NODE: the server's known peers, never the requester.
        let find = try #require(try await client.dht.request(KadMessage(type: .findNode, key: Array("x".utf8)), to: Self.peer(server)))
        #expect(find.closerPeers.map(\.peerID) == [third.peerID])
        #expect(find.key == Array("x".utf8))

        // PUT_VALUE of a valid record is echoed and stored; GET_VALUE returns it.
        let name = try AgentName("kad-server.agent")
        let record = try AgentRecord(
            name: name, publicKey: client.host.identity.publicKey, seq: 1, timestamp: UInt64(Date().timeIntervalSince1970), ttl: 3600
        ).signed(with: client.host.identity)
        let put = KadMessage(type: .putValue, key: name.recordKey, record: .init(key: name.recordKey, value: record.bytes))
        let echo = try await client.dht.request(put, to: Self.peer(server))
        #expect(echo?.record?.value == record.bytes)
        #expect(try server.dht.store.get(name, now: UInt64(Date().timeIntervalSince1970)) == record)
        let get = try #require(try await third.dht.request(KadMessage(type: .getValue, key: name.recordKey), to: Self.peer(server)))
        #expect(get.record?.value == record.bytes)
        #expect(get.record?.key == name.recordKey)
        #expect(!(get.record?.timeReceived.isEmpty ?? true))
        // A key nobody stored: no record, closer peers.
        let missing = try #require(try await third.dht.request(KadMessage(type: .getValue, key: Array("/agent/nobody.agent".utf8)), to: Self.peer(server)))
        #expect(missing.record == nil)
        #expect(missing.closerPeers.map(\.peerID) == [client.peerID])

        // ADD_PROVIDER: only the sender may announce itself; GET_PROVIDERS returns it.
        let key = Array("some-content".utf8)
        let announce = KadMessage(
            type: .addProvider, key: key,
            providerPeers: [
                .init(peerID: client.peerID, addresses: [client.address]),
                .init(peerID: third.peerID, addresses: [third.address]),
            ])
        #expect(try await client.dht.request(announce, to: Self.peer(server)) == nil)
        var providers: [KadMessage.Peer] = []
        for _ in 0..<50 where providers.isEmpty {
            providers = try #require(try await third.dht.request(KadMessage(type: .getProviders, key: key), to: Self.peer(server))).providerPeers
            if providers.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(providers.map(\.peerID) == [client.peerID])
        try await network.shutdown()
    }

    @Test("bad PUTs are refused with a reset and change nothing")
    func badPuts() async throws {
        let (network, server, client) = try await Self.pair()
        let now = UInt64(Date().timeIntervalSince1970)
        let name = try AgentName("victim.agent")
        let good = try AgentRecord(name: name, publicKey: client.host.identity.publicKey, seq: 5, timestamp: now, ttl: 3600)
            .signed(with: client.host.identity)
        _ = try await client.dht.request(
            KadMessage(type: .putValue, key: name.recordKey, record: .init(key: name.recordKey, value: good.bytes)), to: Self.peer(server))

        let other = Ed25519.PrivateKey()
        var tampered = good.bytes
        tampered[tampered.count - 1] ^= 1
        let cases: [(String, KadMessage)] = [
            ("no record", KadMessage(type: .putValue, key: name.recordKey)),
            ("record key differs", KadMessage(type: .putValue, key: name.recordKey, record: .init(key: Array("/agent/other.agent".utf8), value: good.bytes))),
            ("not an agent key", KadMessage(type: .putValue, key: Array("/pk/x".utf8), record: .init(key: Array("/pk/x".utf8), value: good.bytes))),
            ("garbage value", KadMessage(type: .putValue, key: name.recordKey, record: .init(key: name.recordKey, value: [1, 2, 3]))),
            ("bad signature", KadMessage(type: .putValue, key: name.recordKey, record: .init(key: name.recordKey, value: tampered))),
            (
                "name held by another key",
                KadMessage(
                    type: .putValue, key: name.recordKey,
                    record: .init(
                        key: name.recordKey,
                        value: try AgentRecord(name: name, publicKey: other.publicKey, seq: 9, timestamp: now, ttl: 3600).signed(with: other).bytes))
            ),
            (
                "stale seq",
                KadMessage(
                    type: .putValue, key: name.recordKey,
                    record: .init(
                        key: name.recordKey,
                        value: try AgentRecord(name: name, publicKey: client.host.identity.publicKey, seq: 4, timestamp: now, ttl: 3600)
                            .signed(with: client.host.identity).bytes))
            ),
            (
                "expired",
                KadMessage(
                    type: .putValue, key: name.recordKey,
                    record: .init(
                        key: name.recordKey,
                        value: try AgentRecord(name: name, publicKey: client.host.identity.publicKey, seq: 6, timestamp: now - 7200, ttl: 3600)
                            .signed(with: client.host.identity).bytes))
            ),
        ]
        for (label, message) in cases {
            await #expect(throws: (any Error).self, "\(label) was accepted") {
                _ = try await client.dht.request(message, to: Self.peer(server))
            }
        }
        #expect(try server.dht.store.get(name, now: now) == good)
        // The server still answers.
        #expect(try await client.dht.request(KadMessage(type: .ping), to: Self.peer(server))?.type == .ping)
        try await network.shutdown()
    }

    @Test("garbage, an oversized length prefix and an unknown message type reset the stream; others are served")
    func hostileStreams() async throws {
        let (network, server, client) = try await Self.pair()
        // Not protobuf.
        var stream = try await Self.rawStream(client, to: server)
        try await stream.writeLengthPrefixed(ByteBuffer(bytes: [0xff, 0xff, 0xff, 0xff, 0x0f]))
        #expect(await Self.isRefused(stream))
        // A length prefix over the 1 MiB limit: refused before the body arrives.
        stream = try await Self.rawStream(client, to: server)
        var prefix = ByteBuffer()
        prefix.writeUVarint(UInt64(KadLimits.maximumMessageSize) + 1)
        try await stream.write(prefix)
        #expect(await Self.isRefused(stream))
        // An unknown message type (type = 9).
        stream = try await Self.rawStream(client, to: server)
        try await stream.writeLengthPrefixed(ByteBuffer(bytes: [0x08, 0x09]))
        #expect(await Self.isRefused(stream))
        // A truncated message then end of stream.
        stream = try await Self.rawStream(client, to: server)
        var truncated = ByteBuffer()
        truncated.writeUVarint(100)
        truncated.writeBytes([0x08, 0x04])
        try await stream.write(truncated)
        try await stream.closeWrite()
        #expect(await Self.isRefused(stream))

        // Several requests on one stream are all answered, in order.
        stream = try await Self.rawStream(client, to: server)
        for _ in 0..<5 {
            try await stream.writeLengthPrefixed(ByteBuffer(bytes: KadMessage(type: .ping).serialized()))
            let answer = try #require(try await stream.readLengthPrefixed(maximumLength: 1 << 20))
            #expect(try KadMessage(serialized: answer.readableBytesView).type == .ping)
        }
        try await stream.closeWrite()

        #expect(try await client.dht.request(KadMessage(type: .ping), to: Self.peer(server))?.type == .ping)
        try await network.shutdown()
    }

    @Test("a stream over the total limit takes the longest-idle stream's slot; idle streams are closed")
    func limits() async throws {
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.maximumInboundStreams = 4
        // Long enough for the four streams to open on a loaded machine.
        configuration.inboundIdleTimeout = .seconds(5)
        let network = DHTLoopbackNetwork(threads: 1)
        let server = try await network.addNode(configuration: configuration)
        var clients: [DHTLoopbackNetwork.Node] = []
        for _ in 0..<5 { clients.append(try await network.addNode()) }
        var held: [MuxedStream] = []
        for client in clients.prefix(4) {
            held.append(try await Self.rawStream(client, to: server))
            #expect(try await Self.eventually { server.dht.state.withLockedValue { $0.inboundStreams.count } == held.count })
        }
        // A fifth peer's request is answered: the stream idle longest (the first) made room.
        let fifth = try await Self.rawStream(clients[4], to: server)
        try await fifth.writeLengthPrefixed(ByteBuffer(bytes: KadMessage(type: .ping).serialized()))
        #expect(try await fifth.readLengthPrefixed(maximumLength: 1 << 20) != nil)
        #expect(await Self.isRefused(held[0]))
        // The others are closed by the server after the idle timeout.
        for stream in held.dropFirst() { #expect(await Self.isRefused(stream)) }
        #expect(try await clients[0].dht.request(KadMessage(type: .ping), to: Self.peer(server))?.type == .ping)
        try await network.shutdown()
    }

    @Test("one peer over its share of inbound streams loses its own longest-idle stream; others are untouched")
    func perPeerLimit() async throws {
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.maximumInboundStreamsPerPeer = 2
        let network = DHTLoopbackNetwork(threads: 1)
        let server = try await network.addNode(configuration: configuration)
        let greedy = try await network.addNode()
        let other = try await network.addNode()
        let others = try await Self.rawStream(other, to: server)
        var held: [MuxedStream] = []
        for _ in 0..<2 {
            held.append(try await Self.rawStream(greedy, to: server))
            #expect(try await Self.eventually { server.dht.state.withLockedValue { $0.inboundStreams.countByPeer[greedy.peerID] } == held.count })
        }
        let third = try await Self.rawStream(greedy, to: server)
        try await third.writeLengthPrefixed(ByteBuffer(bytes: KadMessage(type: .ping).serialized()))
        #expect(try await third.readLengthPrefixed(maximumLength: 1 << 20) != nil)
        #expect(await Self.isRefused(held[0]))
        #expect(server.dht.state.withLockedValue { $0.inboundStreams.countByPeer[greedy.peerID] } == 2)
        // The other peer's stream, idle all along, is still served.
        try await others.writeLengthPrefixed(ByteBuffer(bytes: KadMessage(type: .ping).serialized()))
        #expect(try await others.readLengthPrefixed(maximumLength: 1 << 20) != nil)
        for stream in [held[1], third, others] { stream.reset() }
        try await network.shutdown()
    }

    @Test("16 peers holding 16 idle streams each (all 256 slots) do not keep the 17th peer's FIND_NODE out")
    func seventeenthPeer() async throws {
        // All test peers share 127.0.0.1; the attack is as if each held its own address.
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.maximumInboundStreamsPerIP = 256
        let network = DHTLoopbackNetwork(threads: 1)
        let server = try await network.addNode(configuration: configuration)
        var held: [MuxedStream] = []
        for _ in 0..<16 {
            let holder = try await network.addNode()
            for _ in 0..<16 {
                // Each stream sends one request and keeps the stream open (the attack sends one
                // every 59 s to stay under the idle timeout).
                let stream = try await Self.rawStream(holder, to: server)
                try await stream.writeLengthPrefixed(ByteBuffer(bytes: KadMessage(type: .ping).serialized()))
                #expect(try await stream.readLengthPrefixed(maximumLength: 1 << 20) != nil)
                held.append(stream)
            }
        }
        #expect(server.dht.state.withLockedValue { $0.inboundStreams.count } == 256)
        let seventeenth = try await network.addNode()
        let answer = try await seventeenth.dht.request(
            KadMessage(type: .findNode, key: seventeenth.peerID.multihash.bytes), to: Self.peer(server))
        #expect(answer?.type == .findNode)
        #expect(server.dht.state.withLockedValue { $0.inboundStreams.count } == 256)
        for stream in held { stream.reset() }
        try await network.shutdown()
    }

    /// Waits (up to 10 s) until `condition` holds.
    static func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }
}

extension Multiaddr {
    /// The address without its trailing `/p2p/<id>`.
    func decapsulatingPeer() -> Multiaddr {
        guard case .p2p = components.last else { return self }
        return Multiaddr(Array(components.dropLast()))
    }
}

@Suite("DHT registration rules", .serialized)
struct DHTRegistrationTests {
    @Test("registering a name another key holds fails with name_held and stores nothing; the holder keeps it")
    func heldName() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 8)
        let name = try AgentName("taken.agent")
        let holder = network.nodes[1]
        let intruder = network.nodes[5]
        _ = try await holder.dht.register(name)
        await #expect(throws: ResolutionError.self) {
            _ = try await intruder.dht.register(name)
        }
        do {
            _ = try await intruder.dht.register(name)
        } catch {
            #expect(error.kind == .nameHeld)
            #expect(error.message.contains(holder.peerID.description), "\(error.message)")
        }
        #expect(intruder.dht.registeredNames.isEmpty)
        #expect(try intruder.dht.store.ownRecord(for: name) == nil)
        let seen = try await intruder.dht.resolve(name, useCache: false)
        #expect(seen.record.record.publicKey == holder.host.identity.publicKey)
        // The holder's own updates still go through.
        let update = try await holder.dht.register(name, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/9")])
        #expect(update.storedAt.count == 5)
        try await network.shutdown()
    }

    @Test("a refused first claim whose own record cannot be forgotten reports the storage failure")
    func refusedClaimStorageFailure() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 6)
        let name = try AgentName("taken.agent")
        _ = try await network.nodes[1].dht.register(name)
        let store = FailingRecordStore()
        let log = CapturedLog()
        let intruder = try await network.addNode(store: store, dhtLogger: log.logger())
        await intruder.dht.bootstrap([network.nodes[0].address])
        store.fail([.removeOwnRecord])
        do {
            _ = try await intruder.dht.register(name)
            Issue.record("a claim on a held name was accepted")
        } catch {
            #expect(error.kind == .nameHeld)
        }
        // The refused claim could not be taken back: said at error level, not dropped.
        #expect(log.events(level: .error, name: name).count == 1)
        try await network.shutdown()
    }

    @Test("a replica that cannot update its copy while resolving logs the storage failure")
    func resolveLocalUpdateStorageFailure() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 5)
        let store = FailingRecordStore()
        let log = CapturedLog()
        let replica = try await network.addNode(store: store, dhtLogger: log.logger())
        await replica.dht.bootstrap([network.nodes[0].address])
        let name = try AgentName("moving.agent")
        let holder = network.nodes[1]
        let first = try await holder.dht.register(name)
        #expect(first.storedAt.contains(replica.peerID))
        // The replica's store breaks: the next version does not reach it, and resolving finds the
        // newer version elsewhere but cannot keep it.
        store.fail([.put])
        let second = try await holder.dht.register(name, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/9")])
        #expect(!second.storedAt.contains(replica.peerID))
        let seen = try await replica.dht.resolve(name, useCache: false)
        #expect(seen.record.record.seq == second.record.record.seq)
        // Its own failure to store the PUT is logged too; the resolve's is the one that counts here.
        #expect(log.events(level: .error, name: name).filter { $0.message.hasPrefix("resolve:") }.count == 1)
        // Both counted: the refused PUT and the resolve's update.
        #expect(replica.dht.storageFailures >= 2)
        try await network.shutdown()
    }

    @Test("names registered to persist are published again after a restart; unregistered and run-only ones are not")
    func restoredAfterRestart() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 5)
        let node = network.nodes[2]
        let kept = try AgentName("kept.agent")
        let dropped = try AgentName("dropped.agent")
        let runOnly = try AgentName("run-only.agent")
        let before = try await node.dht.register(kept, protocols: ["/chat/1.0.0"], ttl: 3600, persist: true)
        _ = try await node.dht.register(dropped, persist: true)
        _ = try await node.dht.register(runOnly)
        #expect(try node.dht.unregister(dropped) == true)
        #expect(try node.dht.unregister(dropped) == false)
        #expect(node.dht.registeredNames == [kept, runOnly])

        // A restart: the process dies, a new host with the same key and database comes up on
        // another port.
        let restarted = try await network.restart(2)
        let dht = restarted.dht
        let bound = restarted.address.decapsulatingPeer()
        let restored = await dht.restoreRegistrations()
        #expect(restored.map(\.name) == [kept])
        #expect(dht.registeredNames == [kept])
        let republished = try #require(try restored.first?.result.get())
        #expect(republished.record.record.seq > before.record.record.seq)
        #expect(republished.record.record.protocols == ["/chat/1.0.0"])
        #expect(republished.record.record.ttl == 3600)
        // The new address reached the network.
        let seen = try await network.nodes[4].dht.resolve(kept, useCache: false)
        #expect(seen.record.record.addresses == [bound])
        // Restoring twice does not publish twice.
        #expect(await dht.restoreRegistrations().isEmpty)
        try await network.shutdown()
    }

    @Test("an unregister while the register is still publishing wins: the name is neither kept nor saved")
    func unregisterDuringRegister() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 8)
        let node = network.nodes[3]
        for index in 0..<5 {
            let name = try AgentName("racing-\(index).agent")
            let registering = Task { try await node.dht.register(name, persist: true) }
            // The own record is signed and saved before the publish starts: unregister then.
            var signed = false
            for _ in 0..<20_000 {
                if try node.dht.store.ownRecord(for: name) != nil {
                    signed = true
                    break
                }
                await Task.yield()
            }
            #expect(signed)
            try node.dht.unregister(name)
            let report = try await registering.value
            #expect(report.record.record.name == name)
            #expect(!node.dht.registeredNames.contains(name))
            #expect(try node.dht.store.registrations().registrations.isEmpty)
        }
        try await network.shutdown()
    }

    @Test("an unregister that comes while saved names are being restored is not undone by the restore")
    func unregisterDuringRestore() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 6)
        let node = network.nodes[2]
        let first = try AgentName("aaa-first.agent")
        let second = try AgentName("zzz-second.agent")
        let before = try await node.dht.register(first, persist: true)
        _ = try await node.dht.register(second, persist: true)
        // The same store under a new DHT (a restart, as in `restoredAfterRestart`).
        let dht = try await network.restart(2).dht
        let restoring = Task { await dht.restoreRegistrations() }
        // The restore has read both saved names once the first is being published (re-signed).
        var started = false
        for _ in 0..<20_000 {
            if let seq = try dht.store.ownRecord(for: first)?.record.seq, seq > before.record.record.seq {
                started = true
                break
            }
            await Task.yield()
        }
        #expect(started)
        #expect(try dht.unregister(second) == true)
        let restored = await restoring.value
        #expect(restored.map(\.name) == [first])
        #expect(dht.registeredNames == [first])
        #expect(try dht.store.registrations().registrations.map(\.name) == [first])
        try await network.shutdown()
    }

    @Test("a saved name that cannot be published again (lapsed and taken) fails, stays saved, and backs off")
    func failedRestoreBacksOff() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let store = try RecordStore(path: nil)
        let identity = Ed25519.PrivateKey()
        let name = try AgentName("lapsed.agent")
        let start = UInt64(Date().timeIntervalSince1970)
        do {
            let host = Network.Host(identity: identity, group: group, logger: logger)
            let dht = DHT(host: host, store: store, configuration: DHTLoopbackNetwork.configuration(), logger: logger, unixClock: { start })
            _ = try await dht.register(name, ttl: 60, persist: true)
            await host.shutdown()
        }
        // Offline past the record's expiry; meanwhile another key claimed the name, and our store
        // holds that claim.
        let later = start + 600
        let rival = Fixtures.record(Fixtures.bob, name: name, seq: later - 10, timestamp: later - 10)
        try store.put(rival, from: PeerID(publicKey: Fixtures.bob.publicKey), now: later)
        let host = Network.Host(identity: identity, group: group, logger: logger)
        let dht = DHT(host: host, store: store, configuration: DHTLoopbackNetwork.configuration(), logger: logger, unixClock: { later })
        let first = await dht.restoreRegistrations()
        #expect(first.count == 1)
        let error = try #require(first.first.flatMap { if case .failure(let error) = $0.result { error } else { nil } })
        #expect(error.kind == .nameHeld)
        #expect(dht.registeredNames.isEmpty)
        #expect(try store.registrations().registrations.map(\.name) == [name])
        // The maintenance round waits (a minute, doubling); a start-up restore tries at once.
        #expect(await dht.restoreRegistrations(backingOff: true).isEmpty)
        #expect(await dht.restoreRegistrations().count == 1)
        await host.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a request whose connection closes before its stream opens (trimmed) dials again and is answered")
    func requestAfterTrimmedConnection() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 3)
        let (asker, target) = (network.nodes[1], network.nodes[2])
        let first = try await asker.host.connect(to: target.address)
        // Wait until it is idle (identify and the build's lookups are done with it).
        for _ in 0..<200 where try await first.eventLoop.submit({ first.activity().streams }).get() > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        // Stall the connection's loop, queue a trim of the idle connection on it, then send a
        // request: it takes the connection (not closing yet), and its stream opens after the close.
        first.eventLoop.execute { usleep(100_000) }
        let trimmed = first.closeIfIdle()
        let peer = KademliaPeer(id: target.peerID, addresses: [target.address])
        let answer = try await asker.dht.request(KadMessage(type: .findNode, key: asker.peerID.multihash.bytes), to: peer)
        #expect(try await trimmed.get() == true)
        #expect(answer?.type == .findNode)
        let now = try #require(asker.host.connection(to: target.peerID))
        #expect(now !== first)
        try await network.shutdown()
    }

    @Test("a self-certifying name <peer id>.agent resolves through the peer's own record")
    func selfCertifying() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 6)
        let owner = network.nodes[2]
        let name = AgentName(selfCertifying: owner.peerID)
        let published = try await owner.dht.register(name)
        #expect(published.storedAt.count == 5)
        let resolved = try await network.nodes[4].dht.resolve(try AgentName(name.value.uppercased()), useCache: false)
        #expect(resolved.record.record.peerID == owner.peerID)
        #expect(resolved.record.record.addresses == [owner.address.decapsulatingPeer()])
        try await network.shutdown()
    }

    @Test("a self-certifying name of another peer cannot be registered")
    func foreignSelfCertifying() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let node = try await network.addNode()
        let other = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        await #expect(throws: ResolutionError.self) {
            _ = try await node.dht.register(AgentName(selfCertifying: other))
        }
        try await network.shutdown()
    }

    @Test("refresh keys are preimages that land in the bucket they refresh")
    func refreshPreimages() throws {
        let local = KademliaKey(hashing: Array("local".utf8))
        for bucket in [255, 250, 245, 241] {
            let key = try #require(DHT.preimage(inBucket: bucket, from: local))
            #expect(local.distance(to: KademliaKey(hashing: key)).bucketIndex == bucket)
        }
    }
}

@Suite("DHT republishing", .serialized)
struct DHTRepublishTests {
    @Test("the first node's names reach the replicas as soon as peers join, not a minute later")
    func firstNode() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let first = try await network.addNode()
        let name = try AgentName("first.agent")
        let alone = try await first.dht.register(name)
        #expect(alone.storedAt.isEmpty)
        var joined: [DHTLoopbackNetwork.Node] = []
        for _ in 0..<3 {
            let node = try await network.addNode()
            await node.dht.bootstrap([first.address])
            joined.append(node)
        }
        let now = { UInt64(Date().timeIntervalSince1970) }
        var holders = 0
        for _ in 0..<100 {
            holders = try joined.filter { try $0.dht.store.get(name, now: now()) != nil }.count
            if holders == joined.count { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(holders == joined.count, "only \(holders) of \(joined.count) peers hold the record")
        // The first node can go: its name stays resolvable once the others know each other, which
        // a self-lookup each starts. A peer met over a connection it dialled to us enters the
        // table only after our dial-back to an address it advertises (spec/dht.md §4), which
        // completes in the background: wait for it.
        for node in joined { _ = await node.dht.lookupClosestPeers(to: node.peerID.multihash.bytes) }
        let others = { (node: DHTLoopbackNetwork.Node) in
            Set(joined.map(\.peerID)).subtracting([node.peerID]).isSubset(of: node.dht.routingTableEntries.map(\.peer.id))
        }
        for _ in 0..<200 where !joined.allSatisfy(others) { try await Task.sleep(for: .milliseconds(25)) }
        #expect(joined.allSatisfy(others), "the joined nodes did not admit each other")
        await network.stop(0)
        let resolved = try await joined[2].dht.resolve(name, useCache: false)
        #expect(resolved.record.record.publicKey == first.host.identity.publicKey)
        #expect(resolved.source == .network)
        try await network.shutdown()
    }
}

@Suite("DHT client mode", .serialized)
struct DHTClientModeTests {
    @Test("a client-mode node resolves and publishes, but serves nothing and enters no routing table")
    func clientMode() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        try await network.build(count: 6)
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.mode = .client
        let client = try await network.addNode(configuration: configuration)
        #expect(client.dht.mode == .client)
        #expect(!client.host.protocols.contains(DHTConfiguration.agentProtocolID))
        await client.dht.bootstrap([network.nodes[0].address])
        #expect(client.dht.routingTableEntries.count >= 5)

        let name = try AgentName("server-0.agent")
        _ = try await network.nodes[0].dht.register(name)
        let resolved = try await client.dht.resolve(name, useCache: false)
        #expect(resolved.record.record.publicKey == network.nodes[0].host.identity.publicKey)
        let own = try await client.dht.register(try AgentName("from-a-client.agent"))
        #expect(own.storedAt.count == 5)

        // Give identify time to reach the servers, then no server lists the client.
        try await Task.sleep(for: .milliseconds(300))
        for node in network.nodes.prefix(6) {
            #expect(!node.dht.routingTableEntries.contains { $0.peer.id == client.peerID })
        }
        // Its kad protocol is not served: a request to it fails.
        await #expect(throws: (any Error).self) {
            _ = try await network.nodes[1].dht.request(KadMessage(type: .ping), to: KademliaPeer(id: client.peerID, addresses: [client.address]))
        }
        try await network.shutdown()
    }
}
