import Foundation
import Identity
import Multiformats
import NIOCore
import SwiftProtobuf

/// Circuit relay v2 (libp2p/specs relay/circuit-v2.md): protocol ids, message framing, vouchers.
public enum CircuitRelay {
    public static let hopProtocolID = "/libp2p/circuit/relay/0.2.0/hop"
    public static let stopProtocolID = "/libp2p/circuit/relay/0.2.0/stop"
    /// Largest hop or stop message accepted or sent: go-libp2p's relay reads at most 4096 bytes,
    /// so every message we send stays below it, and we refuse larger ones.
    public static let maximumMessageSize = 4096
    /// The voucher's signed-envelope domain and payload type (multicodec 0x0302).
    static let voucherDomain = Array("libp2p-relay-rsvp".utf8)
    static let voucherPayloadType: [UInt8] = [0x03, 0x02]

    /// A relay's answer other than OK, as an error for the dialler or the reserving client.
    static func refusal(_ status: RelayStatus, from relay: PeerID, doing what: String) -> NetworkError {
        let kind: NetworkError.Kind =
            switch status {
            case .resourceLimitExceeded, .reservationRefused: .resourceLimit
            case .permissionDenied: .refused
            case .malformedMessage, .unexpectedMessage: .protocolViolation
            default: .connectionFailed
            }
        return NetworkError(kind, "relay \(relay) refused the \(what): \(status.text)")
    }
}

extension RelayStatus {
    /// The spec's name of the status with what it means.
    var text: String {
        switch self {
        case .ok: "OK"
        case .reservationRefused: "RESERVATION_REFUSED (the relay takes no more reservations)"
        case .resourceLimitExceeded: "RESOURCE_LIMIT_EXCEEDED (too many circuits or reservations)"
        case .permissionDenied: "PERMISSION_DENIED"
        case .connectionFailed: "CONNECTION_FAILED (the relay could not reach the target)"
        case .noReservation: "NO_RESERVATION (the target holds no reservation at this relay, or is not connected to it)"
        case .malformedMessage: "MALFORMED_MESSAGE"
        case .unexpectedMessage: "UNEXPECTED_MESSAGE"
        case .unused: "no status"
        case .UNRECOGNIZED(let value): "unknown status \(value)"
        }
    }
}

extension MuxedStream {
    /// Reads one varint-framed relay message (hop or stop) of at most 4 KiB; nil at a clean end.
    func readRelayMessage<Message: SwiftProtobuf.Message>(_ type: Message.Type) async throws -> Message? {
        try await readMessage(type, maximumSize: CircuitRelay.maximumMessageSize)
    }

    /// Writes one varint-framed relay message (at most 4 KiB).
    func writeRelayMessage(_ message: some SwiftProtobuf.Message) async throws {
        try await writeMessage(message, maximumSize: CircuitRelay.maximumMessageSize)
    }
}

/// A reservation voucher: the relay's signed statement that it serves `peer` until `expiration`
/// (a libp2p signed envelope, RFC 0002, domain `libp2p-relay-rsvp`). Advisory: a reservation
/// without a valid voucher is still used (rust-libp2p sends none).
struct ReservationVoucher: Equatable, Sendable {
    var relay: PeerID
    var peer: PeerID
    /// Unix seconds.
    var expiration: UInt64

    /// The envelope's bytes, signed with the relay's key.
    func sealed(by key: Ed25519.PrivateKey) throws -> [UInt8] {
        var voucher = RelayVoucher()
        voucher.relay = Data(relay.bytes)
        voucher.peer = Data(peer.bytes)
        voucher.expiration = expiration
        let payload: [UInt8] = try voucher.serializedBytes()
        var envelope = RelayEnvelope()
        envelope.publicKey = Data(LibP2PPublicKey(key.publicKey).protobuf)
        envelope.payloadType = Data(CircuitRelay.voucherPayloadType)
        envelope.payload = Data(payload)
        envelope.signature = Data(key.signature(for: Self.signedBytes(payload: payload)))
        return try envelope.serializedBytes()
    }

    /// Opens and checks an envelope: the signature, the domain and type, and that the signer is the
    /// voucher's relay.
    init(envelope bytes: [UInt8]) throws(NetworkError) {
        let payload: [UInt8]
        let voucher: RelayVoucher
        do {
            let envelope = try RelayEnvelope(serializedBytes: bytes)
            guard Array(envelope.payloadType) == CircuitRelay.voucherPayloadType else {
                throw NetworkError(.protocolViolation, "voucher envelope has payload type \(Array(envelope.payloadType)), not 0x0302")
            }
            let signer = try LibP2PPublicKey(protobuf: Array(envelope.publicKey))
            let key = try signer.ed25519()
            payload = Array(envelope.payload)
            guard key.isValidSignature(Array(envelope.signature), for: Self.signedBytes(payload: payload)) else {
                throw NetworkError(.protocolViolation, "voucher signature does not verify")
            }
            voucher = try RelayVoucher(serializedBytes: payload)
            self.relay = try PeerID(bytes: Array(voucher.relay))
            self.peer = try PeerID(bytes: Array(voucher.peer))
            self.expiration = voucher.expiration
            guard PeerID(publicKey: signer) == relay else {
                throw NetworkError(.protocolViolation, "voucher for relay \(relay) is signed by another key")
            }
        } catch let error as NetworkError {
            throw error
        } catch {
            throw NetworkError(.protocolViolation, "malformed voucher: \(error)")
        }
    }

    init(relay: PeerID, peer: PeerID, expiration: UInt64) {
        self.relay = relay
        self.peer = peer
        self.expiration = expiration
    }

    /// RFC 0002: uvarint(len(domain)) ‖ domain ‖ uvarint(len(type)) ‖ type ‖ uvarint(len(payload)) ‖ payload.
    static func signedBytes(payload: [UInt8]) -> [UInt8] {
        var buffer = ByteBuffer()
        for field in [CircuitRelay.voucherDomain, CircuitRelay.voucherPayloadType, payload] {
            buffer.writeUVarint(UInt64(field.count))
            buffer.writeBytes(field)
        }
        return Array(buffer.readableBytesView)
    }
}
