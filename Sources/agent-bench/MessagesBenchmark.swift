import Application
import ArgumentParser
import Foundation
import Identity
import Logging
import Multiformats
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Network
import Resolution

/// `agent-bench messages`: agent messages over the node's real paths, in one process on loopback,
/// against baselines measured in the same run — direct delivery (`/agent/msg/1.0.0` into the inbox,
/// committed with SQLite `synchronous=FULL`) against ping on the same connection; mailbox deposits
/// at 3 replicas and the recipient's drain; the cost of one durable store at a replica.
struct MessagesBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "messages",
        abstract: "Direct messages/s and latency against ping, mailbox store and drain rates, fsync cost per stored message.",
        discussion: """
            Hosts A (senders) and B (recipients) on loopback TCP (Noise + yamux), and 3 mailbox replica \
            hosts, each on its own one-thread event loop group. Baseline P: ping round \
            trips on the A-B connection, sequential, measured first. "protocol only" sends with \
            MessageService.send and B's handler takes the message without storing it; "node path" \
            sends with Messenger.send (sequence and outbox committed at A) and B's handler takes it \
            into its inbox (Messenger.accept), both stores SQLite files with synchronous=FULL: the \
            receipt comes back only after B's commit. Latency is send call to accepted receipt. \
            Mailbox: sealed messages deposited with MailboxClient.deposit at 3 replicas (MailboxStore \
            files, synchronous=FULL); the drain is Messenger.drain (fetch from the 3 replicas, open, \
            verify, inbox commit, acknowledge). fsync: MailboxStore.store on a file in the data \
            directory against an in-memory store, interleaved runs, best kept. Build with -c release.
            """
    )

    @Option(help: "Messages one agent pair sends one after another, per figure. Default 2000; --quick 100.")
    var messages: Int?

    @Option(help: "Agent pairs sending at once (each pair sequentially) for the many-pairs figures.")
    var pairs = 16

    @Option(help: "Messages per pair in the many-pairs figures. Default 200; --quick 10.")
    var perPair: Int?

    @Option(help: "Messages deposited one after another at the mailbox replicas (as many again concurrently). Default 1000; --quick 50.")
    var mailboxMessages: Int?

    @Option(help: "Deposits in flight for the concurrent deposit figure.")
    var concurrency = 16

    @Option(help: "MailboxStore.store calls per run of the fsync figure. Default 2000; --quick 100.")
    var stores: Int?

    @Option(help: "Runs of the fsync figure (file and memory interleaved); the best of each is kept.")
    var runs = 3

    @Option(help: "Bytes of text per message.")
    var size = 256

    @Option(help: "Ping round trips for each baseline. Default 1000; --quick 100.")
    var pings: Int?

    @Option(help: "Directory for the SQLite files (default: a new directory under the system's temporary directory; removed afterwards).")
    var dataDir: String?

    @Flag(help: "Skip the mailbox fetch and drain figures.")
    var noDrain = false

    @Flag(help: "Small counts throughout (smoke test).")
    var quick = false

    @Flag(help: "Print one JSON document instead of the table.")
    var json = false

    mutating func validate() throws {
        let counts = [messages, perPair, mailboxMessages, stores, pings].compactMap { $0 } + [pairs, concurrency, runs, size]
        guard counts.allSatisfy({ $0 > 0 }) else { throw ValidationError("counts and sizes must be positive") }
        guard size <= 64 * 1024 else { throw ValidationError("--size must be at most 65536 bytes") }
    }

    struct Settings {
        var messages: Int
        var perPair: Int
        var mailboxMessages: Int
        var stores: Int
        var pings: Int
    }

    var settings: Settings {
        Settings(
            messages: messages ?? (quick ? 100 : 2000), perPair: perPair ?? (quick ? 10 : 200),
            mailboxMessages: mailboxMessages ?? (quick ? 50 : 1000), stores: stores ?? (quick ? 100 : 2000),
            pings: pings ?? (quick ? 100 : 1000))
    }

    func run() async throws {
        MemoryTuning.apply()
        let settings = self.settings
        let foreignLoad = ForeignLoad()
        var report = BenchmarkReport(machine: .current())
        report.benchmark = "messages"
        report.parameters = [
            "messages": "\(settings.messages)", "pairs": "\(pairs)", "per-pair": "\(settings.perPair)",
            "mailbox-messages": "\(settings.mailboxMessages)", "concurrency": "\(concurrency)",
            "stores": "\(settings.stores)", "runs": "\(runs)", "size": "\(size)", "pings": "\(settings.pings)",
            "no-drain": "\(noDrain)",
        ]
        let parent = dataDir.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        let directory = parent.appendingPathComponent("agent-bench-messages-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        report.note("SQLite files in \(directory.deletingLastPathComponent().path) (removed afterwards)")

        let world = try await World.start(
            directory: directory, pairs: pairs, mailboxCapacity: 4 * settings.mailboxMessages + 1000)
        do {
            try await measureDirect(settings, world: world, into: &report)
            try await measureMailbox(settings, world: world, into: &report)
        } catch {
            await world.shutdown()
            throw error
        }
        await world.shutdown()
        try measureFsync(settings, directory: directory, into: &report)

        report.otherProcessesCores = foreignLoad.cores()
        print(json ? try report.json() : report.table())
    }

    // MARK: Direct

    private func measureDirect(_ settings: Settings, world: World, into report: inout BenchmarkReport) async throws {
        // Warm up: the connection, the stores, both handler modes.
        _ = try await Ping.ping(world.a, peer: world.b.peerID, count: 20)
        world.storeInInbox.withLockedValue { $0 = false }
        _ = try await sendSequential(count: 20, pair: 0, nodePath: false, world: world)
        world.storeInInbox.withLockedValue { $0 = true }
        _ = try await sendSequential(count: 20, pair: 0, nodePath: true, world: world)

        let clock = ContinuousClock()
        let pingStart = clock.now
        let ping = try await Ping.ping(world.a, peer: world.b.peerID, count: settings.pings).map(\.seconds)
        let pingRate = Double(ping.count) / (clock.now - pingStart).seconds
        report.add("baseline.ping.rate", tag: "P", "ping A→B, sequential round trips", pingRate, .perSecond)
        report.add("baseline.ping.p50", tag: "P50", "ping A→B RTT, p50", median(ping), .seconds)
        report.add("baseline.ping.p99", tag: "P99", "ping A→B RTT, p99", percentile(ping, 0.99), .seconds)

        for nodePath in [false, true] {
            world.storeInInbox.withLockedValue { $0 = nodePath }
            let what = nodePath ? "node path" : "protocol only"
            let key = nodePath ? "node" : "protocol"
            let start = clock.now
            let latencies = try await sendSequential(count: settings.messages, pair: 0, nodePath: nodePath, world: world)
            let rate = Double(latencies.count) / (clock.now - start).seconds
            report.add("direct.\(key).one.rate", "1 pair, \(what): messages", rate, .perSecond, over: ["baseline.ping.rate"])
            report.add(
                "direct.\(key).one.p50", "1 pair, \(what): latency p50", median(latencies), .seconds, over: ["baseline.ping.p50"])
            report.add(
                "direct.\(key).one.p99", "1 pair, \(what): latency p99", percentile(latencies, 0.99), .seconds,
                over: ["baseline.ping.p99"])
        }
        for nodePath in [false, true] {
            world.storeInInbox.withLockedValue { $0 = nodePath }
            let what = nodePath ? "node path" : "protocol only"
            let key = nodePath ? "node" : "protocol"
            let start = clock.now
            let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for pair in 0..<pairs {
                    group.addTask {
                        try await sendSequential(count: settings.perPair, pair: pair, nodePath: nodePath, world: world)
                    }
                }
                var all: [Double] = []
                for try await some in group { all += some }
                return all
            }
            let rate = Double(latencies.count) / (clock.now - start).seconds
            report.add(
                "direct.\(key).many.rate", "\(pairs) pairs at once, \(what): messages", rate, .perSecond,
                over: ["baseline.ping.rate"])
            report.add(
                "direct.\(key).many.p50", "\(pairs) pairs at once, \(what): latency p50", median(latencies), .seconds,
                over: ["baseline.ping.p50"])
            report.add(
                "direct.\(key).many.p99", "\(pairs) pairs at once, \(what): latency p99", percentile(latencies, 0.99),
                .seconds, over: ["baseline.ping.p99"])
        }
        let delivered = try world.bMessenger.inbox(limit: Int.max).count
        let expected = 20 + settings.messages + pairs * settings.perPair
        guard delivered == expected else {
            throw BenchmarkError("B's inbox holds \(delivered) messages; the node-path runs sent \(expected)")
        }
        report.note(
            "ratios: a rate ÷P is messages per ping round trip; a latency ÷P50/÷P99 is that latency in ping round trips")
        report.note("B's messenger takes any rate per sender (the node's limit, a burst of 60 then 2/s, is lifted)")
        report.note("B's inbox held all \(delivered) node-path messages at the end (checked)")
    }

    /// Sends `count` messages from pair `pair`'s sender to its recipient, one after another.
    /// - Returns: each one's latency (send call to accepted receipt), in seconds.
    private func sendSequential(count: Int, pair: Int, nodePath: Bool, world: World) async throws -> [Double] {
        let clock = ContinuousClock()
        let text = String(repeating: "m", count: size)
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        for _ in 0..<count {
            let message = AgentMessage(
                kind: .notification, sender: world.senders[pair], recipient: world.recipients[pair],
                timestamp: MessageService.systemMilliseconds(), content: .text(text))
            let start = clock.now
            if nodePath {
                let result = try await world.aMessenger.send(message)
                guard result.delivery == .direct else {
                    throw BenchmarkError("a message went \(result.delivery.rawValue): \(result.reason ?? "")")
                }
            } else {
                let outcome = try await world.aService.send(message)
                guard !outcome.wasDuplicate else { throw BenchmarkError("a fresh message was taken for a duplicate") }
            }
            latencies.append((clock.now - start).seconds)
        }
        return latencies
    }

    // MARK: Mailbox

    private func measureMailbox(_ settings: Settings, world: World, into report: inout BenchmarkReport) async throws {
        let count = settings.mailboxMessages
        let now = MessageService.systemMilliseconds()
        let text = String(repeating: "m", count: size)
        let recordOfRecipient = try world.directory.record(for: world.mailboxRecipient)
        var items: [MailboxStore.Item] = []
        for sequence in 1...(2 * count + 10) {
            let message = AgentMessage(
                kind: .notification, sender: world.mailboxSender, recipient: world.mailboxRecipient, timestamp: now,
                content: .text(text), senderSequence: UInt64(sequence))
            let signed = try SignedAgentMessage(signing: message, with: world.aKey)
            items.append(
                MailboxStore.Item(
                    mailbox: MailboxWire.mailboxKey(for: world.mailboxRecipient), id: message.id.bytes,
                    sealed: try SealedBox.seal(signed.bytes, to: recordOfRecipient.record.publicKey),
                    expires: now / 1000 + 24 * 3600))
        }
        let warmUp = items[0..<10]
        let sequential = items[10..<(10 + count)]
        let concurrent = items[(10 + count)...]

        @Sendable func deposit(_ item: MailboxStore.Item) async throws -> Double {
            let clock = ContinuousClock()
            let start = clock.now
            let result = try await world.aMailbox.deposit(item, recipientPeer: nil)
            guard result.confirmed.count == 3 else {
                throw BenchmarkError("\(result.confirmed.count) of 3 replicas confirmed: \(result.failures)")
            }
            return (clock.now - start).seconds
        }
        for item in warmUp { _ = try await deposit(item) }
        let ping = try await Ping.ping(world.a, peer: world.replicas[0].host.peerID, count: settings.pings).map(\.seconds)
        report.add("baseline.ping.replica.p50", tag: "R50", "ping A→replica RTT, p50", median(ping), .seconds)

        let clock = ContinuousClock()
        var start = clock.now
        var latencies: [Double] = []
        for item in sequential { latencies.append(try await deposit(item)) }
        var rate = Double(latencies.count) / (clock.now - start).seconds
        report.add("mailbox.deposit.one.rate", "mailbox deposit at 3 replicas, one at a time", rate, .perSecond)
        report.add(
            "mailbox.deposit.one.p50", "mailbox deposit at 3 replicas, latency p50", median(latencies), .seconds,
            over: ["baseline.ping.replica.p50"])
        report.add(
            "mailbox.deposit.one.p99", "mailbox deposit at 3 replicas, latency p99", percentile(latencies, 0.99), .seconds)

        start = clock.now
        try await withThrowingTaskGroup(of: Double.self) { group in
            var iterator = concurrent.makeIterator()
            for _ in 0..<concurrency {
                guard let item = iterator.next() else { break }
                group.addTask { try await deposit(item) }
            }
            while try await group.next() != nil {
                if let item = iterator.next() { group.addTask { try await deposit(item) } }
            }
        }
        rate = Double(concurrent.count) / (clock.now - start).seconds
        report.add("mailbox.deposit.many.rate", "mailbox deposit at 3 replicas, \(concurrency) in flight", rate, .perSecond)

        let held = items.count
        for replica in world.replicas {
            let usage = try replica.store.usage(now: now / 1000).messages
            guard usage == held else { throw BenchmarkError("a replica holds \(usage) messages of \(held)") }
        }

        guard !noDrain else {
            report.note("mailbox: \(held) sealed messages (\(items[0].sealed.count) B each) stored at each of 3 replicas (checked); fetch and drain skipped (--no-drain)")
            return
        }
        // The fetch alone (no acknowledgement: the messages stay), then the recipient's drain.
        start = clock.now
        let fetched = try await world.bMailbox.drain(name: world.mailboxRecipient, key: world.bKey)
        rate = Double(fetched.items.count) / (clock.now - start).seconds
        guard fetched.items.count == held else {
            throw BenchmarkError("the fetch from 3 replicas found \(fetched.items.count) of \(held) messages")
        }
        report.add("mailbox.fetch.rate", "mailbox fetch from 3 replicas (MailboxClient.drain)", rate, .perSecond)
        start = clock.now
        let taken = await world.bMessenger.drain(world.mailboxRecipient)
        rate = Double(taken) / (clock.now - start).seconds
        guard taken == held else { throw BenchmarkError("the drain took \(taken) of \(held) messages into the inbox") }
        report.add("mailbox.drain.rate", "mailbox drain into the inbox (Messenger.drain)", rate, .perSecond)
        for replica in world.replicas {
            let left = try replica.store.usage(now: now / 1000).messages
            guard left == 0 else { throw BenchmarkError("a replica still holds \(left) messages after the drain") }
        }
        report.note(
            "mailbox: \(held) sealed messages (\(items[0].sealed.count) B each) stored at each of 3 replicas, all drained into B's inbox and acknowledged (checked)"
        )
    }

    // MARK: fsync

    private func measureFsync(_ settings: Settings, directory: URL, into report: inout BenchmarkReport) throws {
        var configuration = MailboxStore.Configuration()
        let total = settings.stores * runs + 100
        configuration.maximumMessagesPerMailbox = total
        configuration.maximumMessagesPerSender = total
        configuration.maximumMessages = total
        let file = try MailboxStore(path: directory.appendingPathComponent("fsync.sqlite").path, configuration: configuration)
        let memory = try MailboxStore(path: nil, configuration: configuration)
        let now = MessageService.systemMilliseconds() / 1000
        let sealedSize = size + 400
        var counter: UInt64 = 0
        func items(_ count: Int) -> [MailboxStore.Item] {
            (0..<count).map { _ in
                counter += 1
                var id = [UInt8](repeating: 0, count: MailboxStore.idLength)
                withUnsafeBytes(of: counter.bigEndian) { id.replaceSubrange(8..<16, with: $0) }
                return MailboxStore.Item(
                    mailbox: [UInt8](repeating: 7, count: MailboxStore.mailboxKeyLength), id: id,
                    sealed: [UInt8](repeating: UInt8(truncatingIfNeeded: counter), count: sealedSize), expires: now + 3600)
            }
        }
        func time(_ store: MailboxStore, _ batch: [MailboxStore.Item]) throws -> Double {
            let clock = ContinuousClock()
            let start = clock.now
            for item in batch {
                guard try store.store(item, from: "bench", now: now) == .stored else {
                    throw BenchmarkError("a fresh item was not stored")
                }
            }
            return (clock.now - start).seconds / Double(batch.count)
        }
        _ = try time(file, items(50))
        _ = try time(memory, items(50))
        var fileRuns: [Double] = []
        var memoryRuns: [Double] = []
        for _ in 0..<runs {
            memoryRuns.append(try time(memory, items(settings.stores)))
            fileRuns.append(try time(file, items(settings.stores)))
        }
        let bestFile = fileRuns.min()!
        let bestMemory = memoryRuns.min()!
        report.add("store.memory", tag: "M", "MailboxStore.store, in memory, per message", bestMemory, .seconds)
        report.add(
            "store.file", "MailboxStore.store, file, synchronous=FULL, per message", bestFile, .seconds, over: ["store.memory"])
        report.add("store.fsync", "  of which the durable commit (file − memory)", bestFile - bestMemory, .seconds)
        if runs > 1 {
            // The quota checks sum over the rows already stored: a store's cost grows with them.
            report.add(
                "store.memory.first", "  in memory, first run (from 50 rows stored)", memoryRuns[0], .seconds)
            report.add(
                "store.memory.last", "  in memory, last run (from \(50 + (runs - 1) * settings.stores) rows stored)",
                memoryRuns[runs - 1], .seconds, over: ["store.memory.first"])
        }
        report.note("fsync rows: \(sealedSize)-byte sealed items, one transaction each, WAL journal; best of \(runs) runs")
    }
}

extension MessagesBenchmark {
    /// Name → record, as the DHT would answer.
    struct Directory: AgentDirectory {
        let records: [AgentName: SignedAgentRecord]

        func record(for name: AgentName) throws -> SignedAgentRecord {
            guard let record = records[name] else { throw ResolutionError(.notFound, "no record for \(name)") }
            return record
        }
    }

    struct Replica {
        let host: Host
        let address: Multiaddr
        let store: MailboxStore
    }

    /// The hosts, services and stores of one run.
    final class World: Sendable {
        let groups: [MultiThreadedEventLoopGroup]
        let aKey: Ed25519.PrivateKey
        let bKey: Ed25519.PrivateKey
        let a: Host
        let b: Host
        let replicas: [Replica]
        let directory: Directory
        let senders: [AgentName]
        let recipients: [AgentName]
        let mailboxSender: AgentName
        let mailboxRecipient: AgentName
        let aService: MessageService
        let bService: MessageService
        let aMessenger: Messenger
        let bMessenger: Messenger
        let aMailbox: MailboxClient
        let bMailbox: MailboxClient
        /// Whether B's handler takes messages into its inbox (the node path) or only accepts them.
        let storeInInbox = NIOLockedValueBox(true)

        private init(
            groups: [MultiThreadedEventLoopGroup], aKey: Ed25519.PrivateKey, bKey: Ed25519.PrivateKey, a: Host, b: Host,
            replicas: [Replica], directory: Directory, senders: [AgentName], recipients: [AgentName],
            mailboxSender: AgentName, mailboxRecipient: AgentName, aService: MessageService, bService: MessageService,
            aMessenger: Messenger, bMessenger: Messenger, aMailbox: MailboxClient, bMailbox: MailboxClient
        ) {
            self.groups = groups
            self.aKey = aKey
            self.bKey = bKey
            self.a = a
            self.b = b
            self.replicas = replicas
            self.directory = directory
            self.senders = senders
            self.recipients = recipients
            self.mailboxSender = mailboxSender
            self.mailboxRecipient = mailboxRecipient
            self.aService = aService
            self.bService = bService
            self.aMessenger = aMessenger
            self.bMessenger = bMessenger
            self.aMailbox = aMailbox
            self.bMailbox = bMailbox
        }

        static func start(directory path: URL, pairs: Int, mailboxCapacity: Int) async throws -> World {
            var logger = Logger(label: "agent-bench")
            logger.logLevel = .error
            let groups = (0..<5).map { _ in MultiThreadedEventLoopGroup(numberOfThreads: 1) }
            var configuration = Host.Configuration()
            configuration.limits = .loopbackTestNetwork
            func host(_ key: Ed25519.PrivateKey, _ group: MultiThreadedEventLoopGroup) async throws -> (Host, Multiaddr) {
                let host = Host(identity: key, group: group, configuration: configuration, logger: logger)
                let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
                return (host, bound)
            }
            let aKey = Ed25519.PrivateKey()
            let bKey = Ed25519.PrivateKey()
            let (a, aAddress) = try await host(aKey, groups[0])
            let (b, bAddress) = try await host(bKey, groups[1])

            let seconds = MessageService.systemMilliseconds() / 1000
            var records: [AgentName: SignedAgentRecord] = [:]
            func publish(_ name: AgentName, _ key: Ed25519.PrivateKey, _ address: Multiaddr) throws {
                records[name] = try AgentRecord(
                    name: name, publicKey: key.publicKey, seq: seconds, timestamp: seconds, addresses: [address]
                ).signed(with: key)
            }
            let senders = try (0..<pairs).map { try AgentName("alice\($0).agent") }
            let recipients = try (0..<pairs).map { try AgentName("bob\($0).agent") }
            let mailboxSender = try AgentName("alicemail.agent")
            let mailboxRecipient = try AgentName("bobmail.agent")
            for name in senders + [mailboxSender] { try publish(name, aKey, aAddress) }
            for name in recipients + [mailboxRecipient] { try publish(name, bKey, bAddress) }
            let directory = Directory(records: records)

            var storeConfiguration = MailboxStore.Configuration()
            storeConfiguration.maximumMessagesPerMailbox = mailboxCapacity
            storeConfiguration.maximumMessagesPerSender = mailboxCapacity
            let resolveKey: MailboxService.KeyResolver = { name in try directory.record(for: name).record.publicKey }
            let systemSeconds: @Sendable () -> UInt64 = { MessageService.systemMilliseconds() / 1000 }
            var replicas: [Replica] = []
            for index in 0..<3 {
                let (host, address) = try await host(Ed25519.PrivateKey(), groups[2 + index])
                let store = try MailboxStore(
                    path: path.appendingPathComponent("replica\(index).sqlite").path, configuration: storeConfiguration)
                MailboxService(host: host, store: store, logger: logger, now: systemSeconds, resolveKey: resolveKey).start()
                replicas.append(Replica(host: host, address: address, store: store))
            }
            let replicaList = replicas.map { MailboxClient.Replica(peer: $0.host.peerID, addresses: [$0.address]) }
            let aMailboxService = MailboxService(host: a, store: nil, logger: logger, now: systemSeconds, resolveKey: resolveKey)
            let bMailboxService = MailboxService(host: b, store: nil, logger: logger, now: systemSeconds, resolveKey: resolveKey)
            aMailboxService.start()
            bMailboxService.start()
            let aMailbox = MailboxClient(service: aMailboxService, host: a, logger: logger) { _ in replicaList }
            let bMailbox = MailboxClient(service: bMailboxService, host: b, logger: logger) { _ in replicaList }

            let resolveRecord: Messenger.RecordResolver = { name in try directory.record(for: name) }
            let aService = MessageService(host: a, directory: directory, logger: logger)
            for name in senders + [mailboxSender] { aService.addLocalName(name, key: aKey) }
            let bService = MessageService(host: b, directory: directory, logger: logger)
            for name in recipients + [mailboxRecipient] { bService.addLocalName(name, key: bKey) }
            let aMessenger = Messenger(
                store: try MessageStore(path: path.appendingPathComponent("a-messages.sqlite").path), mailbox: aMailbox,
                key: aKey, logger: logger, nowMilliseconds: { MessageService.systemMilliseconds() },
                resolveRecord: resolveRecord,
                deliverDirect: { signed, record in try await aService.deliver(signed, to: record) })
            // The per-sender rate limit (a burst of 60, then 2 per second) is lifted: the benchmark
            // measures what the path can carry.
            var unlimited = Messenger.Configuration()
            unlimited.senderBurst = 1e12
            unlimited.senderRate = 1e12
            let bMessenger = Messenger(
                store: try MessageStore(path: path.appendingPathComponent("b-messages.sqlite").path), mailbox: bMailbox,
                key: bKey, configuration: unlimited, logger: logger, nowMilliseconds: { MessageService.systemMilliseconds() },
                resolveRecord: resolveRecord,
                deliverDirect: { _, _ in throw MessageError(.unreachable, "B sends nothing in this benchmark") })
            let world = World(
                groups: groups, aKey: aKey, bKey: bKey, a: a, b: b, replicas: replicas, directory: directory,
                senders: senders, recipients: recipients, mailboxSender: mailboxSender, mailboxRecipient: mailboxRecipient,
                aService: aService, bService: bService, aMessenger: aMessenger, bMessenger: bMessenger, aMailbox: aMailbox,
                bMailbox: bMailbox)
            let storeInInbox = world.storeInInbox
            bService.setHandler { delivery in
                guard storeInInbox.withLockedValue({ $0 }) else { return nil }
                do {
                    try bMessenger.accept(delivery.message, via: "direct")
                    return nil
                } catch {
                    return MessageError(.busy, "the inbox cannot take the message: \(error)")
                }
            }
            aService.start()
            bService.start()
            _ = try await a.connect(to: bAddress.appending(.p2p(b.peerID.multihash)))
            return world
        }

        func shutdown() async {
            aService.stop()
            bService.stop()
            await a.shutdown()
            await b.shutdown()
            for replica in replicas { await replica.host.shutdown() }
            for group in groups { try? await group.shutdownGracefully() }
        }
    }
}
