import AgentTesting
import Foundation
import Identity
import NIOCore
import Testing

@testable import Session

/// Transcripts made by the independent Python `noiseprotocol` package
/// (Tests/Interop/py/noise_vectors.py): our Noise must produce them byte for byte.
@Suite("Noise XX vectors from the Python noiseprotocol package")
struct NoiseVectorTests {
    struct Message {
        let initiatorSends: Bool
        /// `Rekey()` of the sender's direction instead of a message (noise_vectors.py, REKEY).
        let rekey: Bool
        let payload: [UInt8]
        let ciphertext: [UInt8]
    }

    static func load() throws -> [(Vector, [Message], [String: String])] {
        let raw = try TestVectors.load("noise-xx.json")["vectors"] as? [[String: Any]] ?? []
        return try raw.map { object in
            let messages = try (object["messages"] as? [[String: Any]] ?? []).map { message in
                let rekey = message["rekey"] as? Bool == true
                return Message(
                    initiatorSends: message["direction"] as? String == "i->r", rekey: rekey,
                    payload: rekey ? [] : try Hex.decode(message["payload"] as? String ?? "?"),
                    ciphertext: rekey ? [] : try Hex.decode(message["ciphertext"] as? String ?? "?"))
            }
            guard messages.count > 3 else { throw VectorError("noise-xx.json: vector without messages") }
            let libp2p = (object["libp2p"] as? [String: Any])?.compactMapValues { $0 as? String } ?? [:]
            return (try TestVectors.array("noise-xx.json").first { $0["name"] == object["name"] as? String }!, messages, libp2p)
        }
    }

    @Test("handshake and transport messages match byte for byte")
    func transcripts() throws {
        let vectors = try Self.load()
        #expect(vectors.count >= 2)
        for (vector, messages, _) in vectors {
            var initiator = NoiseHandshakeState(
                role: .initiator, localStatic: try X25519.PrivateKey(rawRepresentation: try vector.hex("init_static")),
                ephemeral: try X25519.PrivateKey(rawRepresentation: try vector.hex("init_ephemeral")))
            var responder = NoiseHandshakeState(
                role: .responder, localStatic: try X25519.PrivateKey(rawRepresentation: try vector.hex("resp_static")),
                ephemeral: try X25519.PrivateKey(rawRepresentation: try vector.hex("resp_ephemeral")))
            for message in messages.prefix(3) {
                let (sender, receiverIsResponder) = message.initiatorSends ? (initiator, true) : (responder, false)
                var writer = sender
                let bytes = try writer.writeMessage(payload: message.payload)
                #expect(bytes == message.ciphertext, "\(vector) handshake message")
                if receiverIsResponder {
                    initiator = writer
                    #expect(try responder.readMessage(bytes) == message.payload)
                } else {
                    responder = writer
                    #expect(try initiator.readMessage(bytes) == message.payload)
                }
            }
            #expect(initiator.handshakeHash == (try vector.hex("handshake_hash")))
            #expect(responder.handshakeHash == initiator.handshakeHash)
            var (iSend, iReceive) = initiator.split()
            var (rSend, rReceive) = responder.split()
            #expect(messages.contains { $0.rekey }, "the vectors exercise Rekey()")
            for message in messages.dropFirst(3) {
                if message.rekey {
                    if message.initiatorSends {
                        iSend.rekey()
                        rReceive.rekey()
                    } else {
                        rSend.rekey()
                        iReceive.rekey()
                    }
                    continue
                }
                var wire = ByteBuffer()
                if message.initiatorSends {
                    try iSend.sealFrame(ByteBuffer(bytes: message.payload), into: &wire)
                } else {
                    try rSend.sealFrame(ByteBuffer(bytes: message.payload), into: &wire)
                }
                #expect(wire.readInteger(as: UInt16.self) == UInt16(message.ciphertext.count))
                #expect(Array(wire.readableBytesView) == message.ciphertext, "\(vector) transport message")
                let opened = message.initiatorSends ? try rReceive.openFrame(wire) : try iReceive.openFrame(wire)
                #expect(Array(opened.readableBytesView) == message.payload)
            }
        }
    }

    @Test("our libp2p handshake payload is the one py-libp2p's encoder produced, and verifies")
    func libp2pPayload() throws {
        for (vector, messages, libp2p) in try Self.load() where !libp2p.isEmpty {
            let initiatorSeed = try Hex.decode(try #require(libp2p["init_ed25519_seed"]))
            let responderSeed = try Hex.decode(try #require(libp2p["resp_ed25519_seed"]))
            var initiator = NoiseHandshake(
                role: .initiator, identity: try Ed25519.PrivateKey(seed: initiatorSeed),
                staticKey: try X25519.PrivateKey(rawRepresentation: try vector.hex("init_static")),
                ephemeral: try X25519.PrivateKey(rawRepresentation: try vector.hex("init_ephemeral")))
            var responder = NoiseHandshake(
                role: .responder, identity: try Ed25519.PrivateKey(seed: responderSeed),
                staticKey: try X25519.PrivateKey(rawRepresentation: try vector.hex("resp_static")),
                ephemeral: try X25519.PrivateKey(rawRepresentation: try vector.hex("resp_ephemeral")))
            let first = try initiator.writeMessage()
            #expect(first == messages[0].ciphertext)
            try responder.readMessage(first)
            let second = try responder.writeMessage()
            #expect(second == messages[1].ciphertext)
            try initiator.readMessage(second)
            let third = try initiator.writeMessage()
            #expect(third == messages[2].ciphertext)
            try responder.readMessage(third)
            let i = initiator.finish()
            let r = responder.finish()
            #expect(i.remotePeer == PeerID(publicKey: try Ed25519.PrivateKey(seed: responderSeed).publicKey))
            #expect(r.remotePeer == PeerID(publicKey: try Ed25519.PrivateKey(seed: initiatorSeed).publicKey))
        }
    }
}
