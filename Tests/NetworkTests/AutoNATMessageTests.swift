import AgentTesting
import Foundation
import Identity
import Multiformats
import NIOCore
import SwiftProtobuf
import Testing

@testable import Network

/// AutoNAT v1 wire messages: round trips, the spec's bytes, and hostile input that must give a
/// clear error, never a crash.
@Suite("AutoNAT messages: encoding and hostile input")
struct AutoNATMessageTests {
    static let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)

    @Test("DIAL and DIAL_RESPONSE round trip; OK's status is written although it is 0")
    func roundTrip() throws {
        let request = AutoNATDialRequest(
            peer: Self.peer,
            addresses: [try Multiaddr("/ip4/203.0.113.7/tcp/4001"), try Multiaddr("/ip6/2001:db8::1/tcp/4001")])
        #expect(try AutoNATMessage.decodeRequest(AutoNATMessage.encode(request)) == request)
        for status in AutoNATStatus.allCases {
            let response = AutoNATDialResponse(
                status: status, statusText: status == .ok ? "" : "why",
                address: status == .ok ? try Multiaddr("/ip4/203.0.113.7/tcp/4001") : nil)
            #expect(try AutoNATMessage.decodeResponse(AutoNATMessage.encode(response)) == response)
        }
        // type=DIAL_RESPONSE (08 01), dialResponse (1a 02) { status=OK (08 00) }.
        let ok = AutoNATMessage.encode(AutoNATDialResponse(status: .ok))
        #expect(Array(ok.readableBytesView) == [0x08, 0x01, 0x1a, 0x02, 0x08, 0x00])
        // A DIAL starts with type=DIAL written explicitly (08 00), as go and py send it.
        #expect(Array(AutoNATMessage.encode(request).readableBytesView.prefix(2)) == [0x08, 0x00])
    }

    @Test(
        "malformed requests are errors with a reason: no type, another type, no peer, a bad peer id, not protobuf, oversized"
    )
    func malformedRequests() throws {
        func bytes(_ build: (inout Agentd_Autonat_Message) -> Void) throws -> ByteBuffer {
            var message = Agentd_Autonat_Message()
            build(&message)
            return ByteBuffer(bytes: try message.serializedBytes() as [UInt8])
        }
        let cases: [(String, ByteBuffer)] = [
            ("without a type", try bytes { $0.dial.peer.id = Data(Self.peer.bytes) }),
            (
                "expected an AutoNAT DIAL",
                try bytes {
                    $0.type = .dialResponse; $0.dialResponse.status = .ok
                }
            ),
            ("without dial.peer.id", try bytes { $0.type = .dial }),
            (
                "without dial.peer.id",
                try bytes {
                    $0.type = .dial; $0.dial.peer.addrs = [Data([4, 1, 2, 3, 4])]
                }
            ),
            (
                "invalid peer id",
                try bytes {
                    $0.type = .dial; $0.dial.peer.id = Data([0x12, 0x20, 1])
                }
            ),
            ("not a valid protobuf", ByteBuffer(bytes: [0x08, 0x00, 0x12, 0x7f, 0x01])),
            ("over the 4096-byte limit", ByteBuffer(repeating: 0, count: 4097)),
        ]
        for (reason, input) in cases {
            #expect {
                try AutoNATMessage.decodeRequest(input)
            } throws: { error in
                (error as? NetworkError)?.kind == .protocolViolation && "\(error)".contains(reason)
            }
        }
        // Addresses that do not parse are left out; the rest of the request stands.
        let mixed = try bytes {
            $0.type = .dial
            $0.dial.peer.id = Data(Self.peer.bytes)
            $0.dial.peer.addrs = [Data([0xff, 0xff]), Data(try! Multiaddr("/ip4/203.0.113.7/tcp/1").bytes)]
        }
        #expect(try AutoNATMessage.decodeRequest(mixed).addresses == [try Multiaddr("/ip4/203.0.113.7/tcp/1")])
    }

    @Test("malformed responses: an unknown status, no status, an OK whose addr is garbage")
    func malformedResponses() throws {
        // status 7 is no ResponseStatus: proto2 keeps it as an unknown field, `status` stays unset.
        let unknownStatus = ByteBuffer(bytes: [0x08, 0x01, 0x1a, 0x02, 0x08, 0x07])
        let noStatus = ByteBuffer(bytes: [0x08, 0x01, 0x1a, 0x00])
        let badAddress = ByteBuffer(bytes: [0x08, 0x01, 0x1a, 0x06, 0x08, 0x00, 0x1a, 0x02, 0xff, 0xff])
        for input in [unknownStatus, noStatus, badAddress, ByteBuffer(bytes: [0x08, 0x00])] {
            #expect(throws: NetworkError.self) { try AutoNATMessage.decodeResponse(input) }
        }
    }

    @Test("20,000 seeded random and truncated messages: decoded or refused, never a trap")
    func fuzz() throws {
        var random = SeededGenerator(seed: 0xA070_4A7)
        let valid = Array(
            AutoNATMessage.encode(
                AutoNATDialRequest(peer: Self.peer, addresses: [try Multiaddr("/ip4/203.0.113.7/tcp/4001")])
            ).readableBytesView)
        var decoded = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0: bytes = Array(valid.prefix(Int.random(in: 0...valid.count, using: &random)))
            case 1:
                bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            default:
                bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in
                    UInt8.random(in: 0...255, using: &random)
                }
            }
            if (try? AutoNATMessage.decodeRequest(ByteBuffer(bytes: bytes))) != nil { decoded += 1 }
            _ = try? AutoNATMessage.decodeResponse(ByteBuffer(bytes: bytes))
        }
        #expect(decoded > 0, "some mutations still decode (the seed must exercise both paths)")
    }
}
