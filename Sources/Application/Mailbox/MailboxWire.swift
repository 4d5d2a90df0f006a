import Foundation
import Identity
import Multiformats
import Resolution
import SwiftProtobuf

/// The messages of `/agent/mailbox/1.0.0` (spec/mailbox.md §3) as checked values: decoding refuses
/// anything the spec does not allow (lengths, counts, missing fields), so the replica and the
/// recipient only ever see well-formed requests and responses.
public enum MailboxWire {
    public static let protocolID = "/agent/mailbox/1.0.0"
    public static let maximumRequestSize = 1024 * 1024
    public static let maximumResponseSize = 5 * 1024 * 1024
    /// Messages per STORE.
    public static let maximumMessagesPerStore = 16
    /// Ids per ACK or OFFER.
    public static let maximumIDsPerRequest = 1024

    /// `SHA-256("/agent/mailbox/" ‖ canonical name)`.
    public static func mailboxKey(for name: AgentName) -> [UInt8] {
        SHA256.hash(Array("/agent/mailbox/".utf8) + Array(name.value.utf8))
    }

    public enum Request: Hashable, Sendable {
        case store(mailbox: [UInt8], messages: [MailboxStore.Item], recipientPeer: PeerID?)
        case fetch(mailbox: [UInt8], access: MailboxAccess, cursor: UInt64)
        case ack(mailbox: [UInt8], ids: [[UInt8]], access: MailboxAccess)
        case offer(mailbox: [UInt8], ids: [[UInt8]])
        case hint(mailbox: [UInt8])

        public var mailbox: [UInt8] {
            switch self {
            case .store(let mailbox, _, _), .fetch(let mailbox, _, _), .ack(let mailbox, _, _), .offer(let mailbox, _),
                .hint(let mailbox):
                return mailbox
            }
        }
    }

    /// A replica's answer.
    public enum Response: Hashable, Sendable {
        /// STORE: one result per message, in order (`stored`, `duplicate`, `acknowledged` or an error code).
        case stored([String])
        /// FETCH: a page and the cursor of the next (nil on the last page).
        case page(messages: [MailboxStore.Item], next: UInt64?)
        /// ACK: messages deleted.
        case acknowledged(Int)
        /// OFFER: the ids wanted.
        case wanted([[UInt8]])
        /// HINT.
        case ok
        /// A refusal of the whole request.
        case error(MailboxError)
    }

    // MARK: Requests

    public static func encode(_ request: Request) throws(MailboxError) -> [UInt8] {
        var message = Agent_Mailbox_V1_MailboxRequest()
        message.mailbox = Data(request.mailbox)
        switch request {
        case .store(_, let messages, let recipientPeer):
            message.type = .store
            message.messages = messages.map(wireMessage)
            if let recipientPeer { message.recipientPeer = Data(recipientPeer.bytes) }
        case .fetch(_, let access, let cursor):
            message.type = .fetch
            message.access = wireAccess(access)
            message.cursor = cursor
        case .ack(_, let ids, let access):
            message.type = .ack
            message.ids = ids.map { Data($0) }
            message.access = wireAccess(access)
        case .offer(_, let ids):
            message.type = .offer
            message.ids = ids.map { Data($0) }
        case .hint:
            message.type = .hint
        }
        return try serialize(message)
    }

    public static func decodeRequest<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(MailboxError) -> Request {
        guard bytes.count <= maximumRequestSize else {
            throw MailboxError(.malformed, "a mailbox request of \(bytes.count) bytes is over \(maximumRequestSize)")
        }
        let message: Agent_Mailbox_V1_MailboxRequest
        do {
            message = try Agent_Mailbox_V1_MailboxRequest(serializedBytes: Array(bytes))
        } catch {
            throw MailboxError(.malformed, "a mailbox request does not decode: \(error)")
        }
        let mailbox = Array(message.mailbox)
        try MailboxStore.check(mailbox: mailbox)
        switch message.type {
        case .store:
            guard (1...maximumMessagesPerStore).contains(message.messages.count) else {
                throw MailboxError(.malformed, "a STORE carries 1 to \(maximumMessagesPerStore) messages, not \(message.messages.count)")
            }
            var items: [MailboxStore.Item] = []
            for wire in message.messages {
                let item = MailboxStore.Item(mailbox: mailbox, id: Array(wire.id), sealed: Array(wire.sealed), expires: wire.expires)
                try MailboxStore.check(id: item.id)
                items.append(item)
            }
            var recipient: PeerID?
            if !message.recipientPeer.isEmpty {
                do {
                    recipient = try PeerID(bytes: message.recipientPeer)
                } catch {
                    throw MailboxError(.malformed, "a STORE's recipient_peer is not a peer id: \(error)")
                }
            }
            return .store(mailbox: mailbox, messages: items, recipientPeer: recipient)
        case .fetch:
            return .fetch(mailbox: mailbox, access: try access(of: message), cursor: message.cursor)
        case .ack:
            return .ack(mailbox: mailbox, ids: try ids(of: message), access: try access(of: message))
        case .offer:
            return .offer(mailbox: mailbox, ids: try ids(of: message))
        case .hint:
            return .hint(mailbox: mailbox)
        case .UNRECOGNIZED(let value):
            throw MailboxError(.malformed, "unknown mailbox request type \(value)")
        }
    }

    private static func ids(of message: Agent_Mailbox_V1_MailboxRequest) throws(MailboxError) -> [[UInt8]] {
        guard (1...maximumIDsPerRequest).contains(message.ids.count) else {
            throw MailboxError(.malformed, "an ACK or OFFER carries 1 to \(maximumIDsPerRequest) ids, not \(message.ids.count)")
        }
        var ids: [[UInt8]] = []
        ids.reserveCapacity(message.ids.count)
        for id in message.ids {
            try MailboxStore.check(id: Array(id))
            ids.append(Array(id))
        }
        return ids
    }

    private static func access(of message: Agent_Mailbox_V1_MailboxRequest) throws(MailboxError) -> MailboxAccess {
        guard message.hasAccess else {
            throw MailboxError(.unauthorized, "a FETCH or ACK without an access signature")
        }
        let name: AgentName
        do {
            name = try AgentName(canonical: message.access.name)
        } catch {
            throw MailboxError(.malformed, "the access name is not a canonical .agent name: \(error)")
        }
        guard message.access.signature.count == Ed25519.signatureLength else {
            throw MailboxError(.malformed, "an access signature is 64 bytes, not \(message.access.signature.count)")
        }
        return MailboxAccess(name: name, timestamp: message.access.timestamp, signature: Array(message.access.signature))
    }

    // MARK: Responses

    public static func encode(_ response: Response) throws(MailboxError) -> [UInt8] {
        var message = Agent_Mailbox_V1_MailboxResponse()
        message.status = .ok
        switch response {
        case .stored(let results): message.results = results
        case .page(let messages, let next):
            message.messages = messages.map(wireMessage)
            message.next = next ?? 0
        case .acknowledged(let count): message.acknowledged = UInt32(clamping: count)
        case .wanted(let ids): message.wanted = ids.map { Data($0) }
        case .ok: break
        case .error(let error):
            message.status = .error
            message.code = error.kind.rawValue
            message.text = error.message
        }
        return try serialize(message)
    }

    /// Decodes the answer to `request` (the shape expected depends on it).
    public static func decodeResponse<Bytes: Collection<UInt8>>(_ bytes: Bytes, to request: Request) throws(MailboxError) -> Response {
        guard bytes.count <= maximumResponseSize else {
            throw MailboxError(.malformed, "a mailbox response of \(bytes.count) bytes is over \(maximumResponseSize)")
        }
        let message: Agent_Mailbox_V1_MailboxResponse
        do {
            message = try Agent_Mailbox_V1_MailboxResponse(serializedBytes: Array(bytes))
        } catch {
            throw MailboxError(.malformed, "a mailbox response does not decode: \(error)")
        }
        if message.status == .error {
            let kind = MailboxError.Kind(rawValue: message.code) ?? .malformed
            let text = String(message.text.prefix(500))
            return .error(MailboxError(kind, kind.rawValue == message.code ? text : "unknown error code \"\(message.code.prefix(40))\": \(text)"))
        }
        guard message.status == .ok else {
            throw MailboxError(.malformed, "unknown mailbox response status")
        }
        switch request {
        case .store(_, let messages, _):
            guard message.results.count == messages.count else {
                throw MailboxError(.malformed, "a STORE of \(messages.count) messages answered with \(message.results.count) results")
            }
            return .stored(message.results.map { String($0.prefix(40)) })
        case .fetch(let mailbox, _, _):
            var items: [MailboxStore.Item] = []
            for wire in message.messages {
                let item = MailboxStore.Item(mailbox: mailbox, id: Array(wire.id), sealed: Array(wire.sealed), expires: wire.expires)
                try MailboxStore.check(id: item.id)
                items.append(item)
            }
            return .page(messages: items, next: message.next == 0 ? nil : message.next)
        case .ack: return .acknowledged(Int(message.acknowledged))
        case .offer(_, let offered):
            let offeredSet = Set(offered)
            var wanted: [[UInt8]] = []
            for id in message.wanted {
                // Only ids that were offered can be wanted.
                guard offeredSet.contains(Array(id)) else {
                    throw MailboxError(.malformed, "an OFFER answered with an id that was not offered")
                }
                wanted.append(Array(id))
            }
            return .wanted(wanted)
        case .hint: return .ok
        }
    }

    private static func wireMessage(_ item: MailboxStore.Item) -> Agent_Mailbox_V1_MailboxMessage {
        var wire = Agent_Mailbox_V1_MailboxMessage()
        wire.id = Data(item.id)
        wire.sealed = Data(item.sealed)
        wire.expires = item.expires
        return wire
    }

    private static func wireAccess(_ access: MailboxAccess) -> Agent_Mailbox_V1_MailboxAccess {
        var wire = Agent_Mailbox_V1_MailboxAccess()
        wire.name = access.name.value
        wire.timestamp = access.timestamp
        wire.signature = Data(access.signature)
        return wire
    }

    private static func serialize(_ message: some SwiftProtobuf.Message) throws(MailboxError) -> [UInt8] {
        do {
            return try message.serializedBytes()
        } catch {
            throw MailboxError(.malformed, "cannot encode a mailbox message: \(error)")
        }
    }
}

/// The recipient's proof that it may read or empty its mailbox at one replica (spec/mailbox.md §4).
public struct MailboxAccess: Hashable, Sendable {
    public enum Operation: String, Sendable {
        case fetch
        case ack
    }

    public static let signingContext = Array("agent-mailbox-access:v1\n".utf8)
    /// How far the timestamp may be from the replica's clock.
    public static let freshness: UInt64 = 300

    public var name: AgentName
    public var timestamp: UInt64
    public var signature: [UInt8]

    public init(name: AgentName, timestamp: UInt64, signature: [UInt8]) {
        self.name = name
        self.timestamp = timestamp
        self.signature = signature
    }

    /// Signs access to `name`'s mailbox at `replica` for `operation` on `ids` (ACK; none for FETCH).
    public init(signing operation: Operation, name: AgentName, replica: PeerID, ids: [[UInt8]] = [], timestamp: UInt64, key: Ed25519.PrivateKey) {
        self.name = name
        self.timestamp = timestamp
        self.signature = key.signature(
            for: Self.signedBytes(operation, name: name, replica: replica, timestamp: timestamp, ids: ids))
    }

    /// The bytes the signature covers.
    public static func signedBytes(_ operation: Operation, name: AgentName, replica: PeerID, timestamp: UInt64, ids: [[UInt8]])
        -> [UInt8]
    {
        var bytes = signingContext
        for field in [Array(operation.rawValue.utf8), Array(name.value.utf8), replica.bytes] {
            bytes += UVarint.encode(UInt64(field.count))
            bytes += field
        }
        withUnsafeBytes(of: timestamp.bigEndian) { bytes += $0 }
        bytes += MailboxWire.mailboxKey(for: name)
        bytes += SHA256.hash(ids.flatMap { $0 })
        return bytes
    }

    /// Checks the access for `operation` on `mailbox` at `replica` (this node) against the
    /// recipient's record key, at time `now`.
    /// - Throws: `.unauthorized` with the reason.
    public func check(
        _ operation: Operation, mailbox: [UInt8], replica: PeerID, ids: [[UInt8]] = [], key: Ed25519.PublicKey, now: UInt64
    ) throws(MailboxError) {
        guard mailbox == MailboxWire.mailboxKey(for: name) else {
            throw MailboxError(.unauthorized, "the access is for \(name), whose mailbox is not the one requested")
        }
        let skew = now > timestamp ? now - timestamp : timestamp - now
        guard skew <= Self.freshness else {
            throw MailboxError(.unauthorized, "the access signature's timestamp is \(skew) s from this replica's clock (at most \(Self.freshness))")
        }
        let signed = Self.signedBytes(operation, name: name, replica: replica, timestamp: timestamp, ids: ids)
        guard key.isValidSignature(signature, for: signed) else {
            throw MailboxError(.unauthorized, "the access signature is not by the key of \(name)'s record")
        }
    }
}
