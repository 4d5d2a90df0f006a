import Identity
import Logging
import Network
import Resolution

/// One node's message and mailbox services wired to its host and DHT, as agentd runs them
/// (spec/messages.md, spec/mailbox.md §1, §7–8): records come from `DHT.resolve`, a mailbox's
/// replicas are the closest peers a DHT lookup finds for its key, and direct messages go through
/// the messenger's inbox like drained ones (the inbox's answer is the receipt).
///
/// The node adds the stores' files and the background jobs (drains, retries, hold releases,
/// re-replication); the in-process network tests (`MessagingNetworkTests`) use it as it is.
public final class DHTMessaging: Sendable {
    public struct Configuration: Sendable {
        public var messages = MessageService.Configuration()
        public var mailboxService = MailboxService.Configuration()
        public var mailboxClient = MailboxClient.Configuration()
        public var messenger = Messenger.Configuration()

        public init() {}
    }

    public let messenger: Messenger
    /// `/agent/msg/1.0.0`: direct delivery both ways.
    public let messageService: MessageService
    /// `/agent/mailbox/1.0.0`: the replica side, and single requests to replicas.
    public let mailboxService: MailboxService
    public let mailboxClient: MailboxClient
    private let identity: Ed25519.PrivateKey

    /// - Parameters:
    ///   - identity: the node key (the host's); it signs for every local name.
    ///   - mailboxStore: the replica store; nil for a node that is no mailbox replica.
    ///   - nowMilliseconds: the wall clock, milliseconds since the epoch.
    public init(
        host: Host, dht: DHT, identity: Ed25519.PrivateKey, messageStore: MessageStore, mailboxStore: MailboxStore?,
        configuration: Configuration = .init(), logger: Logger,
        nowMilliseconds: @escaping @Sendable () -> UInt64 = { MessageService.systemMilliseconds() }
    ) {
        self.identity = identity
        let messageService = MessageService(
            host: host, directory: DHTAgentDirectory(dht: dht), configuration: configuration.messages, logger: logger,
            now: nowMilliseconds)
        self.messageService = messageService
        let mailboxService = MailboxService(
            host: host, store: mailboxStore, configuration: configuration.mailboxService, logger: logger,
            now: { nowMilliseconds() / 1000 },
            resolveKey: { name in
                if let key = SignedAgentMessage.selfCertifyingKey(of: name) { return key }
                return try await dht.resolve(name).record.record.publicKey
            })
        self.mailboxService = mailboxService
        mailboxClient = MailboxClient(
            service: mailboxService, host: host, configuration: configuration.mailboxClient, logger: logger
        ) { mailbox in
            await dht.lookupClosestPeers(to: mailbox).closest.map { MailboxClient.Replica(peer: $0.id, addresses: $0.addresses) }
        }
        let messenger = Messenger(
            store: messageStore, mailbox: mailboxClient, key: identity, configuration: configuration.messenger, logger: logger,
            nowMilliseconds: nowMilliseconds, resolveRecord: { name in try await dht.resolve(name).record },
            deliverDirect: { signed, record in _ = try await messageService.deliver(signed, to: record) })
        self.messenger = messenger
        messageService.setHandler { delivery in
            do {
                return try messenger.accept(delivery.message, via: "direct")
                    ? nil : MessageError(.replayed, "message \(delivery.message.message.id) was delivered before")
            } catch let error as MessageError {
                return error
            } catch {
                return MessageError(.busy, "the inbox cannot take the message now: \(error)")
            }
        }
    }

    /// Makes the message service send and receive for exactly `names` (the node's registered
    /// names), signing with the node key.
    public func setLocalNames(_ names: [AgentName]) {
        let wanted = Set(names)
        for name in messageService.localNames where !wanted.contains(name) { messageService.removeLocalName(name) }
        for name in wanted { messageService.addLocalName(name, key: identity) }
    }

    /// Serves `/agent/mailbox/1.0.0` and `/agent/msg/1.0.0`.
    public func start() {
        mailboxService.start()
        messageService.start()
    }

    /// Stops serving and ends the subscriptions.
    public func stop() {
        messenger.finishSubscriptions()
        messageService.stop()
        mailboxService.stop()
    }
}

/// The message service's view of records: the DHT's resolution (the cache, else a lookup).
public struct DHTAgentDirectory: AgentDirectory {
    public let dht: DHT

    public init(dht: DHT) { self.dht = dht }

    public func record(for name: AgentName) async throws -> SignedAgentRecord {
        try await dht.resolve(name).record
    }
}
