import Application
import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import Network
import Resolution

/// The node's messaging (issue #12; spec/messages.md, spec/mailbox.md): the message and mailbox
/// stores, the mailbox replica service, the messenger, and their background jobs, wired to the DHT
/// (replicas are the closest peers to a mailbox key; keys come from records).
final class NodeMessaging: Sendable {
    struct Configuration: Sendable {
        /// The inbox/outbox database; nil keeps them in memory.
        var messagesPath: String?
        /// The mailbox replica database; nil keeps it in memory.
        var mailboxPath: String?
        var mailbox = MailboxStore.Configuration()
        var service = MailboxService.Configuration()
        var client = MailboxClient.Configuration()
        var messenger = Messenger.Configuration()
        /// How often queued messages are looked at (each has its own back-off).
        var retryInterval: TimeAmount = .seconds(10)
        /// How often each local name's mailbox is drained besides at start and on hints.
        var drainInterval: TimeAmount = .seconds(300)
        /// How often held messages past the hold limit are released.
        var releaseInterval: TimeAmount = .seconds(60)
        /// How often the replica re-replicates and sweeps.
        var replicationInterval: TimeAmount = .hours(1)
    }

    /// The services wired to the host and the DHT (as the in-process network tests wire them).
    let wiring: DHTMessaging
    var messenger: Messenger { wiring.messenger }
    /// `/agent/msg/1.0.0`: direct delivery both ways.
    var messageService: MessageService { wiring.messageService }
    var mailboxService: MailboxService { wiring.mailboxService }
    var mailboxClient: MailboxClient { wiring.mailboxClient }
    let mailboxStore: MailboxStore
    let messageStore: MessageStore
    private let host: Network.Host
    private let dht: DHT
    private let configuration: Configuration
    private let logger: Logger

    /// Opens the stores and starts serving the mailbox protocol; `start()` starts the jobs.
    /// - Throws: `NodeError.fileSystem` when a store cannot be opened.
    init(host: Network.Host, dht: DHT, identity: Ed25519.PrivateKey, configuration: Configuration, logger: Logger) throws {
        do {
            mailboxStore = try MailboxStore(path: configuration.mailboxPath, configuration: configuration.mailbox)
            messageStore = try MessageStore(path: configuration.messagesPath)
        } catch {
            throw NodeError(.fileSystem, "cannot open the message stores: \(error.message)")
        }
        self.host = host
        self.dht = dht
        self.configuration = configuration
        self.logger = logger
        var wiring = DHTMessaging.Configuration()
        wiring.mailboxService = configuration.service
        wiring.mailboxClient = configuration.client
        wiring.messenger = configuration.messenger
        self.wiring = DHTMessaging(
            host: host, dht: dht, identity: identity, messageStore: messageStore, mailboxStore: mailboxStore,
            configuration: wiring, logger: logger)
        self.wiring.mailboxService.start()
    }

    /// Makes the message service send and receive for exactly the registered names (call after
    /// `register` / `unregister` and at start).
    func syncLocalNames() {
        wiring.setLocalNames(localNames)
    }

    /// The names this node sends and receives for: the registered ones.
    var localNames: [AgentName] { dht.registeredNames }

    /// The sender for a message: `from` when given (it must be a local name), else the only
    /// registered name other than the self-certifying one, else the self-certifying one when it is
    /// the only name.
    /// - Throws: `ControlAPIError.invalidParams` listing the names when the choice is ambiguous or
    ///   `from` is not local.
    func sender(from: String?) throws -> AgentName {
        let names = localNames
        let selfCertifying = AgentName(selfCertifying: host.peerID)
        if let from {
            let name: AgentName
            do {
                name = try AgentName(from)
            } catch {
                throw ControlAPIError.invalidParams("from: \(error.message)", kind: "invalid_name")
            }
            guard names.contains(name) else {
                throw ControlAPIError.invalidParams(
                    "this node cannot send as \(name); its names are \(names.map(\.value).joined(separator: ", "))",
                    kind: MessageError.Kind.unknownLocalName.rawValue)
            }
            return name
        }
        let chosen = names.filter { $0 != selfCertifying }
        if chosen.count == 1 { return chosen[0] }
        if chosen.isEmpty { return selfCertifying }
        throw ControlAPIError.invalidParams(
            "this node has several names; say which one sends with \"from\": \(chosen.map(\.value).joined(separator: ", "))",
            kind: "ambiguous_sender")
    }

    /// Starts the background jobs (host tasks: they end with the host): the first drain of every
    /// local name, then retries, periodic drains, hold releases, re-replication and sweeps.
    func start() {
        syncLocalNames()
        messageService.start()
        mailboxService.onHint { [self] mailbox, from in
            guard let name = localNames.first(where: { MailboxWire.mailboxKey(for: $0) == mailbox }) else { return }
            logger.debug("mailbox hint", metadata: ["name": "\(name)", "replica": "\(from)"])
            host.spawn("mailbox drain after a hint") { [self] in _ = await messenger.drain(name) }
        }
        host.spawn("mailbox drains") { [self] in
            while !Task.isCancelled {
                for name in localNames {
                    let taken = await messenger.drain(name)
                    if taken > 0 { logger.info("mailbox: \(taken) messages for \(name)") }
                }
                try? await Task.sleep(for: .nanoseconds(configuration.drainInterval.nanoseconds))
            }
        }
        host.spawn("outbox retries") { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .nanoseconds(configuration.retryInterval.nanoseconds))
                await messenger.retryDue()
            }
        }
        host.spawn("inbox hold releases") { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .nanoseconds(configuration.releaseInterval.nanoseconds))
                let now = UInt64(Date().timeIntervalSince1970)
                messenger.releaseHeld(receivedBefore: now - min(now, configuration.messenger.holdLimit))
            }
        }
        host.spawn("mailbox re-replication") { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .nanoseconds(configuration.replicationInterval.nanoseconds))
                let now = UInt64(Date().timeIntervalSince1970)
                do {
                    try mailboxStore.removeExpired(now: now)
                    try messageStore.removeExpired(now: now)
                } catch {
                    logger.error("cannot sweep expired messages: \(error)")
                }
                let copied = await mailboxClient.replicate(from: mailboxStore, now: now)
                if copied > 0 { logger.info("mailbox re-replication copied \(copied) messages") }
            }
        }
    }

    /// Ends subscriptions (node shutdown; the jobs end with the host).
    func stop() {
        wiring.stop()
    }
}
