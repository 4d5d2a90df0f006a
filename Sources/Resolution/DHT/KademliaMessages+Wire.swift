import Identity
import Network

/// The driver's edge: `KademliaBehaviour`'s requests and answers to and from the kad wire format
/// (`KadMessage`, spec/dht.md §3). The behaviour never sees the encoding; these functions decide
/// what a malformed message becomes (a refused request, a failed request, an invalid record).

/// Why an inbound request is refused before the behaviour sees it (the stream is reset).
struct KadRefusal: Error, Sendable {
    let reason: String
}

extension KadMessage {
    /// The request as it goes on the wire.
    init(_ request: KademliaRequest<KademliaPeer>) {
        switch request {
        case .ping:
            self.init(type: .ping)
        case .findNode(let key):
            self.init(type: .findNode, key: key)
        case .getValue(let key):
            self.init(type: .getValue, key: key)
        case .putValue(let record):
            let key = record.record.name.recordKey
            self.init(type: .putValue, key: key, record: Record(key: key, value: record.bytes))
        case .getProviders(let key):
            self.init(type: .getProviders, key: key)
        case .addProvider(let key, let providers):
            self.init(
                type: .addProvider, key: key,
                providerPeers: providers.map { Peer(peerID: $0.id, addresses: $0.addresses) })
        }
    }

    /// The answer to `request` (the request as it came off the wire) as it goes on the wire, at
    /// `unixNow` (a record's `timeReceived`); `isConnected` says which closer peers we have a
    /// connection to. `nil` for `.stored`'s echo is never returned: PUT_VALUE echoes `request`.
    init(_ response: KademliaResponse<KademliaPeer>, answering request: KadMessage, unixNow: UInt64,
        isConnected: (PeerID) -> Bool
    ) {
        func peers(_ peers: [KademliaPeer], connections: Bool) -> [Peer] {
            peers.map {
                Peer(
                    peerID: $0.id, addresses: $0.addresses,
                    connection: connections && isConnected($0.id) ? .connected : .notConnected)
            }
        }
        switch response {
        case .pong:
            self.init(type: .ping)
        case .closerPeers(let closer):
            self.init(type: .findNode, key: request.key, closerPeers: peers(closer, connections: true))
        case .value(let closer, let record):
            self.init(type: .getValue, key: request.key, closerPeers: peers(closer, connections: true))
            if case .success(let record) = record {
                self.record = Record(
                    key: request.key, value: record.bytes, timeReceived: Timestamp.iso8601(unixNow))
            }
        case .stored:
            self = request
        case .providers(let closer, let providers):
            self.init(
                type: .getProviders, key: request.key, closerPeers: peers(closer, connections: true),
                providerPeers: peers(providers, connections: false))
        }
    }
}

extension KademliaRequest where Peer == KademliaPeer {
    /// An inbound request as the behaviour serves it, or why it is refused: a PUT_VALUE without a
    /// record, with a record key other than the message key or than its name's record key, or
    /// whose value is not an `.agent` record.
    static func decoding(_ message: KadMessage) -> Result<Self, KadRefusal> {
        switch message.type {
        case .ping:
            return .success(.ping)
        case .findNode:
            return .success(.findNode(key: message.key))
        case .getValue:
            return .success(.getValue(key: message.key))
        case .getProviders:
            return .success(.getProviders(key: message.key))
        case .addProvider:
            return .success(
                .addProvider(
                    key: message.key,
                    providers: message.providerPeers.map { KademliaPeer(id: $0.peerID, addresses: $0.addresses) }))
        case .putValue:
            guard let record = message.record else { return .failure(KadRefusal(reason: "PUT_VALUE without a record")) }
            guard record.key == message.key else {
                return .failure(KadRefusal(reason: "PUT_VALUE record key differs from the message key"))
            }
            let signed: SignedAgentRecord
            do {
                signed = try SignedAgentRecord(bytes: record.value)
            } catch {
                return .failure(KadRefusal(reason: "PUT_VALUE value is not an .agent record: \(error.message)"))
            }
            guard signed.record.name.recordKey == record.key else {
                return .failure(
                    KadRefusal(
                        reason:
                            "PUT_VALUE key \(String(decoding: record.key.prefix(300), as: UTF8.self).escapedForLog()) does not match the record's name \(signed.record.name)"
                    ))
            }
            return .success(.putValue(signed))
        }
    }

    /// The wire's message type of the request.
    var messageType: KadMessage.MessageType {
        switch self {
        case .ping: .ping
        case .findNode: .findNode
        case .getValue: .getValue
        case .putValue: .putValue
        case .getProviders: .getProviders
        case .addProvider: .addProvider
        }
    }

    /// The key the request is about (none for PING).
    var key: [UInt8] {
        switch self {
        case .ping: []
        case .findNode(let key), .getValue(let key), .getProviders(let key), .addProvider(let key, _): key
        case .putValue(let record): record.record.name.recordKey
        }
    }
}

extension KademliaResponse where Peer == KademliaPeer {
    /// A peer's answer to `request`, its addresses already filtered by the scope rule; a failure
    /// (a bad answer) when it answers another kind of request. A GET_VALUE record under another
    /// key, or whose bytes are not an `.agent` record, is kept as an invalid answer for the value
    /// lookup to count (`ValueLookup.receiveInvalid`).
    static func decoding(_ answer: KadMessage, for request: KademliaRequest<KademliaPeer>)
        -> Result<Self, KadRequestFailure>
    {
        guard answer.type == request.messageType else {
            return .failure(KadRequestFailure(.badAnswer, "answered \(request.messageType) with \(answer.type)"))
        }
        let closer = answer.closerPeers.map { KademliaPeer(id: $0.peerID, addresses: $0.addresses) }
        switch request {
        case .ping:
            return .success(.pong)
        case .findNode:
            return .success(.closerPeers(closer))
        case .getValue(let key):
            guard let record = answer.record else { return .success(.value(closerPeers: closer, record: nil)) }
            guard record.key == key else {
                return .success(
                    .value(
                        closerPeers: closer,
                        record: .failure(ResolutionError(.malformed, "GET_VALUE answer under another key"))))
            }
            do throws(ResolutionError) {
                return .success(.value(closerPeers: closer, record: .success(try SignedAgentRecord(bytes: record.value))))
            } catch {
                return .success(.value(closerPeers: closer, record: .failure(error)))
            }
        case .putValue:
            return .success(.stored)
        case .getProviders:
            return .success(
                .providers(
                    closerPeers: closer,
                    providers: answer.providerPeers.map { KademliaPeer(id: $0.peerID, addresses: $0.addresses) }))
        case .addProvider:
            return .failure(KadRequestFailure(.badAnswer, "ADD_PROVIDER has no answer"))
        }
    }
}
