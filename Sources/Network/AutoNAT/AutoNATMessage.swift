import Foundation
import Identity
import Multiformats
import NIOCore
import SwiftProtobuf

/// A DIAL request (autonat-v1.md): "dial me back at these addresses".
public struct AutoNATDialRequest: Hashable, Sendable {
    /// The peer to dial back: must be the requester itself.
    public var peer: PeerID
    /// The addresses to try; the server dials only those on the requester's observed IP.
    public var addresses: [Multiaddr]

    public init(peer: PeerID, addresses: [Multiaddr]) {
        self.peer = peer
        self.addresses = addresses
    }
}

/// A DIAL_RESPONSE.
public struct AutoNATDialResponse: Hashable, Sendable {
    public var status: AutoNATStatus
    public var statusText: String
    /// The address the server reached us at (with `OK`).
    public var address: Multiaddr?

    public init(status: AutoNATStatus, statusText: String = "", address: Multiaddr? = nil) {
        self.status = status
        self.statusText = statusText
        self.address = address
    }
}

/// Encoding and decoding of the two AutoNAT messages. Decoding throws `NetworkError`
/// `protocolViolation` with a message saying what is wrong (the server answers it with
/// `E_BAD_REQUEST`); it never traps on any input.
public enum AutoNATMessage {
    typealias Wire = Agentd_Autonat_Message

    public static func encode(_ request: AutoNATDialRequest) -> ByteBuffer { serialize(wire(request)) }

    public static func encode(_ response: AutoNATDialResponse) -> ByteBuffer { serialize(wire(response)) }

    /// Decodes a DIAL (see `request(from:)`).
    public static func decodeRequest(_ bytes: ByteBuffer) throws(NetworkError) -> AutoNATDialRequest {
        try request(from: try parse(bytes))
    }

    /// Decodes a DIAL_RESPONSE (see `response(from:)`).
    public static func decodeResponse(_ bytes: ByteBuffer) throws(NetworkError) -> AutoNATDialResponse {
        try response(from: try parse(bytes))
    }

    static func wire(_ request: AutoNATDialRequest) -> Wire {
        var message = Wire()
        message.type = .dial
        message.dial.peer.id = Data(request.peer.bytes)
        message.dial.peer.addrs = request.addresses.map { Data($0.bytes) }
        return message
    }

    static func wire(_ response: AutoNATDialResponse) -> Wire {
        var message = Wire()
        message.type = .dialResponse
        // proto2: `status` is written even when it is OK (0), as go and py do.
        message.dialResponse.status = Wire.ResponseStatus(rawValue: response.status.rawValue)!
        if !response.statusText.isEmpty {
            message.dialResponse.statusText = String(response.statusText.prefix(AutoNAT.maximumStatusTextLength))
        }
        if let address = response.address { message.dialResponse.addr = Data(address.bytes) }
        return message
    }

    /// Decodes a DIAL. Addresses that are not valid multiaddrs are left out (as go does: an
    /// address we cannot parse is one we cannot dial); a missing or invalid peer id, another
    /// message type or a body that is not the protobuf is an error.
    static func request(from message: Wire) throws(NetworkError) -> AutoNATDialRequest {
        guard message.hasType else { throw NetworkError(.protocolViolation, "AutoNAT message without a type") }
        guard message.type == .dial else {
            throw NetworkError(.protocolViolation, "expected an AutoNAT DIAL, got type \(message.type.rawValue)")
        }
        guard message.hasDial, message.dial.hasPeer, message.dial.peer.hasID else {
            throw NetworkError(.protocolViolation, "AutoNAT DIAL without dial.peer.id")
        }
        let peer: PeerID
        do {
            peer = try PeerID(bytes: message.dial.peer.id)
        } catch {
            throw NetworkError(.protocolViolation, "AutoNAT DIAL with an invalid peer id: \(error.message)")
        }
        var addresses: [Multiaddr] = []
        for bytes in message.dial.peer.addrs {
            guard let address = try? Multiaddr(bytes: bytes), !addresses.contains(address) else { continue }
            addresses.append(address)
        }
        return AutoNATDialRequest(peer: peer, addresses: addresses)
    }

    /// Decodes a DIAL_RESPONSE. A status outside the spec's list, a missing status or an `OK`
    /// whose `addr` is not a multiaddr is an error.
    static func response(from message: Wire) throws(NetworkError) -> AutoNATDialResponse {
        guard message.hasType, message.type == .dialResponse else {
            throw NetworkError(.protocolViolation, "expected an AutoNAT DIAL_RESPONSE")
        }
        // An unknown enum value lands in the unknown fields, leaving `status` unset (proto2).
        guard message.hasDialResponse, message.dialResponse.hasStatus,
            let status = AutoNATStatus(rawValue: message.dialResponse.status.rawValue)
        else {
            throw NetworkError(.protocolViolation, "AutoNAT DIAL_RESPONSE without a known status")
        }
        var address: Multiaddr?
        if message.dialResponse.hasAddr {
            do {
                address = try Multiaddr(bytes: message.dialResponse.addr)
            } catch {
                throw NetworkError(.protocolViolation, "AutoNAT DIAL_RESPONSE with an invalid addr: \(error.message)")
            }
        }
        let text = String(message.dialResponse.statusText.prefix(AutoNAT.maximumStatusTextLength))
        return AutoNATDialResponse(status: status, statusText: text, address: address)
    }

    private static func parse(_ bytes: ByteBuffer) throws(NetworkError) -> Wire {
        guard bytes.readableBytes <= AutoNAT.maximumMessageLength else {
            throw NetworkError(
                .protocolViolation,
                "AutoNAT message of \(bytes.readableBytes) bytes is over the \(AutoNAT.maximumMessageLength)-byte limit"
            )
        }
        do {
            return try Wire(serializedBytes: Array(bytes.readableBytesView))
        } catch {
            throw NetworkError(.protocolViolation, "AutoNAT message is not a valid protobuf: \(error)")
        }
    }

    private static func serialize(_ message: Wire) -> ByteBuffer {
        // Serialising a message we built from valid values cannot fail (no required fields).
        do {
            return ByteBuffer(bytes: try message.serializedBytes() as [UInt8])
        } catch {
            preconditionFailure("AutoNAT message serialisation failed: \(error)")
        }
    }
}
