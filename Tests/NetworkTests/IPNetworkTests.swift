import AgentTesting
import Multiformats
import NIOCore
import Testing

@testable import Network

@Suite("IPNetwork: CIDR text, membership and subnet keys")
struct IPNetworkTests {
    @Test(
        "valid CIDR text parses to its canonical form",
        arguments: [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("198.18.0.0/15", "198.18.0.0/15"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("fe80::/10", "fe80::/10"),
            // An IPv4-mapped IPv6 address is the IPv4 address it maps.
            ("::ffff:192.0.2.7", "192.0.2.7/32"),
        ])
    func parses(_ text: String, _ canonical: String) throws {
        let network = try IPNetwork(text)
        #expect(network.description == canonical)
        #expect(try IPNetwork(network.description) == network)
    }

    @Test(
        "malformed CIDR text is refused with a message naming it",
        arguments: [
            "", "/", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08",
            "10.0.0.0/8/8", "10.0.0.0 /8", "10.0.0/8", "10.0.0.0.0/8", "010.0.0.0/8", "256.0.0.0/8",
            "2001:db8::/129", "2001:db8::/1000", "2001:db8:::/32", "fe80::1%eth0/64", "::1\u{0}junk",
            "10.0.0.1/8", "2001:db8::1/32", "localhost", "example.com/24",
            String(repeating: "1", count: 100_000),
        ])
    func refuses(_ text: String) {
        #expect {
            try IPNetwork(text)
        } throws: { error in
            guard let error = error as? NetworkError, error.kind == .invalidAddress else { return false }
            // Short enough to log or return over the control API, whatever came in.
            return error.message.count < 200
        }
    }

    @Test("host bits past the prefix are refused with the network that was probably meant")
    func hostBitsHint() {
        #expect {
            try IPNetwork("10.1.2.3/8")
        } throws: { error in
            (error as? NetworkError)?.message.contains("10.0.0.0/8") == true
        }
    }

    @Test("contains: inside, at both edges, outside, and never across families")
    func contains() throws {
        let net = try IPNetwork("198.18.0.0/15")
        #expect(net.contains(try IPAddress("198.18.0.0")))
        #expect(net.contains(try IPAddress("198.19.255.255")))
        #expect(!net.contains(try IPAddress("198.20.0.0")))
        #expect(!net.contains(try IPAddress("198.17.255.255")))
        #expect(try IPNetwork("0.0.0.0/0").contains(try IPAddress("255.255.255.255")))
        #expect(!(try IPNetwork("0.0.0.0/0").contains(try IPAddress("::1"))))
        #expect(!(try IPNetwork("::/0").contains(try IPAddress("127.0.0.1"))))
        let v6 = try IPNetwork("2001:db8:1234::/48")
        #expect(v6.contains(try IPAddress("2001:db8:1234:ffff:ffff:ffff:ffff:ffff")))
        #expect(!v6.contains(try IPAddress("2001:db8:1235::")))
        // Prefixes that split the 64-bit halves and the bytes.
        let odd = try IPNetwork("2001:db8:0:0:8000::/65")
        #expect(odd.contains(try IPAddress("2001:db8::ffff:ffff:ffff:ffff")))
        #expect(!odd.contains(try IPAddress("2001:db8::7fff:ffff:ffff:ffff")))
        #expect(try IPNetwork("10.0.0.1").contains(try IPAddress("10.0.0.1")))
        #expect(!(try IPNetwork("10.0.0.1").contains(try IPAddress("10.0.0.2"))))
    }

    @Test("subnet keys: IPv4 /32 and /24, IPv6 /64 and /48")
    func subnetKeys() throws {
        let a = try IPAddress("127.0.0.2")
        let b = try IPAddress("127.0.0.3")
        #expect(IPNetwork.subnetPrefixLengths(.v4) == (32, 24))
        #expect(IPNetwork.subnetPrefixLengths(.v6) == (64, 48))
        #expect(IPNetwork(containing: a, prefixLength: 32) != IPNetwork(containing: b, prefixLength: 32))
        #expect(IPNetwork(containing: a, prefixLength: 24) == IPNetwork(containing: b, prefixLength: 24))
        #expect(IPNetwork(containing: a, prefixLength: 24).description == "127.0.0.0/24")

        let c = try IPAddress("2001:db8:1:2:aaaa::1")
        let d = try IPAddress("2001:db8:1:3::1")
        #expect(IPNetwork(containing: c, prefixLength: 64).description == "2001:db8:1:2::/64")
        #expect(IPNetwork(containing: c, prefixLength: 64) != IPNetwork(containing: d, prefixLength: 64))
        #expect(IPNetwork(containing: c, prefixLength: 48) == IPNetwork(containing: d, prefixLength: 48))
    }

    @Test("addresses from sockets and multiaddrs, IPv4-mapped IPv6 as IPv4")
    func conversions() throws {
        let v4 = try SocketAddress(ipAddress: "127.0.0.9", port: 4001)
        #expect(IPAddress(v4) == (try IPAddress("127.0.0.9")))
        let v6 = try SocketAddress(ipAddress: "2001:db8::5", port: 4001)
        #expect(IPAddress(v6)?.description == "2001:db8::5")
        // What a dual-stack [::] listener reports for an IPv4 peer.
        let mapped = try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 4001)
        #expect(IPAddress(mapped) == (try IPAddress("10.1.2.3")))
        #expect(IPAddress(mapped)?.family == .v4)
        #expect(IPAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x.sock")) == nil)

        #expect(IPAddress(try Multiaddr("/ip4/192.0.2.1/tcp/1")) == (try IPAddress("192.0.2.1")))
        #expect(IPAddress(try Multiaddr("/ip6/::1/tcp/1")) == (try IPAddress("::1")))
        #expect(IPAddress(try Multiaddr("/dns4/example.com/tcp/1")) == nil)
    }

    @Test("20,000 seeded random and mutated texts: each parses to a value that round-trips, or throws")
    func hostileInput() {
        var generator = SeededGenerator(seed: 10)
        let seeds = ["10.0.0.0/8", "2001:db8::/32", "::ffff:1.2.3.4", "0.0.0.0/0", "fe80::1/64", "127.0.0.1"]
        let alphabet = Array("0123456789abcdefABCDEF:./%-+ \u{0}ü".utf8)
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = Array(seeds[round % seeds.count].utf8)
                for _ in 0..<Int.random(in: 1...4, using: &generator) { bytes = generator.mutate(bytes) }
            } else {
                bytes = (0..<Int.random(in: 0...48, using: &generator)).map { _ in
                    alphabet[Int.random(in: 0..<alphabet.count, using: &generator)]
                }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                let network = try IPNetwork(text)
                #expect(try IPNetwork(network.description) == network, "round \(round): \(bytes)")
                #expect(network.contains(network.address))
            } catch {
                #expect(error.kind == .invalidAddress)
            }
        }
    }
}
