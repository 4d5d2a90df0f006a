import Application
import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import NIOPosix
import Network
import Resolution
import ServiceLifecycle

/// The agentd node: identity, libp2p host, control API; a `Service` that runs until a graceful
/// shutdown (SIGINT/SIGTERM through `ServiceGroup`), then closes connections with GoAway and removes
/// its socket.
public final class AgentNode: Service, Sendable {
    /// What `agentd` prints on stdout once it serves (DESIGN §5).
    public struct Ready: Sendable {
        public let peerID: PeerID
        /// The addresses to dial this node at, each ending in `/p2p/<peer id>`: `Host.advertisedAddresses`.
        public let addresses: [Multiaddr]
        /// The addresses the node listens on, as bound (`/ip4/0.0.0.0/tcp/4001`).
        public let listenAddresses: [Multiaddr]
        public let apiSocketPath: String

        /// `{"event":"ready","peer_id":"…","addrs":["…"],"listen_addrs":["…"],"api":"…"}`.
        public var jsonLine: String {
            let object: JSONValue = .object([
                "event": "ready", "peer_id": .string(peerID.description),
                "addrs": .array(addresses.map { .string($0.description) }),
                "listen_addrs": .array(listenAddresses.map { .string($0.description) }), "api": .string(apiSocketPath),
            ])
            return object.jsonText
        }
    }

    public let configuration: NodeConfiguration
    let logger: Logger
    let onReady: @Sendable (Ready) -> Void
    let onEvent: @Sendable (NodeEvent) -> Void

    /// - Parameters:
    ///   - onReady: called once, when the node serves (agentd prints the ready line).
    ///   - onEvent: called for each node event after that, in order (agentd prints event lines).
    public init(
        configuration: NodeConfiguration, logger: Logger, onReady: @escaping @Sendable (Ready) -> Void,
        onEvent: @escaping @Sendable (NodeEvent) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onReady = onReady
        self.onEvent = onEvent
    }

    /// Reads the identity key, creating it (mode 0600) on first start.
    public static func loadOrCreateIdentity(in directory: DataDirectory, logger: Logger) throws(IdentityError) -> Ed25519.PrivateKey {
        try PrivateFile.createDirectory(directory.path)
        do {
            return try KeyFile.read(from: directory.identityKeyPath)
        } catch {
            guard error.kind == .notFound else { throw error }
        }
        let key = Ed25519.PrivateKey()
        try KeyFile.write(key, to: directory.identityKeyPath, overwrite: false)
        logger.info("created identity", metadata: ["path": "\(directory.identityKeyPath)", "peer": "\(PeerID(publicKey: key.publicKey))"])
        return key
    }

    public func run() async throws {
        MemoryTuning.apply()
        try PrivateFile.createDirectory(configuration.dataDirectory.path)
        try configuration.dataDirectory.checkSafety(databasePath: configuration.databasePath)
        let identity = try Self.loadOrCreateIdentity(in: configuration.dataDirectory, logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, System.coreCount))
        var hostConfiguration = configuration.host
        do {
            hostConfiguration.denyList = try DenyListFile.load(configuration.dataDirectory.denyListPath)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let host = Network.Host(identity: identity, group: group, configuration: hostConfiguration, logger: logger)
        // perf is a load generator for whoever connects: served only when asked (`--perf`).
        if configuration.perf { Perf.register(on: host) }
        let scopeRule = AddressScopeRule(publicNetworks: hostConfiguration.publicNetworks)
        var autonatServer: AutoNATServer?
        if configuration.servesAutoNAT {
            var serverConfiguration = configuration.autonatServer
            serverConfiguration.policy.scopeRule = scopeRule
            autonatServer = AutoNATServer.register(on: host, configuration: serverConfiguration, logger: logger)
        }

        // Circuit transport, STOP and DCUtR on every node; hop as --relay-service says.
        let relaying = NodeRelaying(host: host, configuration: configuration, logger: logger)

        var bound: [Multiaddr] = []
        var failures: [String] = []
        for address in configuration.listenAddresses {
            do {
                bound.append(try await host.listen(on: address))
            } catch {
                failures.append("\(error)")
                logger.warning("cannot listen on \(address): \(error)")
            }
        }
        guard !bound.isEmpty || configuration.listenAddresses.isEmpty else {
            await host.shutdown()
            try? await group.shutdownGracefully()
            throw NodeError(.invalidConfiguration, "could not listen on any address: \(failures.joined(separator: "; "))")
        }

        let store: RecordStore
        do {
            store = try RecordStore(path: configuration.databasePath)
        } catch {
            await host.shutdown()
            try? await group.shutdownGracefully()
            throw NodeError(.fileSystem, "cannot open the record store: \(error.message)")
        }
        let dht = DHT(host: host, store: store, configuration: configuration.dht, logger: logger)
        dht.start()
        // The DHT's service runs beside the node (a child task: it ends on the graceful shutdown,
        // before the host, or with the host on an early failure below), so nothing of the DHT
        // outlives the node.
        try await withThrowingTaskGroup(of: Void.self) { services in
            defer { services.cancelAll() }
            services.addTask { try await dht.run() }
            if configuration.mdns {
                do {
                    // Never on a loopback-only node: its peers are on this machine, and its multicast
                    // would go to real links it does not listen on. After the DHT started, so that it
                    // sees the peers mDNS connects.
                    guard bound.contains(where: { IPAddress($0).map { AddressScope.of($0) != .loopback } ?? false }) else {
                        throw NodeError(.invalidConfiguration, "--mdns needs a listen address other than loopback")
                    }
                    // A peer found joins the DHT as a bootstrap peer would (a self-lookup through it).
                    _ = try await MDNSService.start(host: host, logger: logger) { _, addresses in
                        await dht.bootstrap(addresses)
                    }
                } catch {
                    await host.shutdown()
                    try? await group.shutdownGracefully()
                    throw error
                }
            }
            let cards: CardService
            do throws(CardError) {
                // Next to the record store (in memory when it is), in its own file: spec/cards.md §7.
                let path = configuration.databasePath.map { _ in configuration.dataDirectory.path + "/cards.db" }
                cards = CardService(
                    host: host, dht: dht, store: try CardStore(path: path), identity: identity, logger: logger,
                    now: { UInt64(Date().timeIntervalSince1970) })
            } catch {
                await host.shutdown()
                try? await group.shutdownGracefully()
                throw NodeError(.fileSystem, "cannot open the card store: \(error.message)")
            }
            cards.start()
            // Before bootstrap: the bootstrap peers are the first servers asked.
            var autonatConfiguration = configuration.autonat
            autonatConfiguration.tracker.scopeRule = scopeRule
            let autonat = AutoNATService.start(on: host, configuration: autonatConfiguration, logger: logger)
            let events = NodeEvents(onPublish: onEvent)
            relaying.keep(configuration.relayAddresses)

            let messaging: NodeMessaging
            do {
                var messagingConfiguration = NodeMessaging.Configuration()
                messagingConfiguration.messagesPath = configuration.messagesDatabasePath
                messagingConfiguration.mailboxPath = configuration.mailboxDatabasePath
                messaging = try NodeMessaging(
                    host: host, dht: dht, identity: identity, configuration: messagingConfiguration, logger: logger)
            } catch {
                await host.shutdown()
                try? await group.shutdownGracefully()
                throw error
            }
            let fileMode: NodeFileMode?
            do {
                fileMode = try configuration.inboxDirectory.map { try NodeFileMode(directory: $0, messaging: messaging, logger: logger) }
            } catch {
                await host.shutdown()
                try? await group.shutdownGracefully()
                throw error
            }

            var methods = NodeControlAPI.methods(host: host, identity: identity, dht: dht)
            NodeControlAPI.registerNATMethods(
                &methods, events: events, autonat: autonat, server: autonatServer, relaying: relaying)
            NodeControlAPI.registerDHTMethods(&methods, dht: dht, namesChanged: { messaging.syncLocalNames() })
            NodeControlAPI.registerMessageMethods(&methods, messaging: messaging)
            NodeControlAPI.registerCardMethods(&methods, cards: cards, dht: dht, host: host)
            NodeControlAPI.registerLimitsMethods(
                &methods, host: host, denyListPath: configuration.dataDirectory.denyListPath)
            let server: ControlAPIServer
            do {
                server = try await ControlAPIServer.bind(
                    socketPath: configuration.apiSocketPath, methods: methods, logger: logger, eventLoopGroup: group)
            } catch {
                await host.shutdown()
                try? await group.shutdownGracefully()
                throw error
            }

            // Join the network and publish our names before announcing readiness, so that a script
            // that waits for the ready line can resolve them at once.
            if !configuration.bootstrapAddresses.isEmpty {
                let entries = await dht.bootstrap(configuration.bootstrapAddresses)
                if entries == 0 {
                    logger.warning(
                        "bootstrap: no peer answered; the node runs alone until peers connect",
                        metadata: ["bootstrap": "\(configuration.bootstrapAddresses.map(\.description))"])
                }
            }
            for name in [AgentName(selfCertifying: host.peerID)] + configuration.names {
                do throws(ResolutionError) {
                    let report = try await dht.register(name)
                    logger.info(
                        "published", metadata: ["name": "\(name)", "seq": "\(report.record.record.seq)", "replicas": "\(report.storedAt.count)"])
                } catch {
                    logger.error("cannot publish \(name): \(error.message)")
                }
            }
            // Names registered through the control API before a restart.
            for (name, result) in await dht.restoreRegistrations() {
                if case .success(let report) = result {
                    logger.info(
                        "published registered name",
                        metadata: ["name": "\(name)", "seq": "\(report.record.record.seq)", "replicas": "\(report.storedAt.count)"])
                }
            }

            // Messages: served from here on; the first mailbox drain of every name starts now.
            messaging.start()
            if let fileMode { host.spawn("file mode") { await fileMode.run() } }

            let addresses = host.advertisedAddresses.map { $0.appending(.p2p(host.peerID.multihash)) }
            onReady(
                Ready(peerID: host.peerID, addresses: addresses, listenAddresses: bound, apiSocketPath: server.socketPath))
            logger.info("ready", metadata: ["peer": "\(host.peerID)", "api": "\(server.socketPath)", "dht": "\(dht.mode.rawValue)"])
            Self.followReachability(host: host, autonat: autonat, dht: dht, events: events)
            relaying.follow(dht: dht, autonat: autonat, nodeEvents: events)
            host.spawn("card providers") { await cards.runRepublishing() }

            await withGracefulShutdownHandler {
                await server.run()
            } onGracefulShutdown: {
                Task { await server.shutdown() }
            }
            logger.info("shutting down")
            await server.shutdown()
            messaging.stop()
            // The DHT's service (its jobs, liveness checks, dial-backs) ends before the host.
            services.cancelAll()
            try? await services.next()
            await host.shutdown()
            events.finish()
            try? await group.shutdownGracefully()
        }
    }

    /// From the ready line on: each change of AutoNAT's verdict (or confidence) becomes an
    /// `autonat` event, and `--dht-mode auto` follows the verdict. A host task: it ends with the
    /// host. The verdict reached before the ready line is announced first.
    static func followReachability(host: Network.Host, autonat: AutoNATService, dht: DHT, events: NodeEvents) {
        // Subscribed before the current state is read: a change in between is seen twice at
        // worst, and the repeat is not announced.
        let changes = host.events(label: "node reachability")
        host.spawn("reachability events") {
            var last = (Reachability.unknown, 0)
            func announce(_ reachability: Reachability, _ confidence: Int) {
                guard (reachability, confidence) != last else { return }
                last = (reachability, confidence)
                dht.reachabilityChanged(reachability)
                events.publish(.autonat(reachability, confidence: confidence))
            }
            let current = autonat.status.tracker
            announce(current.reachability, current.confidence)
            for await event in changes {
                if case .reachabilityChanged(let reachability, let confidence) = event { announce(reachability, confidence) }
            }
        }
    }
}
