import AgentTesting
import Multiformats
import Testing

@testable import Network

/// spec/network.md, "Addresses": one classification, one dial rule for third-party addresses.
@Suite("address scopes")
struct AddressScopeTests {
    static func address(_ text: String) throws -> Multiaddr { try Multiaddr(text) }

    @Test(
        "classification",
        arguments: [
            ("/ip4/0.0.0.0/tcp/1", AddressScope.unspecified),
            ("/ip6/::/tcp/1", .unspecified),
            ("/ip4/127.0.0.1/tcp/1", .loopback),
            ("/ip4/127.255.255.254/tcp/1", .loopback),
            ("/ip6/::1/tcp/1", .loopback),
            ("/ip6/::ffff:127.0.0.1/tcp/1", .loopback),
            ("/ip4/10.0.0.1/tcp/1", .privateNetwork),
            ("/ip4/172.16.0.1/tcp/1", .privateNetwork),
            ("/ip4/172.31.255.255/tcp/1", .privateNetwork),
            ("/ip4/172.32.0.1/tcp/1", .publicInternet),
            ("/ip4/172.15.255.255/tcp/1", .publicInternet),
            ("/ip4/192.168.1.5/tcp/1", .privateNetwork),
            ("/ip6/::ffff:10.1.2.3/tcp/1", .privateNetwork),
            ("/ip6/::ffff:192.168.0.1/tcp/1", .privateNetwork),
            ("/ip6/fd00::2/tcp/1", .privateNetwork),
            ("/ip6/fc00::1/tcp/1", .privateNetwork),
            ("/ip6/64:ff9b::a00:1/tcp/1", .privateNetwork),  // NAT64 of 10.0.0.1
            ("/ip6/2002:a00:1::1/tcp/1", .privateNetwork),  // 6to4 of 10.0.0.1
            ("/ip6/64:ff9b::808:808/tcp/1", .publicInternet),  // NAT64 of 8.8.8.8
            ("/ip4/100.64.0.1/tcp/1", .sharedAddressSpace),
            ("/ip4/100.127.255.255/tcp/1", .sharedAddressSpace),
            ("/ip4/100.128.0.1/tcp/1", .publicInternet),
            ("/ip4/169.254.1.1/tcp/1", .linkLocal),
            ("/ip6/fe80::1/tcp/1", .linkLocal),
            ("/ip6/febf::1/tcp/1", .linkLocal),
            ("/ip4/0.1.2.3/tcp/1", .reserved),
            ("/ip4/192.0.0.8/tcp/1", .reserved),
            ("/ip4/192.0.2.2/tcp/1", .reserved),
            ("/ip4/198.51.100.1/tcp/1", .reserved),
            ("/ip4/203.0.113.7/tcp/1", .reserved),
            ("/ip4/198.18.0.1/tcp/1", .reserved),
            ("/ip4/198.19.255.255/tcp/1", .reserved),
            ("/ip4/198.20.0.1/tcp/1", .publicInternet),
            ("/ip4/224.0.0.1/tcp/1", .reserved),
            ("/ip4/240.0.0.1/tcp/1", .reserved),
            ("/ip4/255.255.255.255/tcp/1", .reserved),
            ("/ip6/2001:db8::1/tcp/1", .reserved),
            ("/ip6/3fff::1/tcp/1", .reserved),
            ("/ip6/2001:2::1/tcp/1", .reserved),
            ("/ip6/2001::1/tcp/1", .reserved),  // Teredo
            ("/ip6/ff02::1/tcp/1", .reserved),
            ("/ip6/100::1/tcp/1", .reserved),
            ("/ip6/::2/tcp/1", .reserved),
            ("/ip6/::1.2.3.4/tcp/1", .reserved),  // IPv4-compatible, deprecated
            ("/ip4/8.8.8.8/tcp/1", .publicInternet),
            ("/ip4/1.1.1.1", .publicInternet),
            ("/ip6/2606:4700::1111/tcp/1", .publicInternet),
            ("/dns4/example.com/tcp/1", .dns),
            ("/dns/localhost/tcp/1", .dns),
            ("/dns6/ip6-localhost/tcp/1", .dns),
            ("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit", .relayed),
        ])
    func classification(text: String, expected: AddressScope) throws {
        #expect(AddressScope.of(try Self.address(text)) == expected, "\(text)")
    }

    @Test("addresses that start with neither an IP nor a name have no scope and are never dialled")
    func noScope() throws {
        let rule = AddressScopeRule(dialsLoopback: true)
        for text in ["/tcp/1", "/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "/udp/1/quic-v1"] {
            let address = try Self.address(text)
            #expect(AddressScope.of(address) == nil, "\(text)")
            #expect(!rule.permits(address, from: .user), "\(text)")
        }
        #expect(AddressScope.of(Multiaddr([])) == nil)
    }

    @Test(
        "only TCP over a specified IP or a name, or QUIC v1 over a specified IP, with nothing but /p2p after, is dialable",
        arguments: [
            ("/ip4/1.2.3.4/tcp/1", true),
            ("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", true),
            ("/dns4/a.example/tcp/443", true), ("/ip6/::1/tcp/1", true),
            ("/ip4/0.0.0.0/tcp/1", false), ("/ip6/::/tcp/1", false), ("/ip6/::ffff:0.0.0.0/tcp/1", false),
            ("/ip4/1.2.3.4", false), ("/ip4/1.2.3.4/udp/1/quic-v1", true), ("/ip6/::1/udp/1/quic-v1", true),
            ("/ip4/1.2.3.4/udp/1/quic-v1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", true),
            ("/ip4/0.0.0.0/udp/1/quic-v1", false), ("/dns4/a.example/udp/1/quic-v1", false), ("/ip4/1.2.3.4/udp/1", false),
            ("/ip4/1.2.3.4/udp/1/quic-v1/tcp/2", false), ("/ip4/1.2.3.4/tcp/1/tcp/2", false),
            ("/tcp/1", false), ("/ip4/1.2.3.4/tcp/1/p2p-circuit", false),
        ])
    func dialableShape(text: String, dialable: Bool) throws {
        #expect(AddressScopeRule.isDialable(try Self.address(text)) == dialable, "\(text)")
    }

    @Test("malformed multiaddrs are refused by the parser; seeded random bytes never crash classification or the rule")
    func hostileInput() throws {
        for text in [
            "/ip4/10.0.0.256/tcp/1", "/ip4/10.0.0/tcp/1", "/ip6/fe80::1%eth0/tcp/1", "/ip6/::1::2/tcp/1", "ip4/1.2.3.4",
            "/ip4/1.2.3.4/tcp/65536", "/ip4//tcp/1", "/dns4//tcp/1", "/ip4/1.2.3.4/tcp",
        ] {
            #expect(throws: (any Error).self, "\(text)") { try Multiaddr(text) }
        }
        let rule = AddressScopeRule(
            publicNetworks: [try IPNetwork("198.18.0.0/15")], localNetworks: [try IPNetwork("192.168.1.0/24")])
        var random = SeededGenerator(seed: 0x5C09E)
        var parsed = 0
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...24, using: &random)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            // Half the inputs are /ip4|ip6/RANDOM/tcp/PORT (codes 4, 41, 6), a random tail after,
            // so that many parse and reach the rule with addresses from every range.
            if Bool.random(using: &random) {
                let v4 = Bool.random(using: &random)
                var head: [UInt8] = [v4 ? 4 : 41]
                head += (0..<(v4 ? 4 : 16)).map { _ in UInt8.random(in: 0...255, using: &random) }
                if !v4, Bool.random(using: &random) { head[1...12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] }
                head += [6, UInt8.random(in: 0...255, using: &random), 1]
                bytes = head + (Bool.random(using: &random) ? bytes : [])
            }
            guard let address = try? Multiaddr(bytes: bytes) else { continue }
            parsed += 1
            let scope = AddressScope.of(address)
            if rule.permits(address, from: .thirdParty) {
                // Permitted only when public or inside the local network, never a name or nothing.
                let ip = try #require(IPAddress(address))
                #expect(rule.scope(of: ip) == .publicInternet || rule.localNetworks[0].contains(ip), "\(address)")
            }
            if scope == nil { #expect(!rule.permits(address, from: .user)) }
        }
        #expect(parsed > 5000)
    }

    @Test("a loopback-only node dials third-party loopback and public addresses, nothing private")
    func loopbackOnlyNode() throws {
        let rule = AddressScopeRule(
            ownAddresses: [try Self.address("/ip4/127.0.0.1/tcp/4001")], interfaces: [], publicNetworks: [])
        #expect(rule.dialsLoopback)
        let expected: [(String, Bool)] = [
            ("/ip4/127.0.0.2/tcp/1", true), ("/ip6/::1/tcp/1", true), ("/ip4/8.8.8.8/tcp/1", true),
            ("/ip4/10.0.0.1/tcp/1", false), ("/ip4/192.168.1.1/tcp/1", false), ("/ip6/::ffff:10.0.0.1/tcp/1", false),
            ("/ip4/169.254.0.1/tcp/1", false), ("/ip6/fe80::1/tcp/1", false), ("/ip4/100.64.0.1/tcp/1", false),
            ("/ip4/0.0.0.0/tcp/1", false), ("/ip6/::/tcp/1", false), ("/dns4/localhost/tcp/1", false),
            ("/dns4/example.com/tcp/1", false), ("/ip4/198.18.0.1/tcp/1", false),
        ]
        for (text, permitted) in expected {
            #expect(rule.permits(try Self.address(text), from: .thirdParty) == permitted, "\(text)")
        }
    }

    @Test("a LAN node dials its own /24 but neither the rest of 192.168/16 nor loopback")
    func lanNode() throws {
        let lan = try IPAddress("192.168.1.5")
        let rule = AddressScopeRule(
            ownAddresses: [try Self.address("/ip4/192.168.1.5/tcp/4001")],
            interfaces: [
                LocalInterface(address: lan, prefixLength: 24),
                LocalInterface(address: try IPAddress("127.0.0.1"), prefixLength: 8),
            ],
            publicNetworks: [])
        #expect(!rule.dialsLoopback)
        #expect(rule.localNetworks == [try IPNetwork("192.168.1.0/24")])
        #expect(rule.permits(try Self.address("/ip4/192.168.1.77/tcp/1"), from: .thirdParty))
        #expect(!rule.permits(try Self.address("/ip4/192.168.2.1/tcp/1"), from: .thirdParty))
        #expect(!rule.permits(try Self.address("/ip4/127.0.0.1/tcp/22"), from: .thirdParty))
        #expect(rule.permits(try Self.address("/ip4/8.8.8.8/tcp/1"), from: .thirdParty))
    }

    @Test(
        "own networks come from the interface's netmask, widened to a /24 or /64, or that size when no interface holds the address"
    )
    func ownNetworks() throws {
        let rule = AddressScopeRule(
            ownAddresses: [
                try Self.address("/ip4/172.17.0.2/tcp/1"), try Self.address("/ip4/100.101.102.103/tcp/1"),
                try Self.address("/ip6/fd00::2/tcp/1"), try Self.address("/ip4/203.0.113.7/tcp/1"),
                try Self.address("/ip4/0.0.0.0/tcp/1"), try Self.address("/dns4/a.example/tcp/1"),
            ],
            interfaces: [
                LocalInterface(address: try IPAddress("172.17.0.2"), prefixLength: 16),
                LocalInterface(address: try IPAddress("100.101.102.103"), prefixLength: 32),
                LocalInterface(address: try IPAddress("fd00::2"), prefixLength: 128),
            ],
            publicNetworks: [])
        #expect(
            rule.localNetworks == [
                try IPNetwork("172.17.0.0/16"), try IPNetwork("100.101.102.0/24"), try IPNetwork("fd00::/64"),
                try IPNetwork("203.0.113.0/24"),
            ])
        #expect(!rule.dialsLoopback)
        #expect(rule.permits(try Self.address("/ip6/fd00::99/tcp/1"), from: .thirdParty))
        #expect(!rule.permits(try Self.address("/ip6/fd00:1::99/tcp/1"), from: .thirdParty))
    }

    @Test("--public-cidr makes a range public; the unspecified address stays undialable")
    func publicCIDR() throws {
        let rule = AddressScopeRule(
            publicNetworks: [try IPNetwork("198.18.0.0/15"), try IPNetwork("0.0.0.0/0")], localNetworks: [])
        #expect(rule.scope(of: try IPAddress("198.19.1.1")) == .publicInternet)
        #expect(rule.permits(try Self.address("/ip4/198.19.1.1/tcp/1"), from: .thirdParty))
        #expect(!rule.permits(try Self.address("/ip4/0.0.0.0/tcp/1"), from: .thirdParty))
        let lab = AddressScopeRule(publicNetworks: [try IPNetwork("198.18.0.0/15")], localNetworks: [])
        #expect(lab.permits(try Self.address("/ip4/198.20.0.1/tcp/1"), from: .thirdParty))
        #expect(!lab.permits(try Self.address("/ip4/192.0.2.1/tcp/1"), from: .thirdParty))
    }

    @Test("what the user typed is dialled whatever its scope; what the transport cannot dial never is")
    func userTyped() throws {
        let rule = AddressScopeRule()
        for text in ["/ip4/10.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/1", "/dns4/localhost/tcp/1", "/ip6/fe80::1/tcp/1"] {
            #expect(rule.permits(try Self.address(text), from: .user), "\(text)")
            #expect(!rule.permits(try Self.address(text), from: .thirdParty), "\(text)")
        }
        #expect(!rule.permits(try Self.address("/ip4/0.0.0.0/tcp/1"), from: .user))
        #expect(rule.permits(try Self.address("/ip4/10.0.0.1/udp/1/quic-v1"), from: .user))
        #expect(!rule.permits(try Self.address("/ip4/10.0.0.1/udp/1"), from: .user))
    }

    @Test("netmasks become prefix lengths")
    func netmasks() throws {
        #expect(try IPAddress("255.255.255.0").leadingOneBits == 24)
        #expect(try IPAddress("255.255.255.255").leadingOneBits == 32)
        #expect(try IPAddress("0.0.0.0").leadingOneBits == 0)
        #expect(try IPAddress("255.240.0.0").leadingOneBits == 12)
        #expect(try IPAddress("ffff:ffff:ffff:ffff::").leadingOneBits == 64)
        #expect(try IPAddress("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").leadingOneBits == 128)
        #expect(try IPAddress("ffff:ffff:ffff:fe00::").leadingOneBits == 55)
        #expect(try IPAddress("ffff:ffff:ffff:ffff:ff00::").leadingOneBits == 72)
    }
}

@Suite("advertised addresses from interfaces")
struct AdvertisedAddressExpansionTests {
    static let lan = [
        LocalInterface(address: try! IPAddress("127.0.0.1"), prefixLength: 8),
        LocalInterface(address: try! IPAddress("::1"), prefixLength: 128),
        LocalInterface(address: try! IPAddress("192.0.2.2"), prefixLength: 24),
        LocalInterface(address: try! IPAddress("fd00::2"), prefixLength: 64),
        LocalInterface(address: try! IPAddress("fe80::fc:ff:fe00:1"), prefixLength: 64),
    ]

    @Test("0.0.0.0 and :: become the interface addresses of their family, without loopback and link-local IPv6")
    func wildcards() throws {
        let advertised = LocalInterface.advertisedAddresses(
            bound: [try Multiaddr("/ip4/0.0.0.0/tcp/4001"), try Multiaddr("/ip6/::/tcp/4001")], announced: [],
            interfaces: Self.lan)
        #expect(advertised == [try Multiaddr("/ip4/192.0.2.2/tcp/4001"), try Multiaddr("/ip6/fd00::2/tcp/4001")])
    }

    @Test("a host with only loopback advertises loopback; an explicit bind stays as bound")
    func loopbackOnly() throws {
        let loopback = Array(Self.lan.prefix(2))
        let bound = [try Multiaddr("/ip4/0.0.0.0/tcp/1"), try Multiaddr("/ip6/::/tcp/2")]
        #expect(
            LocalInterface.advertisedAddresses(bound: bound, announced: [], interfaces: loopback)
                == [try Multiaddr("/ip4/127.0.0.1/tcp/1"), try Multiaddr("/ip6/::1/tcp/2")])
        let explicit = [try Multiaddr("/ip4/127.0.0.1/tcp/3"), try Multiaddr("/ip4/0.0.0.0/tcp/4")]
        #expect(
            LocalInterface.advertisedAddresses(bound: explicit, announced: [], interfaces: Self.lan)
                == [try Multiaddr("/ip4/127.0.0.1/tcp/3"), try Multiaddr("/ip4/192.0.2.2/tcp/4")])
    }

    @Test("announced addresses come first, once; with them a loopback-only host advertises no loopback")
    func announced() throws {
        let announced = [try Multiaddr("/ip4/203.0.113.7/tcp/4001"), try Multiaddr("/dns4/a.example/tcp/4001")]
        let advertised = LocalInterface.advertisedAddresses(
            bound: [try Multiaddr("/ip4/0.0.0.0/tcp/4001")], announced: announced + announced,
            interfaces: Array(Self.lan.prefix(2)))
        #expect(advertised == announced)
        let rule = AddressScopeRule(ownAddresses: advertised, interfaces: [], publicNetworks: [])
        #expect(!rule.dialsLoopback)
    }

    @Test("a host without interfaces advertises what it bound explicitly and announced")
    func noInterfaces() throws {
        #expect(
            LocalInterface.advertisedAddresses(
                bound: [try Multiaddr("/ip4/0.0.0.0/tcp/1"), try Multiaddr("/ip4/10.0.0.1/tcp/2")], announced: [],
                interfaces: []) == [try Multiaddr("/ip4/10.0.0.1/tcp/2")])
    }

    @Test("this host's interfaces are read with their prefix lengths")
    func currentInterfaces() throws {
        let interfaces = LocalInterface.current()
        let loopback = try #require(interfaces.first { $0.address == (try? IPAddress("127.0.0.1")) })
        #expect(loopback.prefixLength == 8)
    }
}
