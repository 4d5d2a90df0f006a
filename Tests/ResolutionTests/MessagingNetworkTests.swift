import AgentTesting
import Application
import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// Issue #12, "The 100-node in-process network": messages between random pairs of 100 real hosts
/// (TCP, Noise, yamux on 127.0.0.1) with the DHT and the messaging wired as agentd wires them
/// (`DHTMessaging`), 30 % of the nodes offline while the messages are sent.
///
/// "Offline" is the honest version: the hosts are aborted (sockets closed, like killed processes),
/// and come back as new hosts with the same keys, on the same ports, with the same stores (record,
/// inbox/outbox and mailbox replica stores are kept as objects: in memory, as a process keeps its
/// SQLite files across a restart). On return each node does what agentd does at start: restore its
/// registrations, drain its mailbox; then the senders' retry job runs once, and the replicas'
/// hourly re-replication once, followed by a second drain of every node.
@Suite("Messages over 100 in-process nodes", .serialized)
struct MessagingNetworkTests {
    static let nodeCount = 100
    static let offlineCount = 30
    static let messageCount = 1000

    /// One node's messaging state that survives its restart.
    final class Peer: Sendable {
        let name: AgentName
        let messageStore: MessageStore
        let mailboxStore: MailboxStore
        let messaging: NIOLockedValueBox<DHTMessaging?> = NIOLockedValueBox(nil)

        init(name: AgentName) throws {
            self.name = name
            messageStore = try MessageStore(path: nil)
            mailboxStore = try MailboxStore(path: nil)
        }

        var current: DHTMessaging { messaging.withLockedValue { $0! } }
    }

    /// What each node's local agent was handed, in order: (message id, sender, sender_seq).
    struct Handed: Sendable, Hashable {
        let id: MessageID
        let sender: String
        let sequence: UInt64
    }

    static func messagingConfiguration() -> DHTMessaging.Configuration {
        var configuration = DHTMessaging.Configuration()
        // The outbox job runs when the test says (no waiting 30 s for a queued message's turn).
        configuration.messenger.firstRetry = 0
        return configuration
    }

    /// Wires the messaging of node `index` on its current host and DHT, subscribes its local agent
    /// (a task that records what it is handed, ending when the messaging stops), and serves.
    static func attach(
        _ index: Int, network: DHTLoopbackNetwork, peer: Peer, handed: NIOLockedValueBox<[Int: [Handed]]>
    ) -> Task<Void, Never> {
        let node = network.nodes[index]
        var logger = Logger(label: "messaging-test")
        logger.logLevel = .critical
        let messaging = DHTMessaging(
            host: node.host, dht: node.dht, identity: node.host.identity, messageStore: peer.messageStore,
            mailboxStore: peer.mailboxStore, configuration: messagingConfiguration(), logger: logger)
        messaging.setLocalNames([peer.name])
        let stream = messaging.messenger.subscribe(bufferSize: 4096)
        peer.messaging.withLockedValue { $0 = messaging }
        messaging.start()
        return Task {
            for await signed in stream {
                let entry = Handed(
                    id: signed.message.id, sender: signed.message.sender.value, sequence: signed.message.senderSequence)
                handed.withLockedValue { $0[index, default: []].append(entry) }
            }
        }
    }

    static func seconds(since start: NIODeadline) -> Double { Double((NIODeadline.now() - start).nanoseconds) / 1e9 }

    /// Progress on stderr, unbuffered (a run that stops making progress shows where).
    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("[messaging network] \(line)\n".utf8))
    }

    @Test("1,000 messages between random pairs, 30 % of the nodes offline: all delivered after they return, once, in order; a capability query finds every provider")
    func thousandMessages() async throws {
        let seed: UInt64 = 0x6d65_7373_6167_6573
        var generator = SeededGenerator(seed: seed)
        let network = DHTLoopbackNetwork()
        let started = NIODeadline.now()
        try await network.build(count: Self.nodeCount, seed: seed)
        let built = NIODeadline.now()
        Self.progress("built \(Self.nodeCount) nodes in \(Self.seconds(since: started)) s")

        // Every node: its stores, its messaging, a registered name (kept for restarts).
        var peers: [Peer] = []
        for index in 0..<Self.nodeCount { peers.append(try Peer(name: try AgentName("agent-\(index).agent"))) }
        let handed = NIOLockedValueBox<[Int: [Handed]]>([:])
        var listeners: [Task<Void, Never>] = []
        for index in 0..<Self.nodeCount {
            listeners.append(Self.attach(index, network: network, peer: peers[index], handed: handed))
        }
        let registerFailures = NIOLockedValueBox<[String]>([])
        let unplaced = NIOLockedValueBox(0)
        let allPeers = peers
        await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
            do {
                let report = try await network.nodes[index].dht.register(allPeers[index].name, persist: true)
                if report.storedAt.isEmpty { unplaced.withLockedValue { $0 += 1 } }
            } catch {
                registerFailures.withLockedValue { $0.append("node \(index): \(error)") }
            }
        }
        try #require(registerFailures.withLockedValue { $0 }.isEmpty, "\(registerFailures.withLockedValue { $0 })")
        // Each node's maintenance round (every 60 s in agentd), run until nothing is due: a name
        // that no replica took (all requests timed out while the network was busy) is published
        // again (spec/dht.md §7.1).
        var rounds = 0
        while rounds < 5 {
            let republished = NIOLockedValueBox(0)
            await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
                let count = await network.nodes[index].dht.republishOwnRecords()
                republished.withLockedValue { $0 += count }
            }
            rounds += 1
            if republished.withLockedValue({ $0 }) == 0 { break }
        }
        Self.progress("registered: \(unplaced.withLockedValue { $0 }) names first reached no replica; \(rounds) maintenance rounds")
        let registered = NIODeadline.now()
        Self.progress("phase: built \(Self.seconds(since: started)) s; registered \(Double((registered - built).nanoseconds) / 1e9) s")

        // 30 nodes go offline (never node 0: returning nodes join through it).
        let offline = Set(Array(1..<Self.nodeCount).shuffled(using: &generator).prefix(Self.offlineCount))
        for index in offline.sorted() {
            peers[index].current.stop()
            await network.stop(index)
        }
        let online = (0..<Self.nodeCount).filter { !offline.contains($0) }

        // 1,000 messages: a random online sender, a random other recipient (any node). Each sender
        // sends its own messages one after another; senders run in parallel.
        struct Planned: Sendable {
            let number: Int
            let sender: Int
            let recipient: Int
            let id: MessageID
        }
        var plan: [Int: [Planned]] = [:]
        for number in 0..<Self.messageCount {
            let sender = online.randomElement(using: &generator)!
            var recipient = Int.random(in: 0..<Self.nodeCount - 1, using: &generator)
            if recipient >= sender { recipient += 1 }
            let id = MessageID(high: generator.next(), low: generator.next())
            plan[sender, default: []].append(Planned(number: number, sender: sender, recipient: recipient, id: id))
        }
        let toOffline = plan.values.joined().filter { offline.contains($0.recipient) }.count
        let results = NIOLockedValueBox<[Int: Messenger.Delivery]>([:])
        let sendFailures = NIOLockedValueBox<[String]>([])
        let sendStarted = NIODeadline.now()
        let senders = plan.keys.sorted()
        let frozenPlan = plan
        await concurrently(senders, width: 16) { sender in
            let messenger = allPeers[sender].current.messenger
            for planned in frozenPlan[sender]! {
                let message = AgentMessage(
                    id: planned.id, kind: .notification, sender: allPeers[sender].name,
                    recipient: allPeers[planned.recipient].name, timestamp: MessageService.systemMilliseconds(),
                    content: .text("message \(planned.number)"))
                let done = results.withLockedValue { $0.count } + sendFailures.withLockedValue { $0.count }
                if done % 100 == 0 { Self.progress("sent \(done) at \(Self.seconds(since: sendStarted)) s") }
                do {
                    let result = try await messenger.send(message)
                    results.withLockedValue { $0[planned.number] = result.delivery }
                } catch {
                    sendFailures.withLockedValue { $0.append("message \(planned.number) to node \(planned.recipient): \(error)") }
                }
            }
        }
        let sent = NIODeadline.now()
        let failures = sendFailures.withLockedValue { $0 }
        #expect(failures.isEmpty, "\(failures.count) sends failed: \(failures.prefix(5))")
        let deliveries = results.withLockedValue { $0 }
        var split: [Messenger.Delivery: Int] = [:]
        for delivery in deliveries.values { split[delivery, default: 0] += 1 }
        let directToOffline = plan.values.joined().filter { offline.contains($0.recipient) && deliveries[$0.number] == .direct }
        #expect(directToOffline.isEmpty, "\(directToOffline.count) messages to offline nodes reported direct")
        Self.progress("phase: sent in \(Double((sent - sendStarted).nanoseconds) / 1e9) s: \(split), failed \(failures.count), to offline \(toOffline)")

        // The offline nodes come back: same key, same port, same stores; they restore their
        // registrations and drain their mailboxes, as agentd does at start.
        let returnStarted = NIODeadline.now()
        for index in offline.sorted() {
            try await network.restart(index, samePort: true)
            listeners.append(Self.attach(index, network: network, peer: peers[index], handed: handed))
        }
        await concurrently(offline.sorted(), width: 8) { index in
            _ = await network.nodes[index].dht.restoreRegistrations()
        }
        let firstDrain = NIOLockedValueBox(0)
        await concurrently(offline.sorted(), width: 8) { index in
            let taken = await allPeers[index].current.messenger.drain(allPeers[index].name)
            firstDrain.withLockedValue { $0 += taken }
        }
        let drained = NIODeadline.now()
        Self.progress("phase: returned and drained in \(Double((drained - returnStarted).nanoseconds) / 1e9) s, taken \(firstDrain.withLockedValue { $0 })")
        // The senders' outbox job: queued messages are attempted again (direct first).
        await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
            await allPeers[index].current.messenger.retryDue()
        }
        Self.progress("phase: retries done at \(Self.seconds(since: started)) s")
        // The replicas' hourly job (re-replication to the current closest peers), then every node
        // drains again: what was stored at replicas that are no longer among the closest after
        // the returns reaches the recipients now; nothing may be handed over twice.
        let now = UInt64(Date().timeIntervalSince1970)
        let copied = NIOLockedValueBox(0)
        await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
            let count = await allPeers[index].current.mailboxClient.replicate(from: allPeers[index].mailboxStore, now: now)
            copied.withLockedValue { $0 += count }
        }
        let secondDrain = NIOLockedValueBox(0)
        Self.progress("phase: re-replication copied \(copied.withLockedValue { $0 }) at \(Self.seconds(since: started)) s")
        await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
            let taken = await allPeers[index].current.messenger.drain(allPeers[index].name)
            secondDrain.withLockedValue { $0 += taken }
        }
        // A third drain after everything settled takes nothing new.
        let thirdDrain = NIOLockedValueBox(0)
        Self.progress("phase: second drain took \(secondDrain.withLockedValue { $0 }) at \(Self.seconds(since: started)) s")
        await concurrently(Array(0..<Self.nodeCount), width: 8) { index in
            let taken = await allPeers[index].current.messenger.drain(allPeers[index].name)
            thirdDrain.withLockedValue { $0 += taken }
        }
        let finished = NIODeadline.now()

        // "A capability query finds every provider": 12 nodes provide a capability as their card
        // service does (a provider record under the capability's key); a query from 5 other nodes
        // finds all 12.
        let capability = "translate-\(seed)"
        let key = CapabilityCard.providerKey(capability: capability)
        let providers = Array((0..<Self.nodeCount).shuffled(using: &generator).prefix(12))
        await concurrently(providers, width: 6) { index in _ = await network.nodes[index].dht.provide(key) }
        let askers = (0..<Self.nodeCount).filter { !providers.contains($0) }.shuffled(using: &generator).prefix(5)
        let expectedProviders = Set(providers.map { network.nodes[$0].host.peerID })
        for asker in askers {
            let found = Set(await network.nodes[asker].dht.findProviders(key, limit: 20).map(\.id))
            #expect(found == expectedProviders, "node \(asker) found \(found.intersection(expectedProviders).count) of 12 providers of \(capability)")
        }
        Self.progress("phase: capability query done at \(Self.seconds(since: started)) s")

        // What every local agent was handed, complete: stop the messaging (ends the subscriptions)
        // and wait for the listeners.
        let leftOver = try peers.reduce(0) { $0 + (try $1.mailboxStore.mailboxes(now: now).reduce(0) { $0 + $1.messages }) }
        for peer in peers { peer.current.stop() }
        for listener in listeners { await listener.value }
        let log = handed.withLockedValue { $0 }

        // Every message handed to the right agent exactly once; each sender's messages in order.
        var expected: [MessageID: Planned] = [:]
        for planned in plan.values.joined() { expected[planned.id] = planned }
        var seen: [MessageID: Int] = [:]
        var misrouted: [String] = []
        var outOfOrder: [String] = []
        for (index, entries) in log {
            var lastSequence: [String: UInt64] = [:]
            for entry in entries {
                seen[entry.id, default: 0] += 1
                if let planned = expected[entry.id], planned.recipient != index {
                    misrouted.append("message \(planned.number) for node \(planned.recipient) handed to node \(index)")
                }
                if let last = lastSequence[entry.sender], entry.sequence <= last {
                    outOfOrder.append("node \(index): \(entry.sender)'s sequence \(entry.sequence) after \(last)")
                }
                lastSequence[entry.sender] = entry.sequence
            }
        }
        let missing = expected.values.filter { seen[$0.id] == nil }.sorted { $0.number < $1.number }
        let twice = seen.filter { $0.value > 1 }
        let unknown = seen.keys.filter { expected[$0] == nil }
        #expect(missing.isEmpty, "\(missing.count) messages never handed over, e.g. \(missing.prefix(5).map { "\($0.number) → node \($0.recipient) (\(deliveries[$0.number].map(\.rawValue) ?? "not sent"))" })")
        #expect(twice.isEmpty, "\(twice.count) messages handed over more than once")
        #expect(unknown.isEmpty, "\(unknown.count) messages nobody sent")
        #expect(misrouted.isEmpty, "\(misrouted.prefix(5))")
        #expect(outOfOrder.isEmpty, "\(outOfOrder.count) out of order: \(outOfOrder.prefix(5))")
        #expect(thirdDrain.withLockedValue { $0 } == 0, "a drain after everything was delivered took \(thirdDrain.withLockedValue { $0 }) messages")
        // The inboxes agree with what the agents were handed.
        var inboxTotal = 0
        for (index, peer) in peers.enumerated() {
            let inbox = try peer.messageStore.inbox(limit: 10_000)
            inboxTotal += inbox.count
            #expect(Set(inbox.map(\.id)).count == inbox.count, "node \(index)'s inbox holds a message twice")
        }
        #expect(inboxTotal == Self.messageCount, "the inboxes hold \(inboxTotal) messages")

        print(
            String(
                format:
                    "messaging network (seed %llu): %d nodes built in %.1f s, registered in %.1f s; %d messages (%d to the %d offline nodes) sent in %.1f s: direct %d, mailbox %d, queued %d, failed %d; return and first drain %.1f s (%d taken), outbox retries, re-replication (%d copied) and second drain (%d taken), third drain (%d) %.1f s; handed over %d, twice %d, missing %d; left at replicas %d; total %.1f s",
                seed, Self.nodeCount, Double((built - started).nanoseconds) / 1e9, Double((registered - built).nanoseconds) / 1e9,
                Self.messageCount, toOffline, Self.offlineCount, Double((sent - sendStarted).nanoseconds) / 1e9,
                split[.direct, default: 0], split[.mailbox, default: 0], split[.queued, default: 0], failures.count,
                Double((drained - returnStarted).nanoseconds) / 1e9, firstDrain.withLockedValue { $0 },
                copied.withLockedValue { $0 }, secondDrain.withLockedValue { $0 }, thirdDrain.withLockedValue { $0 },
                Double((finished - drained).nanoseconds) / 1e9, seen.count, twice.count, missing.count, leftOver,
                Self.seconds(since: started)))
        try await network.shutdown()
    }
}
