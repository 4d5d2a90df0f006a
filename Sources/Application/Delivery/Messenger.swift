import Identity
import Logging
import NIOConcurrencyHelpers
import Network
import Resolution

/// Delivery of the node's agent messages, whatever the recipient's state (spec/mailbox.md §7–8):
/// direct when the recipient's node answers; sealed into its mailbox at the DHT replicas when it
/// does not; kept in the outbox and retried when neither works. On the receiving side: every
/// verified message, direct or drained from a mailbox, goes through the inbox, which delivers each
/// sender's messages once and in order, and then to the subscribers (the local agents).
///
/// The transport of one message (`/agent/msg/1.0.0`) and name resolution come in as closures, so
/// that the procedures here can be tested without a DHT.
public final class Messenger: Sendable {
    public struct Configuration: Sendable {
        /// How long a message may wait in mailboxes and the outbox (Unix seconds after its timestamp).
        public var lifetime: UInt64 = 7 * 24 * 3600
        /// Longest a message waits for a missing predecessor before it is delivered anyway.
        public var holdLimit: UInt64 = 600
        /// First and longest pause between attempts of a queued message.
        public var firstRetry: UInt64 = 30
        public var longestRetry: UInt64 = 3600
        /// Per sender name: messages taken in a burst, and the sustained rate (per second) after it.
        public var senderBurst: Double = 60
        public var senderRate: Double = 2
        /// The stored-message age bound (spec/mailbox.md §8 step 3): the lifetime and a clock allowance.
        public var maximumStoredAge: UInt64 { (lifetime + 300) * 1000 }

        public init() {}
    }

    /// Where a sent message went.
    public enum Delivery: String, Sendable {
        case direct
        case mailbox
        case queued
    }

    public struct SendResult: Sendable {
        public var id: MessageID
        public var delivery: Delivery
        /// Mailbox replicas that confirmed (0 unless `mailbox`).
        public var replicas: Int
        /// Why direct delivery (and the mailbox, when queued) did not work.
        public var reason: String?
        /// The message as sent.
        public var message: SignedAgentMessage
        /// The replicas that confirmed (this attempt's; empty unless `mailbox`).
        public var storedAt: [PeerID] = []
    }

    /// Delivers one signed message to the node of `record` over `/agent/msg/1.0.0`, returning when
    /// its receipt accepts it. Throws `MessageError`: `.unreachable`, `.timeout`,
    /// `.protocolNotSupported`, `.busy`, `.unknownSender` (the recipient could not resolve our record
    /// yet; the mailbox drain checks again later) mean "try the mailbox"; another receipt's refusal
    /// kind means the recipient refused this message.
    public typealias DirectDelivery = @Sendable (SignedAgentMessage, SignedAgentRecord) async throws -> Void
    /// The current record of a name. Throws `ResolutionError` (`.notFound` when there is none).
    public typealias RecordResolver = @Sendable (AgentName) async throws -> SignedAgentRecord

    public let configuration: Configuration
    private let store: MessageStore
    private let mailbox: MailboxClient?
    private let key: Ed25519.PrivateKey
    private let deliverDirect: DirectDelivery
    private let resolveRecord: RecordResolver
    private let nowMilliseconds: @Sendable () -> UInt64
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var subscribers: [Int: AsyncStream<SignedAgentMessage>.Continuation] = [:]
        var nextSubscriber = 0
        /// Names with a drain under way, and whether another was asked for meanwhile.
        var draining: [AgentName: Bool] = [:]
        /// Token buckets per sender name: tokens and when they were last counted (ms).
        var buckets: [String: (tokens: Double, at: UInt64)] = [:]
    }

    /// - Parameters:
    ///   - key: the node key; it signs for every local name (their records name it).
    ///   - mailbox: nil disables mailboxes (messages are delivered directly or queued).
    public init(
        store: MessageStore, mailbox: MailboxClient?, key: Ed25519.PrivateKey, configuration: Configuration = .init(),
        logger: Logger, nowMilliseconds: @escaping @Sendable () -> UInt64, resolveRecord: @escaping RecordResolver,
        deliverDirect: @escaping DirectDelivery
    ) {
        self.store = store
        self.mailbox = mailbox
        self.key = key
        self.configuration = configuration
        self.logger = logger
        self.nowMilliseconds = nowMilliseconds
        self.resolveRecord = resolveRecord
        self.deliverDirect = deliverDirect
    }

    // MARK: Sending

    /// Sends `message` (its sender a local name, its `senderSequence` assigned here): directly,
    /// else to the recipient's mailbox, else into the outbox for retries.
    /// - Throws: `MessageError` when the message cannot be accepted at all: the recipient has no
    ///   record (`.unreachable` naming it), refused it (its receipt's kind), or no replica would
    ///   ever take it; `.malformed`/`.oversized` from encoding.
    ///
    /// Idempotent by id: a message whose id this node already sent is not sent again; its recorded
    /// outcome is returned (a caller that crashed after sending can repeat the call safely).
    public func send(_ message: AgentMessage) async throws -> SendResult {
        if let sent = try store.sent(id: message.id.bytes) {
            return try previousOutcome(sent, message: message)
        }
        // The recipient's record first: a name that has none fails the message before it takes a
        // sequence number (a failed message holding a number would leave a gap that holds the
        // recipient's later messages from us until its hold limit).
        let resolved: Result<SignedAgentRecord, any Error>
        do {
            resolved = .success(try await resolveRecord(message.recipient))
        } catch let error as ResolutionError where error.kind == .notFound {
            let signed = try SignedAgentMessage(signing: message, with: key)
            try remember(signed, status: .failed, replicas: 0, attempts: 1, error: "no record for \(message.recipient)")
            throw MessageError(.unreachable, "\(message.recipient) has no record: the name is not registered, or has expired")
        } catch {
            resolved = .failure(error)
        }
        var message = message
        message.senderSequence = try store.assignSequence(sender: message.sender.value, recipient: message.recipient.value)
        let signed = try SignedAgentMessage(signing: message, with: key)
        switch resolved {
        case .success(let record):
            return try await attempt(signed, record: record, attempts: 1)
        case .failure(let error):
            // The DHT could not answer: keep the message and retry.
            return try queue(signed, attempts: 1, reason: "cannot resolve \(message.recipient): \(error)")
        }
    }

    /// The outcome recorded for a message sent before (same id).
    private func previousOutcome(_ sent: MessageStore.Sent, message: AgentMessage) throws -> SendResult {
        guard sent.sender == message.sender.value, sent.recipient == message.recipient.value else {
            throw MessageError(.malformed, "message id \(message.id) was already used for another message")
        }
        // The signed bytes are kept only while queued; otherwise the caller's message stands in.
        let signed: SignedAgentMessage
        if let kept = try? SignedAgentMessage(bytes: sent.signed) {
            signed = kept
        } else {
            signed = try SignedAgentMessage(signing: message, with: key)
        }
        switch sent.status {
        case .delivered: return SendResult(id: message.id, delivery: .direct, replicas: 0, reason: nil, message: signed)
        case .stored: return SendResult(id: message.id, delivery: .mailbox, replicas: sent.replicas, reason: sent.lastError, message: signed)
        case .queued: return SendResult(id: message.id, delivery: .queued, replicas: 0, reason: sent.lastError, message: signed)
        case .failed: throw MessageError(.refused, "message \(message.id) failed before: \(sent.lastError ?? "unknown reason")")
        }
    }

    /// One delivery attempt of `signed`: direct, then the mailbox, else queued (or failed).
    private func attempt(_ signed: SignedAgentMessage, record: SignedAgentRecord, attempts: Int) async throws -> SendResult {
        let directReason: String
        do {
            try await deliverDirect(signed, record)
            try remember(signed, status: .delivered, replicas: 0, attempts: attempts, error: nil)
            return SendResult(id: signed.message.id, delivery: .direct, replicas: 0, reason: nil, message: signed)
        } catch let error as MessageError
            where [.unreachable, .timeout, .protocolNotSupported, .shutdown, .busy, .unknownSender].contains(error.kind)
        {
            directReason = error.description
        } catch let error as MessageError where error.kind == .replayed {
            // The recipient already has it (a retry whose receipt was lost).
            try remember(signed, status: .delivered, replicas: 0, attempts: attempts, error: nil)
            return SendResult(id: signed.message.id, delivery: .direct, replicas: 0, reason: nil, message: signed)
        } catch let error as MessageError {
            try remember(signed, status: .failed, replicas: 0, attempts: attempts, error: error.description)
            throw error
        } catch {
            directReason = "\(error)"
        }
        guard let mailbox else {
            return try queue(signed, attempts: attempts, reason: directReason)
        }
        let expires = signed.message.timestamp / 1000 + configuration.lifetime
        let sealed: [UInt8]
        do {
            sealed = try SealedBox.seal(signed.bytes, to: record.record.publicKey)
        } catch {
            try remember(signed, status: .failed, replicas: 0, attempts: attempts, error: "\(error)")
            throw MessageError(.unreachable, "cannot seal to \(signed.message.recipient)'s key: \(error)")
        }
        let item = MailboxStore.Item(
            mailbox: MailboxWire.mailboxKey(for: signed.message.recipient), id: signed.message.id.bytes, sealed: sealed,
            expires: expires)
        let deposit: MailboxClient.Deposit
        do {
            deposit = try await mailbox.deposit(item, recipientPeer: record.record.peerID)
        } catch {
            return try queue(signed, attempts: attempts, reason: "\(directReason); mailbox replicas not found: \(error)")
        }
        if deposit.confirmed.count >= mailbox.configuration.confirmations {
            try remember(signed, status: .stored, replicas: deposit.confirmed.count, attempts: attempts, error: nil)
            return SendResult(
                id: signed.message.id, delivery: .mailbox, replicas: deposit.confirmed.count, reason: directReason, message: signed,
                storedAt: deposit.confirmed)
        }
        if let refusal = deposit.permanentRefusal {
            try remember(signed, status: .failed, replicas: 0, attempts: attempts, error: refusal.description)
            throw MessageError(.refused, "every mailbox replica refused the message: \(refusal)")
        }
        let failures = deposit.failures.map { "\($0.0): \($0.1)" }.joined(separator: "; ")
        return try queue(
            signed, attempts: attempts,
            reason: "\(directReason); only \(deposit.confirmed.count) mailbox replicas confirmed (\(failures.isEmpty ? "none found" : failures))"
        )
    }

    private func queue(_ signed: SignedAgentMessage, attempts: Int, reason: String) throws -> SendResult {
        try remember(signed, status: .queued, replicas: 0, attempts: attempts, error: reason)
        return SendResult(id: signed.message.id, delivery: .queued, replicas: 0, reason: reason, message: signed)
    }

    private func remember(
        _ signed: SignedAgentMessage, status: MessageStore.Sent.Status, replicas: Int, attempts: Int, error: String?
    ) throws {
        let now = nowMilliseconds() / 1000
        let pause = min(configuration.longestRetry, configuration.firstRetry << UInt64(min(max(attempts - 1, 0), 20)))
        try store.record(
            MessageStore.Sent(
                id: signed.message.id.bytes, sender: signed.message.sender.value, recipient: signed.message.recipient.value,
                sequence: signed.message.senderSequence, signed: signed.bytes, status: status, replicas: replicas,
                attempts: attempts, nextAttempt: now + pause, expires: signed.message.timestamp / 1000 + configuration.lifetime,
                lastError: error),
            now: now)
    }

    /// Retries the queued messages that are due: expired ones fail; the others are re-signed with
    /// a fresh timestamp (same id and sequence: a receiver that has it answers `replayed`) and
    /// attempted again.
    /// - Returns: how many were attempted.
    @discardableResult
    public func retryDue() async -> Int {
        let now = nowMilliseconds() / 1000
        let due: [MessageStore.Sent]
        do {
            due = try store.due(now: now)
        } catch {
            logger.error("cannot read the outbox: \(error)")
            return 0
        }
        for sent in due {
            do {
                let old = try SignedAgentMessage(bytes: sent.signed)
                guard now < sent.expires else {
                    try remember(old, status: .failed, replicas: 0, attempts: sent.attempts, error: "expired: \(sent.lastError ?? "")")
                    continue
                }
                var message = old.message
                message.timestamp = max(nowMilliseconds(), message.timestamp)
                let fresh = try SignedAgentMessage(signing: message, with: key)
                let record: SignedAgentRecord
                do {
                    record = try await resolveRecord(message.recipient)
                } catch {
                    _ = try queue(old, attempts: sent.attempts + 1, reason: "cannot resolve \(message.recipient): \(error)")
                    continue
                }
                _ = try await attempt(fresh, record: record, attempts: sent.attempts + 1)
            } catch {
                logger.warning("retry of a queued message failed", metadata: ["error": "\(error)"])
            }
        }
        return due.count
    }

    /// Where a sent message is: `queued`, `stored` (with replicas), `delivered`, `failed` (why).
    public func status(of id: MessageID) throws -> MessageStore.Sent? {
        try store.sent(id: id.bytes)
    }

    // MARK: Receiving

    /// Takes a verified message (recipient, time, signature and replay checked by the caller)
    /// into the inbox; what the inbox delivers goes to the subscribers.
    /// - Returns: whether it was new (false: a duplicate, already delivered or held).
    /// - Throws: `MessageError.refused` for a blocked sender, `.busy` past the sender's rate,
    ///   `MailboxError.storage` when the inbox cannot commit it.
    @discardableResult
    public func accept(_ signed: SignedAgentMessage, via: String) throws -> Bool {
        let sender = signed.message.sender.value
        if try store.isBlocked(sender) {
            throw MessageError(.refused, "the recipient does not take messages from \(sender)")
        }
        try admit(sender)
        let reception = try store.receive(
            MessageStore.Received(
                id: signed.message.id.bytes, sender: signed.message.sender.value, recipient: signed.message.recipient.value,
                sequence: signed.message.senderSequence, timestampMilliseconds: signed.message.timestamp, signed: signed.bytes,
                via: via),
            now: nowMilliseconds() / 1000)
        switch reception {
        case .duplicate: return false
        case .held: return true
        case .delivered(let messages):
            publish(messages)
            return true
        }
    }

    /// Takes one token from `sender`'s bucket, or throws `.busy`.
    private func admit(_ sender: String) throws(MessageError) {
        let now = nowMilliseconds()
        let admitted = state.withLockedValue { state -> Bool in
            var bucket = state.buckets[sender] ?? (configuration.senderBurst, now)
            let elapsed = Double(now &- min(now, bucket.at)) / 1000
            bucket.tokens = min(configuration.senderBurst, bucket.tokens + elapsed * configuration.senderRate)
            bucket.at = now
            guard bucket.tokens >= 1 else {
                state.buckets[sender] = bucket
                return false
            }
            bucket.tokens -= 1
            if state.buckets.count >= 4096, state.buckets[sender] == nil {
                // Bounded: forget buckets that are full again (their senders are idle).
                state.buckets = state.buckets.filter { _, old in
                    old.tokens + Double(now &- min(now, old.at)) / 1000 * configuration.senderRate < configuration.senderBurst
                }
            }
            state.buckets[sender] = bucket
            return true
        }
        guard admitted else {
            throw MessageError(.busy, "\(sender) is sending faster than \(configuration.senderRate) messages per second; try later")
        }
    }

    /// Refuses messages from `name` from now on (blocked messages waiting in mailboxes are dropped).
    @discardableResult
    public func block(_ name: AgentName) throws -> Bool { try store.block(name.value, now: nowMilliseconds() / 1000) }

    @discardableResult
    public func unblock(_ name: AgentName) throws -> Bool { try store.unblock(name.value) }

    public func blockedSenders() throws -> [String] { try store.blockedSenders() }

    /// Delivers held messages whose wait is over (received at or before `receivedBefore`).
    public func releaseHeld(receivedBefore: UInt64) {
        do {
            let released = try store.releaseHeld(receivedBefore: receivedBefore)
            if !released.isEmpty {
                logger.info("delivered \(released.count) messages after giving up on missing predecessors")
                publish(released)
            }
        } catch {
            logger.error("cannot release held messages: \(error)")
        }
    }

    private func publish(_ messages: [MessageStore.Received]) {
        let continuations = state.withLockedValue { Array($0.subscribers.values) }
        guard !continuations.isEmpty else { return }
        for received in messages {
            guard let signed = try? SignedAgentMessage(bytes: received.signed) else { continue }
            for continuation in continuations { continuation.yield(signed) }
        }
    }

    /// Messages as the inbox delivers them, from now on.
    public func subscribe(bufferSize: Int = 1024) -> AsyncStream<SignedAgentMessage> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: SignedAgentMessage.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = state.withLockedValue { state -> Int in
            defer { state.nextSubscriber += 1 }
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every subscription (node shutdown).
    public func finishSubscriptions() {
        let continuations = state.withLockedValue { state in
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in continuations { continuation.finish() }
    }

    /// The inbox: delivered messages not yet read, oldest first.
    public func inbox(recipient: AgentName? = nil, limit: Int = 1000) throws -> [SignedAgentMessage] {
        try store.inbox(recipient: recipient?.value, limit: limit).compactMap { try? SignedAgentMessage(bytes: $0.signed) }
    }

    /// Marks messages read. - Returns: the ids that were in the inbox.
    public func acknowledge(_ ids: [MessageID]) throws -> [MessageID] {
        let done = Set(try store.acknowledge(ids: ids.map(\.bytes)))
        return ids.filter { done.contains($0.bytes) }
    }

    /// A received message by id.
    public func received(_ id: MessageID) throws -> SignedAgentMessage? {
        guard let (received, _) = try store.received(id: id.bytes) else { return nil }
        return try? SignedAgentMessage(bytes: received.signed)
    }

    // MARK: Mailbox drain

    /// Drains `name`'s mailbox (spec/mailbox.md §8): fetches from the replicas, opens and checks
    /// each message, takes the good ones into the inbox, acknowledges everything it handled, then
    /// gives up on gaps older than this drain. Concurrent calls for one name coalesce.
    /// - Returns: messages newly taken in.
    @discardableResult
    public func drain(_ name: AgentName) async -> Int {
        guard let mailbox else { return 0 }
        let first = state.withLockedValue { state -> Bool in
            if state.draining[name] != nil {
                state.draining[name] = true
                return false
            }
            state.draining[name] = false
            return true
        }
        guard first else { return 0 }
        var taken = 0
        while true {
            let started = nowMilliseconds() / 1000
            taken += await drainOnce(name, mailbox: mailbox)
            // Held messages that arrived before this drain began (whole seconds: one that arrived
            // in the second it began waits for the next drain).
            releaseHeld(receivedBefore: started - min(started, 1))
            let again = state.withLockedValue { state -> Bool in
                if state.draining[name] == true {
                    state.draining[name] = false
                    return true
                }
                state.draining[name] = nil
                return false
            }
            if !again { return taken }
        }
    }

    private func drainOnce(_ name: AgentName, mailbox: MailboxClient) async -> Int {
        let drain: MailboxClient.Drain
        do {
            drain = try await mailbox.drain(name: name, key: key)
        } catch {
            logger.info("mailbox drain of \(name) failed: \(error)")
            return 0
        }
        var handled: [[UInt8]] = []
        var taken = 0
        for item in drain.items {
            do {
                let signed = try await check(item, for: name)
                if try accept(signed, via: "mailbox") { taken += 1 }
                handled.append(item.id)
            } catch let error as MailboxError where error.kind == .storage {
                // Not committed: leave it at the replicas for the next drain.
                logger.error("inbox cannot take a mailbox message: \(error)")
            } catch let error as MessageError where error.kind == .busy {
                // Over the sender's rate: left at the replicas for a later drain.
                logger.info("mailbox message for \(name) deferred: \(error.message)")
            } catch {
                logger.warning("dropping a mailbox message for \(name): \(error)")
                handled.append(item.id)
            }
        }
        if !handled.isEmpty {
            await mailbox.acknowledge(name: name, ids: handled, key: key, after: drain)
        }
        return taken
    }

    /// Opens a mailbox item and checks the message in it (spec/mailbox.md §8 step 3).
    private func check(_ item: MailboxStore.Item, for name: AgentName) async throws -> SignedAgentMessage {
        let opened = try SealedBox.open(item.sealed, with: key)
        let signed = try SignedAgentMessage(bytes: opened)
        guard signed.message.id.bytes == item.id else {
            throw MessageError(.malformed, "the mailbox item's id is not the message's")
        }
        var policy = MessageAcceptance.Policy()
        policy.maximumAge = configuration.maximumStoredAge
        try MessageAcceptance.checkAddressAndTime(signed.message, serves: { $0 == name }, now: nowMilliseconds(), policy: policy)
        let senderRecord: SignedAgentRecord?
        if SignedAgentMessage.selfCertifyingKey(of: signed.message.sender) != nil {
            senderRecord = nil
        } else {
            senderRecord = try? await resolveRecord(signed.message.sender)
        }
        let senderKey = try MessageAcceptance.senderKey(signed.message.sender, record: senderRecord, now: nowMilliseconds())
        try MessageAcceptance.checkSignature(signed, key: senderKey)
        return signed
    }
}
