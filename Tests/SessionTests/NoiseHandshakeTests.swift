import AgentTesting
import Foundation
import Identity
import NIOCore
import SwiftProtobuf
import Testing

@testable import Session

@Suite("Noise XX with the libp2p handshake payload")
struct NoiseHandshakeTests {
    struct Side {
        let identity = Ed25519.PrivateKey()
        let staticKey = X25519.PrivateKey()
        var peerID: PeerID { PeerID(publicKey: identity.publicKey) }
    }

    /// Runs a full handshake in memory and returns both results.
    static func handshake(
        initiator: Side, responder: Side, expected: PeerID? = nil
    ) throws(SessionError) -> (NoiseHandshake.Result, NoiseHandshake.Result) {
        var i = NoiseHandshake(
            role: .initiator, identity: initiator.identity, staticKey: initiator.staticKey,
            expectedPeer: expected ?? responder.peerID, muxers: ["/yamux/1.0.0"])
        var r = NoiseHandshake(role: .responder, identity: responder.identity, staticKey: responder.staticKey)
        try r.readMessage(try i.writeMessage())
        try i.readMessage(try r.writeMessage())
        try r.readMessage(try i.writeMessage())
        #expect(i.isComplete && r.isComplete)
        return (i.finish(), r.finish())
    }

    @Test("both sides authenticate each other and agree on keys")
    func roundTrip() throws {
        let alice = Side()
        let bob = Side()
        var (a, b) = try Self.handshake(initiator: alice, responder: bob)
        #expect(a.remotePeer == bob.peerID)
        #expect(b.remotePeer == alice.peerID)
        #expect(b.remoteMuxers == ["/yamux/1.0.0"])
        #expect(a.handshakeHash == b.handshakeHash)
        for size in [0, 1, 100, NoiseCipherState.maximumPlaintextLength] {
            var wire = ByteBuffer()
            let plaintext = ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0) })
            try a.send.sealFrame(plaintext, into: &wire)
            #expect(wire.readableBytes == size + 2 + 16)
            #expect(wire.readInteger(as: UInt16.self) == UInt16(size + 16))
            #expect(try b.receive.openFrame(wire) == plaintext)
            var back = ByteBuffer()
            try b.send.sealFrame(plaintext, into: &back)
            back.moveReaderIndex(forwardBy: 2)
            #expect(try a.receive.openFrame(back) == plaintext)
        }
    }

    @Test("the dialler aborts when the responder is not the peer it dialled, naming both ids")
    func wrongPeer() {
        let alice = Side()
        let bob = Side()
        let mallory = Side()
        do {
            _ = try Self.handshake(initiator: alice, responder: mallory, expected: bob.peerID)
            Issue.record("handshake with the wrong peer succeeded")
        } catch {
            #expect(error.kind == .peerIDMismatch)
            #expect(error.message.contains(bob.peerID.description))
            #expect(error.message.contains(mallory.peerID.description))
        }
    }

    /// A responder that sends a payload signed over another static key (or with another identity).
    static func maliciousResponderMessage(
        initiatorMessage: [UInt8], identity: Ed25519.PrivateKey, staticKey: X25519.PrivateKey, signedStatic: [UInt8],
        signer: Ed25519.PrivateKey
    ) throws -> [UInt8] {
        var state = NoiseHandshakeState(role: .responder, localStatic: staticKey)
        _ = try state.readMessage(initiatorMessage)
        var payload = Agentd_Noise_NoiseHandshakePayload()
        payload.identityKey = Data(LibP2PPublicKey(identity.publicKey).protobuf)
        payload.identitySig = Data(signer.signature(for: NoiseHandshake.signaturePrefix + signedStatic))
        return try state.writeMessage(payload: try payload.serializedBytes())
    }

    @Test("a payload signature over another static key is refused")
    func staticKeyNotBound() throws {
        let alice = Side()
        let bob = Side()
        var i = NoiseHandshake(role: .initiator, identity: alice.identity, staticKey: alice.staticKey)
        let first = try i.writeMessage()
        let message = try Self.maliciousResponderMessage(
            initiatorMessage: first, identity: bob.identity, staticKey: bob.staticKey,
            signedStatic: X25519.PrivateKey().publicKey.rawRepresentation, signer: bob.identity)
        #expect(throws: SessionError.self) { try i.readMessage(message) }
        do { try i.readMessage(message) } catch { #expect(error.kind == .handshakeFailed || error.kind == .decryptionFailed) }
    }

    @Test("an identity key whose owner did not sign is refused")
    func wrongSigner() throws {
        let alice = Side()
        let bob = Side()
        var i = NoiseHandshake(role: .initiator, identity: alice.identity, staticKey: alice.staticKey)
        let first = try i.writeMessage()
        let message = try Self.maliciousResponderMessage(
            initiatorMessage: first, identity: bob.identity, staticKey: bob.staticKey,
            signedStatic: bob.staticKey.publicKey.rawRepresentation, signer: Ed25519.PrivateKey())
        do {
            try i.readMessage(message)
            Issue.record("accepted a payload signed by another key")
        } catch {
            #expect(error.kind == .handshakeFailed)
            #expect(error.message.contains("did not sign its Noise static key"))
        }
    }

    @Test("a flipped bit anywhere in message 2 or 3 fails the handshake")
    func tampering() throws {
        let alice = Side()
        let bob = Side()
        for target in [2, 3] {
            var i = NoiseHandshake(role: .initiator, identity: alice.identity, staticKey: alice.staticKey)
            var r = NoiseHandshake(role: .responder, identity: bob.identity, staticKey: bob.staticKey)
            try r.readMessage(try i.writeMessage())
            var second = try r.writeMessage()
            if target == 2 {
                second[second.count / 2] ^= 0x01
                #expect(throws: SessionError.self) { try i.readMessage(second) }
                continue
            }
            try i.readMessage(second)
            var third = try i.writeMessage()
            third[third.count - 1] ^= 0x80
            #expect(throws: SessionError.self) { try r.readMessage(third) }
        }
    }

    @Test("transport: tampered, replayed and reordered messages fail")
    func transportIntegrity() throws {
        var (a, b) = try Self.handshake(initiator: Side(), responder: Side())
        var first = ByteBuffer()
        try a.send.sealFrame(ByteBuffer(string: "one"), into: &first)
        var second = ByteBuffer()
        try a.send.sealFrame(ByteBuffer(string: "two"), into: &second)
        first.moveReaderIndex(forwardBy: 2)
        second.moveReaderIndex(forwardBy: 2)
        // Reordered: the receiver expects nonce 0 and gets the message sealed with nonce 1.
        var receiver = b.receive
        #expect(throws: SessionError.self) { _ = try receiver.openFrame(second) }
        #expect(try b.receive.openFrame(first) == ByteBuffer(string: "one"))
        #expect(throws: SessionError.self) { _ = try b.receive.openFrame(first) }  // replay
        var tampered = ByteBuffer()
        try a.send.sealFrame(ByteBuffer(string: "three"), into: &tampered)
        tampered.moveReaderIndex(forwardBy: 2)
        tampered.setInteger(UInt8(0xff), at: tampered.readerIndex)
        var fresh = b.receive
        _ = try? fresh.openFrame(second)
        #expect(throws: SessionError.self) { _ = try fresh.openFrame(tampered) }
        #expect(throws: SessionError.self) { _ = try b.receive.openFrame(ByteBuffer(bytes: [1, 2, 3])) }
    }

    @Test("random and mutated handshake messages never crash (seed 11, 5000 cases)")
    func hostile() throws {
        var generator = SeededGenerator(seed: 11)
        let alice = Side()
        let bob = Side()
        var i = NoiseHandshake(role: .initiator, identity: alice.identity, staticKey: alice.staticKey)
        var r = NoiseHandshake(role: .responder, identity: bob.identity, staticKey: bob.staticKey)
        let first = try i.writeMessage()
        try r.readMessage(first)
        let second = try r.writeMessage()
        for round in 0..<5000 {
            let input = round % 3 == 0 ? generator.bytes(Int.random(in: 0...300, using: &generator)) : generator.mutate(second)
            var initiator = i
            do {
                try initiator.readMessage(input)
                #expect(input == second, "a mutated message 2 was accepted (round \(round))")
            } catch {
                #expect(!error.message.isEmpty)
            }
            var responder = NoiseHandshake(role: .responder, identity: bob.identity, staticKey: bob.staticKey)
            do {
                try responder.readMessage(generator.mutate(first))
            } catch {
                #expect(error.kind == .protocolViolation || error.kind == .handshakeFailed)
            }
        }
    }
}
