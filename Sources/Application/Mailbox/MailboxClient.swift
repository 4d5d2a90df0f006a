import Identity
import Logging
import Multiformats
import Network
import Resolution

/// The mailbox procedures above single requests (spec/mailbox.md §7–9): depositing a sealed
/// message at a mailbox's replicas until `w` confirm, draining a mailbox from all its replicas,
/// acknowledging, and re-replicating what this replica holds.
///
/// Where the replicas are comes from `findReplicas` (the node: a DHT closest-peers lookup on the
/// mailbox key, closest first).
public struct MailboxClient: Sendable {
    /// A peer that may hold a mailbox, and where to reach it.
    public struct Replica: Hashable, Sendable {
        public var peer: PeerID
        public var addresses: [Multiaddr]

        public init(peer: PeerID, addresses: [Multiaddr]) {
            self.peer = peer
            self.addresses = addresses
        }
    }

    public struct Configuration: Sendable {
        /// Replicas a message is stored at (`r`).
        public var replicas = 3
        /// Confirmations for "stored" (`w`).
        public var confirmations = 2
        /// Most peers tried for one deposit (replacements of refusing or silent replicas).
        public var maximumTried = 8

        public init() {}
    }

    /// The closest peers to a mailbox key, closest first.
    public typealias ReplicaFinder = @Sendable (_ mailbox: [UInt8]) async throws -> [Replica]

    /// The outcome of a deposit.
    public struct Deposit: Sendable {
        /// Replicas that hold the message (`stored`, `duplicate` or `acknowledged`).
        public var confirmed: [PeerID]
        /// Why each other tried replica did not: peer and reason.
        public var failures: [(PeerID, String)]
        /// A refusal that retrying elsewhere cannot cure (`too_large`, `ttl_too_long`, `expired`),
        /// when every refusal was one.
        public var permanentRefusal: MailboxError?
    }

    public let configuration: Configuration
    private let service: MailboxService
    private let host: Host
    private let findReplicas: ReplicaFinder
    private let logger: Logger

    public init(
        service: MailboxService, host: Host, configuration: Configuration = .init(), logger: Logger,
        findReplicas: @escaping ReplicaFinder
    ) {
        self.service = service
        self.host = host
        self.configuration = configuration
        self.logger = logger
        self.findReplicas = findReplicas
    }

    /// What one replica did with a deposit (a plain value: task-group results carry no
    /// existential errors).
    private enum StoreAttempt: Sendable {
        case answered(PeerID, String)
        case failed(PeerID, String, MailboxError.Kind?)
    }

    private func storeAttempt(_ item: MailboxStore.Item, recipientPeer: PeerID?, at replica: Replica) async -> StoreAttempt {
        do {
            let connection = try await host.connect(to: replica.peer, addresses: replica.addresses, origin: .thirdParty)
            let results = try await service.store([item], recipientPeer: recipientPeer, on: connection)
            return .answered(replica.peer, results.first ?? "")
        } catch let error as MailboxError {
            return .failed(replica.peer, error.description, error.kind)
        } catch {
            return .failed(replica.peer, "\(error)", nil)
        }
    }

    /// Stores `item` at the mailbox's replicas: the `r` closest first, in parallel; each one that
    /// refuses or fails is replaced by the next closest, up to `maximumTried` peers.
    public func deposit(_ item: MailboxStore.Item, recipientPeer: PeerID?) async throws -> Deposit {
        let candidates = try await findReplicas(item.mailbox).filter { $0.peer != host.peerID }
        let limit = min(candidates.count, configuration.maximumTried)
        var deposit = Deposit(confirmed: [], failures: [], permanentRefusal: nil)
        var permanent: [MailboxError] = []
        await withTaskGroup(of: StoreAttempt.self) { group in
            var next = 0
            while next < min(configuration.replicas, limit) {
                let replica = candidates[next]
                group.addTask { await self.storeAttempt(item, recipientPeer: recipientPeer, at: replica) }
                next += 1
            }
            while let attempt = await group.next() {
                var replace = false
                switch attempt {
                case .answered(let peer, let outcome) where ["stored", "duplicate", "acknowledged"].contains(outcome):
                    deposit.confirmed.append(peer)
                case .answered(let peer, let code):
                    deposit.failures.append((peer, "refused: \(code)"))
                    if let kind = MailboxError.Kind(rawValue: code), Self.isPermanent(kind) {
                        permanent.append(MailboxError(kind, "replica \(peer) refused the message: \(code)"))
                    }
                    replace = true
                case .failed(let peer, let reason, let kind):
                    deposit.failures.append((peer, reason))
                    if let kind, Self.isPermanent(kind) { permanent.append(MailboxError(kind, reason)) }
                    replace = true
                }
                if replace, next < limit {
                    let replica = candidates[next]
                    group.addTask { await self.storeAttempt(item, recipientPeer: recipientPeer, at: replica) }
                    next += 1
                }
                if deposit.confirmed.count >= configuration.replicas { group.cancelAll() }
            }
        }
        if deposit.confirmed.isEmpty, !permanent.isEmpty, permanent.count == deposit.failures.count {
            deposit.permanentRefusal = permanent[0]
        }
        return deposit
    }

    static func isPermanent(_ kind: MailboxError.Kind) -> Bool {
        kind == .tooLarge || kind == .ttlTooLong || kind == .expired || kind == .malformed
    }

    /// The result of draining a mailbox.
    public struct Drain: Sendable {
        /// Every message found, once per id, in the order first seen.
        public var items: [MailboxStore.Item]
        /// The replicas that answered, with the ids each returned (to acknowledge to).
        public var answered: [(replica: Replica, ids: [[UInt8]])]
        /// Replicas that could not be drained, and why.
        public var failures: [(PeerID, String)]
    }

    private enum FetchAttempt: Sendable {
        case fetched(Int, [MailboxStore.Item])
        case failed(Int, String)
    }

    /// Fetches every message waiting for `name` from its replicas (the `maximumTried` closest peers,
    /// in parallel).
    public func drain(name: AgentName, key: Ed25519.PrivateKey) async throws -> Drain {
        let mailbox = MailboxWire.mailboxKey(for: name)
        // Not only the r closest: peers that joined since the deposit may have pushed the ones
        // holding the mailbox down the list (re-replication catches up only hourly).
        let replicas = Array(try await findReplicas(mailbox).filter { $0.peer != host.peerID }.prefix(configuration.maximumTried))
        var drain = Drain(items: [], answered: [], failures: [])
        var seen = Set<[UInt8]>()
        await withTaskGroup(of: FetchAttempt.self) { group in
            for index in replicas.indices {
                let replica = replicas[index]
                group.addTask {
                    do {
                        let connection = try await host.connect(to: replica.peer, addresses: replica.addresses, origin: .thirdParty)
                        return .fetched(index, try await service.fetchAll(name: name, key: key, on: connection))
                    } catch {
                        return .failed(index, "\(error)")
                    }
                }
            }
            while let attempt = await group.next() {
                switch attempt {
                case .fetched(let index, let items):
                    drain.answered.append((replicas[index], items.map(\.id)))
                    for item in items where seen.insert(item.id).inserted { drain.items.append(item) }
                case .failed(let index, let reason):
                    drain.failures.append((replicas[index].peer, reason))
                }
            }
        }
        return drain
    }

    /// Acknowledges `ids` of `name`'s mailbox at every replica in `drain` that returned any of them
    /// and at the current closest `r` (so that a replica that joined meanwhile keeps tombstones).
    /// - Returns: the replicas that confirmed.
    @discardableResult
    public func acknowledge(name: AgentName, ids: [[UInt8]], key: Ed25519.PrivateKey, after drain: Drain) async -> Int {
        guard !ids.isEmpty else { return 0 }
        let mailbox = MailboxWire.mailboxKey(for: name)
        var targets = drain.answered.map(\.replica)
        if let closest = try? await findReplicas(mailbox) {
            for replica in closest.prefix(configuration.replicas) where !targets.contains(where: { $0.peer == replica.peer }) {
                targets.append(replica)
            }
        }
        targets.removeAll { $0.peer == host.peerID }
        return await withTaskGroup(of: Bool.self) { group in
            for replica in targets {
                group.addTask {
                    do {
                        let connection = try await host.connect(to: replica.peer, addresses: replica.addresses, origin: .thirdParty)
                        try await service.acknowledge(name: name, ids: ids, key: key, on: connection)
                        return true
                    } catch {
                        logger.debug("mailbox ACK failed", metadata: ["replica": "\(replica.peer)", "error": "\(error)"])
                        return false
                    }
                }
            }
            var confirmed = 0
            while let ok = await group.next() {
                if ok { confirmed += 1 }
            }
            return confirmed
        }
    }

    /// Re-replication (spec/mailbox.md §9): for each mailbox `store` holds live messages for, offers
    /// their ids to the `r` closest peers other than this node and stores the wanted ones.
    /// - Returns: messages copied.
    @discardableResult
    public func replicate(from store: MailboxStore, now: UInt64) async -> Int {
        var copied = 0
        let mailboxes: [(mailbox: [UInt8], messages: Int)]
        do {
            mailboxes = try store.mailboxes(now: now)
        } catch {
            logger.warning("re-replication cannot list mailboxes: \(error)")
            return 0
        }
        for (mailbox, _) in mailboxes {
            guard let replicas = try? await findReplicas(mailbox) else { continue }
            let ids: [[UInt8]]
            do {
                ids = try store.ids(mailbox: mailbox, now: now)
            } catch {
                logger.warning("re-replication cannot read a mailbox: \(error)")
                continue
            }
            for replica in replicas.prefix(configuration.replicas) where replica.peer != host.peerID {
                do {
                    let connection = try await host.connect(to: replica.peer, addresses: replica.addresses, origin: .thirdParty)
                    var start = 0
                    while start < ids.count {
                        let chunk = Array(ids[start..<min(ids.count, start + MailboxWire.maximumIDsPerRequest)])
                        start += chunk.count
                        let response = try await service.request(
                            .offer(mailbox: mailbox, ids: chunk), on: connection, timeout: service.configuration.requestTimeout)
                        guard case .wanted(let wanted) = response, !wanted.isEmpty else { continue }
                        let items = try store.items(mailbox: mailbox, ids: wanted, now: now)
                        var offset = 0
                        while offset < items.count {
                            let batch = Array(items[offset..<min(items.count, offset + MailboxWire.maximumMessagesPerStore)])
                            offset += batch.count
                            let results = try await service.store(batch, recipientPeer: nil, on: connection)
                            copied += results.filter { $0 == "stored" }.count
                        }
                    }
                } catch {
                    logger.debug("re-replication to a replica failed", metadata: ["replica": "\(replica.peer)", "error": "\(error)"])
                }
            }
        }
        return copied
    }
}
