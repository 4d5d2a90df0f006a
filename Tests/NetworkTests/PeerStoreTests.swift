import Foundation
import Multiformats
import NIOCore
import Testing

@testable import Network
@testable import Session

/// The peer store is bounded (issue #10, finding 2): it keeps connected peers only, and each entry
/// is capped when identify is decoded.
@Suite("Peer store: bounded by the connected set, identify decoding capped", .serialized)
struct PeerStoreTests {
    /// One identify message of ~64 KiB: `count` distinct minimal `/ip4` addresses (7 bytes each
    /// on the wire) and no public key (so one message serves every fresh peer id).
    static func floodMessage(addresses count: Int) throws -> ByteBuffer {
        var message = Agentd_Identify_Identify()
        message.protocolVersion = Identify.protocolVersion
        message.agentVersion = "flood/1.0"
        message.listenAddrs = (0..<count).map { (index: Int) -> Data in
            let high = UInt8(truncatingIfNeeded: index >> 16)
            let middle = UInt8(truncatingIfNeeded: index >> 8)
            let low = UInt8(truncatingIfNeeded: index)
            return Data([0x04, 10, high, middle, low])
        }
        message.protocols = [Ping.protocolID]
        let bytes: [UInt8] = try message.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeUVarint(UInt64(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }

    /// Resident set size of this process.
    static func residentBytes() throws -> Int {
        let statm = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8)
        let fields = statm.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test(
        "1,000 identify floods from fresh peer ids leave the peer store no larger than the connected set",
        .timeLimit(.minutes(10)))
    func identifyFlood() async throws {
        let message = try Self.floodMessage(addresses: 9_300)
        #expect(message.readableBytes <= Identify.maximumResponseLength)
        try await TestNetwork.run { net in
            var residentAfterWarmUp = 0
            for cycle in 0..<1_000 {
                let peer = try await RawYamuxPeer.connect(to: net)
                // Answer the node's identify with the flood, and wait for its FIN on that stream:
                // the node has stored what it keeps of the answer by then.
                let id = try await peer.acceptStream(proposing: Identify.protocolID)
                try await peer.send([.data(id, message, flags: .fin)])
                let fin = try await peer.readFrames {
                    $0.streamID == id && ($0.flags.contains(.fin) || $0.flags.contains(.rst))
                }
                try #require(
                    fin?.flags.contains(.fin) == true, "cycle \(cycle): the node did not take the identify answer")
                let stored = try #require(net.victim.peerInfo(peer.peerID), "cycle \(cycle)")
                try #require(stored.listenAddresses.count == Identify.maximumListenAddresses)
                let occupancy = net.victim.core.peerStoreOccupancy
                try #require(occupancy.stored <= occupancy.connected, "cycle \(cycle)")

                // Disconnect, and wait for the node to see it.
                let onVictim = try #require(net.victim.connection(to: peer.peerID))
                try await peer.raw.channel.close()
                try await onVictim.closeFuture.get()
                try #require(net.victim.peerInfo(peer.peerID) == nil, "cycle \(cycle)")
                try #require(net.victim.core.peerStoreOccupancy.stored == 0, "cycle \(cycle)")
                if cycle == 99 { residentAfterWarmUp = try Self.residentBytes() }
            }
            // For the record only: other suites share this process (and run alongside), so its RSS
            // is no measure of the store; the bound above is. Run alone, 900 cycles add ~7 MiB
            // (the victim's log recorder keeps every line); unbounded, 200 cycles took 133 MiB.
            let resident = try Self.residentBytes()
            print(
                "identify flood: process RSS \(residentAfterWarmUp >> 20) MiB after 100 cycles, \(resident >> 20) MiB after 1000"
            )
            await net.expectGoodPeerServed()
        }
    }

    /// A 243-byte DNS name (four 60-byte labels).
    static let longName = Array(repeating: String(repeating: "a", count: 60), count: 4).joined(separator: ".")
    static let somePeer = "12D3KooWFwpP6xed2FhaTdBwF34z65Q4TA3NUf5eHbuqnwweB65k"

    @Test("identify decoding keeps at most the capped number of addresses and protocols, each of bounded length")
    func decodingCaps() throws {
        var message = Agentd_Identify_Identify()
        message.listenAddrs =
            [Data(repeating: 0xff, count: 3)]  // not a multiaddr: left out
            + [Data(try Multiaddr("/dns4/\(Self.longName)/tcp/1/p2p/\(Self.somePeer)").bytes)]  // too long
            + (0..<9_300).map { (index: Int) -> Data in
                Data([0x04, 10, 0, UInt8(truncatingIfNeeded: index >> 8), UInt8(truncatingIfNeeded: index)])
            }
        message.protocols =
            [String(repeating: "p", count: Identify.maximumProtocolLength + 1), "", "/dup/1.0.0", "/dup/1.0.0"]
            + (0..<1_000).map { "/flood/\($0)" }
        message.agentVersion = "e" + String(repeating: "\u{301}", count: 60_000)  // one Character
        message.protocolVersion = String(repeating: "v", count: 10_000)
        message.observedAddr = Data(repeating: 0x04, count: 4_000)

        let info = IdentifyInfo(message)
        #expect(info.listenAddresses.count == Identify.maximumListenAddresses)
        #expect(info.listenAddresses.first == (try Multiaddr("/ip4/10.0.0.0")))
        #expect(info.protocols.count == Identify.maximumProtocols)
        #expect(info.protocols.first == "/dup/1.0.0")
        #expect(info.protocols.dropFirst().first == "/flood/0")
        #expect(info.agentVersion.unicodeScalars.count == Identify.maximumVersionLength)
        #expect(info.protocolVersion.unicodeScalars.count == Identify.maximumVersionLength)
        #expect(info.observedAddress == nil)

        // An honest py-libp2p-sized identify is kept whole.
        var honest = Agentd_Identify_Identify()
        honest.agentVersion = "py-libp2p/0.8.1"
        honest.listenAddrs = [Data(try Multiaddr("/ip4/127.0.0.1/tcp/4001").bytes)]
        honest.observedAddr = Data(try Multiaddr("/ip4/127.0.0.1/tcp/50000").bytes)
        honest.protocols = [Identify.protocolID, Ping.protocolID, "/ipfs/kad/1.0.0"]
        let kept = IdentifyInfo(honest)
        #expect(kept.listenAddresses == [try Multiaddr("/ip4/127.0.0.1/tcp/4001")])
        #expect(kept.observedAddress == (try Multiaddr("/ip4/127.0.0.1/tcp/50000")))
        #expect(kept.protocols == honest.protocols)
        #expect(kept.agentVersion == "py-libp2p/0.8.1")
    }
}
