import Identity

/// A kad request as `KademliaBehaviour` sends and serves it: the RPCs of the libp2p kad-dht spec
/// (spec/dht.md §3) without their encoding. agentd's driver turns them into `KadMessage`s and back
/// at its edge (`KadMessage(_:)`, `KademliaRequest.decoding(_:)`, KademliaMessages+Wire.swift);
/// the simulator hands them from one virtual node to another as they are. `Peer` is the handle the
/// behaviour knows peers by.
package enum KademliaRequest<Peer: Sendable>: Sendable {
    /// PING.
    case ping
    /// FIND_NODE: the peers closest to `key` (arbitrary bytes; the point is their SHA-256).
    case findNode(key: [UInt8])
    /// GET_VALUE: the record under `key` (a name's record key), with closer peers.
    case getValue(key: [UInt8])
    /// PUT_VALUE of a record under its name's record key (the decoder checks that the message's
    /// keys are that key).
    case putValue(SignedAgentRecord)
    /// GET_PROVIDERS: providers of `key`, with closer peers.
    case getProviders(key: [UInt8])
    /// ADD_PROVIDER: the peers the message names as providers of `key` (only the sender counts).
    case addProvider(key: [UInt8], providers: [Peer])

    /// The request's kind, for logs and for matching an answer to its request.
    package var kind: KademliaMessageKind {
        switch self {
        case .ping: .ping
        case .findNode: .findNode
        case .getValue: .getValue
        case .putValue: .putValue
        case .getProviders: .getProviders
        case .addProvider: .addProvider
        }
    }
}

/// An answer to a `KademliaRequest` (ADD_PROVIDER has none).
package enum KademliaResponse<Peer: Sendable>: Sendable {
    /// PING answered.
    case pong
    /// FIND_NODE: the peers closest to the key the answerer knows.
    case closerPeers([Peer])
    /// GET_VALUE: closer peers, and the record the answerer holds, if it sent one: as decoded, the
    /// record or why the bytes it sent are not one (a server's own answer is always a record).
    case value(closerPeers: [Peer], record: Result<SignedAgentRecord, ResolutionError>?)
    /// PUT_VALUE: stored (the wire echoes the request).
    case stored
    /// GET_PROVIDERS: closer peers and the providers the answerer knows.
    case providers(closerPeers: [Peer], providers: [Peer])

    package var kind: KademliaMessageKind {
        switch self {
        case .pong: .ping
        case .closerPeers: .findNode
        case .value: .getValue
        case .stored: .putValue
        case .providers: .getProviders
        }
    }

    /// The peers the answer names as closer to the key (none for PING and PUT_VALUE).
    package var closerPeers: [Peer] {
        switch self {
        case .closerPeers(let peers), .value(let peers, _), .providers(let peers, _): peers
        case .pong, .stored: []
        }
    }
}

/// The kinds of kad requests (KadMessage.MessageType without its encoding).
package enum KademliaMessageKind: String, Hashable, Sendable {
    case ping = "PING"
    case findNode = "FIND_NODE"
    case getValue = "GET_VALUE"
    case putValue = "PUT_VALUE"
    case getProviders = "GET_PROVIDERS"
    case addProvider = "ADD_PROVIDER"
}
