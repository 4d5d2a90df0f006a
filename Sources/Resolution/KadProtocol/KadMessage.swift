import Foundation
import Identity
import Multiformats
import SwiftProtobuf

/// A kad-dht RPC message (libp2p/specs `kad-dht/README.md`, "RPC messages"), decoded and checked.
///
/// The wire form is the spec's protobuf (`Generated/dht.proto`); this type is what the rest of
/// agentd sees: peer ids and multiaddrs parsed, lists bounded. Decoding is strict about the envelope
/// (valid protobuf, known message type, sizes) and lenient about peers, as peers of other
/// implementations may advertise addresses we cannot parse: an unparsable address is dropped, a peer
/// whose id is not a peer id is dropped, and `droppedEntries` counts both.
public struct KadMessage: Hashable, Sendable {
    public enum MessageType: Int, Hashable, Sendable {
        case putValue = 0
        case getValue = 1
        case addProvider = 2
        case getProviders = 3
        case findNode = 4
        case ping = 5
    }

    public enum ConnectionType: Int, Hashable, Sendable {
        case notConnected = 0
        case connected = 1
        case canConnect = 2
        case cannotConnect = 3
    }

    public struct Peer: Hashable, Sendable {
        public var peerID: PeerID
        public var addresses: [Multiaddr]
        public var connection: ConnectionType

        public init(peerID: PeerID, addresses: [Multiaddr], connection: ConnectionType = .notConnected) {
            self.peerID = peerID
            self.addresses = addresses
            self.connection = connection
        }
    }

    /// The kad `Record`: the value stored under `key` (for agentd, a signed `.agent` record).
    public struct Record: Hashable, Sendable {
        public var key: [UInt8]
        public var value: [UInt8]
        /// RFC 3339 time the responder received the record (informational).
        public var timeReceived: String

        public init(key: [UInt8], value: [UInt8], timeReceived: String = "") {
            self.key = key
            self.value = value
            self.timeReceived = timeReceived
        }
    }

    public var type: MessageType
    public var key: [UInt8]
    public var record: Record?
    public var closerPeers: [Peer]
    public var providerPeers: [Peer]
    /// Peers and addresses dropped while decoding because they did not parse.
    public private(set) var droppedEntries = 0

    public init(
        type: MessageType, key: [UInt8] = [], record: Record? = nil, closerPeers: [Peer] = [], providerPeers: [Peer] = []
    ) {
        self.type = type
        self.key = key
        self.record = record
        self.closerPeers = closerPeers
        self.providerPeers = providerPeers
    }

    /// The protobuf encoding (without the varint length prefix that frames it on a stream).
    public func serialized() -> [UInt8] {
        var message = Agentd_Kad_Message()
        message.type = Agentd_Kad_Message.MessageType(rawValue: type.rawValue) ?? .ping
        message.key = Data(key)
        if let record {
            var wire = Agentd_Kad_Record()
            wire.key = Data(record.key)
            wire.value = Data(record.value)
            wire.timeReceived = record.timeReceived
            message.record = wire
        }
        message.closerPeers = closerPeers.map(Self.wirePeer)
        message.providerPeers = providerPeers.map(Self.wirePeer)
        return (try? message.serializedBytes()) ?? []
    }

    private static func wirePeer(_ peer: Peer) -> Agentd_Kad_Message.Peer {
        var wire = Agentd_Kad_Message.Peer()
        wire.id = Data(peer.peerID.bytes)
        wire.addrs = peer.addresses.map { Data($0.bytes) }
        wire.connection = Agentd_Kad_Message.ConnectionType(rawValue: peer.connection.rawValue) ?? .notConnected
        return wire
    }

    /// Decodes and checks a message.
    /// - Throws: `ResolutionError.oversized` over `KadLimits.maximumMessageSize` or a list limit,
    ///   `.malformed` for bad protobuf, an unknown message type, or an oversized key or record.
    public init<Bytes: Collection<UInt8>>(serialized input: Bytes) throws(ResolutionError) {
        guard input.count <= KadLimits.maximumMessageSize else {
            throw ResolutionError(
                .oversized, "kad message of \(input.count) bytes is over the \(KadLimits.maximumMessageSize)-byte limit")
        }
        let message: Agentd_Kad_Message
        do {
            message = try Agentd_Kad_Message(serializedBytes: Array(input))
        } catch {
            throw ResolutionError(.malformed, "kad message is not a valid protobuf: \(error)")
        }
        guard case .some(let type) = MessageType(rawValue: message.type.rawValue) else {
            throw ResolutionError(.malformed, "kad message has unknown type \(message.type.rawValue)")
        }
        guard message.key.count <= KadLimits.maximumKeyLength else {
            throw ResolutionError(.malformed, "kad message key of \(message.key.count) bytes is over \(KadLimits.maximumKeyLength)")
        }
        guard message.closerPeers.count <= KadLimits.maximumPeers, message.providerPeers.count <= KadLimits.maximumPeers else {
            throw ResolutionError(.oversized, "kad message lists more than \(KadLimits.maximumPeers) peers")
        }
        self.init(type: type, key: Array(message.key))
        if message.hasRecord {
            guard message.record.key.count <= KadLimits.maximumKeyLength,
                message.record.value.count <= KadLimits.maximumValueLength,
                message.record.timeReceived.utf8.count <= 64
            else {
                throw ResolutionError(.malformed, "kad record is over its key, value or time limits")
            }
            record = Record(
                key: Array(message.record.key), value: Array(message.record.value),
                timeReceived: message.record.timeReceived)
        }
        closerPeers = decodePeers(message.closerPeers)
        providerPeers = decodePeers(message.providerPeers)
    }

    private mutating func decodePeers(_ wirePeers: [Agentd_Kad_Message.Peer]) -> [Peer] {
        var peers: [Peer] = []
        for wire in wirePeers {
            guard let peerID = try? PeerID(bytes: Array(wire.id)) else {
                droppedEntries += 1
                continue
            }
            var addresses: [Multiaddr] = []
            for raw in wire.addrs.prefix(KadLimits.maximumAddressesPerPeer) {
                if let address = try? Multiaddr(bytes: Array(raw)) {
                    addresses.append(address)
                } else {
                    droppedEntries += 1
                }
            }
            droppedEntries += max(0, wire.addrs.count - KadLimits.maximumAddressesPerPeer)
            let connection = ConnectionType(rawValue: wire.connection.rawValue) ?? .notConnected
            peers.append(Peer(peerID: peerID, addresses: addresses, connection: connection))
        }
        return peers
    }
}

/// Limits on kad messages (spec/dht.md when the protocol lands on the host).
public enum KadLimits {
    /// Largest message read. go and py accept 4 MiB; agentd records are at most 8 KiB and a reply
    /// carries at most 20 peers, so 1 MiB leaves ample room for other implementations' records.
    public static let maximumMessageSize = 1 << 20
    /// Peers per list: the spec's replies carry k = 20; more is junk (bounded, refused).
    public static let maximumPeers = 64
    /// Addresses kept per peer; the rest are dropped.
    public static let maximumAddressesPerPeer = 16
    /// Longest key (record keys like `/agent/<253-byte name>` are far below).
    public static let maximumKeyLength = 1024
    /// Longest record value accepted in a message (py rejects over 1 MiB; agentd records ≤ 8 KiB).
    public static let maximumValueLength = 1 << 20
}
