import AgentTesting
import Identity
import Multiformats
import NIOCore
import Testing

@testable import Network

/// libp2p mDNS messages (spec/network.md, "mDNS"): our query and response round-trip, a response
/// written with name compression (as other implementations write them) parses, and hostile input
/// (truncations, loops, huge counts, random bytes, other services, bad addresses) is refused or
/// skipped, never a crash or an unbounded allocation.
@Suite("mDNS: DNS messages and peer announcements, hostile input")
struct MDNSMessageTests {
    static let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
    static let addresses = [
        try! Multiaddr("/ip4/10.7.0.2/tcp/4001"), try! Multiaddr("/ip4/10.7.0.2/udp/4001/quic-v1"),
    ]

    @Test("our query and response round-trip; the response announces the peer with its addresses (/p2p appended)")
    func roundTrip() throws {
        let query = try DNSMessage.parse(MDNSDiscovery.query().serialized())
        #expect(MDNSDiscovery.isQuery(query))
        #expect(MDNSDiscovery.peers(in: query).isEmpty)
        let response = MDNSDiscovery.response(peerName: "abcdef", peer: Self.peer, addresses: Self.addresses)
        let parsed = try DNSMessage.parse(response.serialized())
        #expect(parsed == response)
        #expect(!MDNSDiscovery.isQuery(parsed))
        let peers = MDNSDiscovery.peers(in: parsed)
        #expect(peers == [Self.peer: Self.addresses.map { $0.appending(.p2p(Self.peer.multihash)) }])
    }

    /// A response with compressed names: the PTR's target and the TXT's owner point back into the
    /// answer's name (RFC 1035 §4.1.4), as mDNS responders write them.
    static func compressedResponse(peerName: String = "xyz", dnsaddr: String) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 1]
        let serviceAt = bytes.count  // 12
        for label in ["_p2p", "_udp", "local"] { bytes += [UInt8(label.utf8.count)] + Array(label.utf8) }
        bytes += [0, 0, 12, 0, 1, 0, 0, 0, 120]
        let target: [UInt8] = [UInt8(peerName.utf8.count)] + Array(peerName.utf8) + [0xc0, UInt8(serviceAt)]
        bytes += [0, UInt8(target.count)]
        let targetAt = bytes.count
        bytes += target
        // TXT owner: a pointer to the PTR's target.
        bytes += [0xc0, UInt8(targetAt), 0, 16, 0x80, 1, 0, 0, 0, 120]
        let text = Array("dnsaddr=\(dnsaddr)".utf8)
        bytes += [0, UInt8(text.count + 1), UInt8(text.count)] + text
        return bytes
    }

    @Test("a response with compressed names parses and announces its peer")
    func compressed() throws {
        let address = "/ip4/10.7.0.3/tcp/4001/p2p/\(Self.peer)"
        let message = try DNSMessage.parse(Self.compressedResponse(dnsaddr: address))
        #expect(message.answers.first?.data == .ptr(DNSName("xyz._p2p._udp.local")))
        #expect(MDNSDiscovery.peers(in: message) == [Self.peer: [try Multiaddr(address)]])
    }

    @Test("every truncation of a valid response is refused with an error")
    func truncations() throws {
        let bytes = Self.compressedResponse(dnsaddr: "/ip4/10.7.0.3/tcp/4001/p2p/\(Self.peer)")
        for length in 0..<bytes.count {
            #expect(throws: MDNSError.self) { try DNSMessage.parse(Array(bytes[..<length])) }
        }
    }

    @Test("compression loops, forward pointers, overlong names, counts the message cannot hold and oversized datagrams are refused")
    func malformed() {
        // A pointer to itself, and one pointing forward.
        let loop: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1]
        #expect(throws: MDNSError.self) { try DNSMessage.parse(loop) }
        let forward: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0, 0, 12, 0, 1]
        #expect(throws: MDNSError.self) { try DNSMessage.parse(forward) }
        // A name of 5 × 63-byte labels (over 255 bytes).
        var long: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        for _ in 0..<5 { long += [63] + [UInt8](repeating: 0x61, count: 63) }
        long += [0, 0, 12, 0, 1]
        #expect(throws: MDNSError.self) { try DNSMessage.parse(long) }
        // 65,535 answers claimed in a 12-byte message: refused before anything is reserved.
        #expect(throws: MDNSError.self) { try DNSMessage.parse([0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]) }
        // A reserved label type (0b01).
        #expect(throws: MDNSError.self) { try DNSMessage.parse([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0, 0, 12, 0, 1]) }
        // Over the mDNS maximum size.
        #expect(throws: MDNSError.self) { try DNSMessage.parse([UInt8](repeating: 0, count: 9001)) }
        // A TXT string that overruns its record.
        let bytes = Self.compressedResponse(dnsaddr: "/ip4/10.7.0.3/tcp/4001/p2p/\(Self.peer)")
        var overrun = bytes
        let stringLength = bytes.count - Array("dnsaddr=/ip4/10.7.0.3/tcp/4001/p2p/\(Self.peer)".utf8).count - 1
        overrun[stringLength] = 255
        #expect(throws: MDNSError.self) { try DNSMessage.parse(overrun) }
    }

    @Test("addresses without /p2p, unparseable ones, other services' and other instances' records, queries: skipped; at most 16 peers per message")
    func skipped() throws {
        #expect(MDNSDiscovery.peers(in: try DNSMessage.parse(Self.compressedResponse(dnsaddr: "/ip4/10.7.0.3/tcp/4001"))).isEmpty)
        #expect(MDNSDiscovery.peers(in: try DNSMessage.parse(Self.compressedResponse(dnsaddr: "not a multiaddr"))).isEmpty)
        let other = DNSMessage(
            isResponse: true,
            answers: [.init(name: DNSName("_http._tcp.local"), ttl: 120, data: .ptr(DNSName("x._http._tcp.local")))],
            additionals: [
                .init(name: DNSName("x._http._tcp.local"), ttl: 120, data: .txt([Array("dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/\(Self.peer)".utf8)])),
                // An instance no PTR names.
                .init(name: DNSName("y._p2p._udp.local"), ttl: 120, data: .txt([Array("dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/\(Self.peer)".utf8)])),
            ])
        #expect(MDNSDiscovery.peers(in: try DNSMessage.parse(other.serialized())).isEmpty)
        var query = MDNSDiscovery.response(peerName: "q", peer: Self.peer, addresses: Self.addresses)
        query.isResponse = false
        #expect(MDNSDiscovery.peers(in: query).isEmpty)
        // 20 peers in one response: 16 are taken.
        var crowded = DNSMessage(isResponse: true)
        for index in 0..<20 {
            let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
            let instance = DNSName(labels: ["p\(index)"] + MDNSDiscovery.serviceName.labels)
            crowded.answers.append(.init(name: MDNSDiscovery.serviceName, ttl: 120, data: .ptr(instance)))
            crowded.additionals.append(
                .init(name: instance, ttl: 120, data: .txt([Array("dnsaddr=/ip4/10.0.0.\(index)/tcp/1/p2p/\(peer)".utf8)])))
        }
        #expect(MDNSDiscovery.peers(in: try DNSMessage.parse(crowded.serialized())).count == 16)
    }

    @Test("seeded random datagrams and random single-byte corruptions of a valid response never crash")
    func random() {
        var rng = SeededGenerator(seed: 0x6d_646e_73)
        var refused = 0
        for index in 0..<5000 {
            let size = Int(rng.next() % 600)
            var bytes = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if index % 2 == 0, size > 12 {
                bytes[4...11] = [0, 1, 0, 1, 0, 0, 0, 1]  // plausible counts
            }
            do { _ = MDNSDiscovery.peers(in: try DNSMessage.parse(bytes)) } catch { refused += 1 }
        }
        #expect(refused > 4000)
        let valid = Self.compressedResponse(dnsaddr: "/ip4/10.7.0.3/tcp/4001/p2p/\(Self.peer)")
        for _ in 0..<3000 {
            var bytes = valid
            bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            if let message = try? DNSMessage.parse(bytes) { _ = MDNSDiscovery.peers(in: message) }
        }
    }

    /// A getifaddrs entry as NIO lists it.
    static func device(_ name: String, _ index: Int, _ ip: String, _ netmask: String, multicast: Bool = true)
        throws -> NIONetworkDevice
    {
        let address = try SocketAddress(ipAddress: ip, port: 0)
        return NIONetworkDevice(
            name: name, address: address, netmask: try SocketAddress(ipAddress: netmask, port: 0),
            broadcastAddress: nil, pointToPointDestinationAddress: address, multicastSupported: multicast,
            interfaceIndex: index)
    }

    @Test("links: one IPv4 link per address, one IPv6 link per interface with its unique-local and global prefixes, never loopback or link-local only")
    func links() throws {
        let links = MDNSService.links(of: [
            try Self.device("lo", 1, "127.0.0.1", "255.0.0.0"),
            try Self.device("lo", 1, "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            try Self.device("eth0", 2, "192.168.1.5", "255.255.255.0"),
            try Self.device("eth0", 2, "fe80::1", "ffff:ffff:ffff:ffff::"),
            try Self.device("eth0", 2, "fd00:1:2:3::5", "ffff:ffff:ffff:ffff::"),
            try Self.device("eth0", 2, "2001:db8:1:2::5", "ffff:ffff:ffff:ffff::"),
            // Link-local IPv6 only: nothing to announce or accept.
            try Self.device("wlan0", 3, "fe80::2", "ffff:ffff:ffff:ffff::"),
            // No multicast: no IPv6 link (and its IPv4 address still makes one).
            try Self.device("tun0", 4, "10.8.0.1", "255.255.255.255", multicast: false),
            try Self.device("tun0", 4, "fd99::1", "ffff:ffff:ffff:ffff::", multicast: false),
        ])
        #expect(links.map(\.name) == ["eth0", "tun0", "eth0 ipv6"])
        let six = try #require(links.last)
        #expect(six.family == .v6 && six.device.interfaceIndex == 2)
        #expect(six.interfaces.map { "\($0.address)/\($0.prefixLength)" } == ["fd00:1:2:3::5/64", "2001:db8:1:2::5/64"])
    }

    @Test("an IPv6 link accepts addresses inside its prefixes only: not link-local, not other prefixes, not IPv4")
    func linkContains() throws {
        let links = MDNSService.links(of: [
            try Self.device("eth0", 2, "192.168.1.5", "255.255.255.0"),
            try Self.device("eth0", 2, "fd00:1:2:3::5", "ffff:ffff:ffff:ffff::"),
        ])
        let (four, six) = (links[0], links[1])
        for (address, onSix, onFour) in [
            ("fd00:1:2:3::9", true, false), ("fd00:1:2:3:ffff:ffff:ffff:ffff", true, false),
            ("fd00:1:2:4::9", false, false), ("fe80::9", false, false), ("::1", false, false),
            ("2001:db8::1", false, false), ("192.168.1.77", false, true), ("192.168.2.77", false, false),
            ("::ffff:192.168.1.77", false, true),
        ] {
            let ip = try IPAddress(address)
            #expect(six.contains(ip) == onSix, "\(address) on the IPv6 link")
            #expect(four.contains(ip) == onFour, "\(address) on the IPv4 link")
        }
    }

    @Test("the IPv6 group is ff02::fb:5353 scoped to the interface's index")
    func group6() throws {
        guard case .v6(let group) = MDNSService.group6(interfaceIndex: 7, port: 5353) else {
            Issue.record("not IPv6")
            return
        }
        #expect(group.address.sin6_scope_id == 7)
        #expect(UInt16(bigEndian: group.address.sin6_port) == 5353)
        #expect(IPAddress(MDNSService.group6(interfaceIndex: 7, port: 5353)) == (try IPAddress("ff02::fb")))
    }
}
