import AgentTesting
import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Network

@Suite("ResourceManager: admission per scope, refusals counted and rate-limited, deny list")
struct ResourceManagerTests {
    /// A clock the test moves by hand.
    final class VirtualClock: Sendable {
        private let time = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        var now: NIODeadline { time.withLockedValue { $0 } }
        func advance(_ amount: TimeAmount) { time.withLockedValue { $0 = $0 + amount } }
    }

    static func manager(
        _ limits: ResourceLimits = ResourceLimits(), denyList: DenyList = DenyList()
    ) -> (ResourceManager, LogRecorder, VirtualClock) {
        let log = LogRecorder()
        let clock = VirtualClock()
        return (ResourceManager(limits: limits, denyList: denyList, logger: log.logger, now: { clock.now }), log, clock)
    }

    static func ip(_ text: String) -> IPAddress { try! IPAddress(text) }

    @Test("pending handshakes: one address gets its per-IP share, its /24 neighbour still gets in")
    func pendingPerIP() {
        let (manager, _, _) = Self.manager()
        let limits = manager.limits
        #expect(limits.ipPendingHandshakes < limits.subnetPendingHandshakes)
        #expect(limits.subnetPendingHandshakes < limits.systemPendingHandshakes)
        var admitted: [ResourceManager.AddressKeys?] = []
        for _ in 0..<64 {
            if case .success(let keys) = manager.admitHandshake(from: Self.ip("127.0.0.2")) { admitted.append(keys) }
        }
        #expect(admitted.count == limits.ipPendingHandshakes)
        #expect(manager.refusals(.ipPendingHandshakes) == 64 - limits.ipPendingHandshakes)
        guard case .success = manager.admitHandshake(from: Self.ip("127.0.0.3")) else {
            Issue.record("a neighbour in the same /24 was refused")
            return
        }
        // Slots come back when handshakes end.
        manager.handshakeEnded(admitted.removeLast())
        guard case .success = manager.admitHandshake(from: Self.ip("127.0.0.2")) else {
            Issue.record("a released slot did not come back")
            return
        }
    }

    @Test("pending handshakes: a /24 is capped below the node, and the node overall")
    func pendingPerSubnetAndSystem() {
        var limits = ResourceLimits()
        limits.ipPendingHandshakes = 4
        limits.subnetPendingHandshakes = 10
        limits.systemPendingHandshakes = 16
        let (manager, _, _) = Self.manager(limits)
        var admittedInSubnet = 0
        for host in 1...20 {
            if case .success = manager.admitHandshake(from: Self.ip("10.0.0.\(host)")) { admittedInSubnet += 1 }
        }
        #expect(admittedInSubnet == 10)
        #expect(manager.refusals(.subnetPendingHandshakes) == 10)
        var admittedElsewhere = 0
        for host in 1...20 {
            if case .success = manager.admitHandshake(from: Self.ip("10.0.\(host).1")) { admittedElsewhere += 1 }
        }
        #expect(admittedElsewhere == 6)
        #expect(manager.refusals(.systemPendingHandshakes) == 14)
    }

    @Test("IPv6: a /64 is one address, a /48 one subnet")
    func ipv6Scopes() {
        var limits = ResourceLimits()
        limits.ipPendingHandshakes = 2
        limits.subnetPendingHandshakes = 3
        let (manager, _, _) = Self.manager(limits)
        var results: [Bool] = []
        for address in [
            "2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::9", "2001:db8:1:2::1", "2001:db8:1:3::1",
            "2001:db8:2::1",
        ] {
            if case .success = manager.admitHandshake(from: Self.ip(address)) {
                results.append(true)
            } else {
                results.append(false)
            }
        }
        #expect(results == [true, true, false, true, false, true])
    }

    @Test("connections: per-IP, per-subnet and node limits; outbound ones count only node-wide")
    func connections() {
        var limits = ResourceLimits()
        limits.ipConnections = 2
        limits.subnetConnections = 3
        limits.systemConnections = 5
        let (manager, _, _) = Self.manager(limits)
        let a = ResourceManager.AddressKeys(Self.ip("192.0.2.1"))
        let b = ResourceManager.AddressKeys(Self.ip("192.0.2.2"))
        func peer() -> PeerID { PeerID(publicKey: Ed25519.PrivateKey().publicKey) }
        #expect(manager.admitConnection(peer: peer(), inboundFrom: a) == nil)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: a) == nil)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: a)?.entry == .ipConnections)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: b) == nil)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: b)?.entry == .subnetConnections)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: nil) == nil)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: nil) == nil)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: nil)?.entry == .systemConnections)
        manager.connectionClosed(inboundFrom: a)
        #expect(manager.admitConnection(peer: peer(), inboundFrom: a) == nil)
    }

    @Test("10,000 refusals make one log line per 10 s, with the rest counted in the next")
    func refusalLogRateLimited() {
        var limits = ResourceLimits()
        limits.ipPendingHandshakes = 1
        let (manager, log, clock) = Self.manager(limits)
        _ = manager.admitHandshake(from: Self.ip("198.51.100.7"))
        for _ in 0..<10_000 { _ = manager.admitHandshake(from: Self.ip("198.51.100.7")) }
        #expect(manager.refusals(.ipPendingHandshakes) == 10_000)
        #expect(log.lines(containing: "refused inbound connection").count == 1)
        clock.advance(.seconds(9))
        _ = manager.admitHandshake(from: Self.ip("198.51.100.7"))
        #expect(log.lines(containing: "refused inbound connection").count == 1)
        clock.advance(.seconds(2))
        _ = manager.admitHandshake(from: Self.ip("198.51.100.7"))
        let lines = log.lines(containing: "refused inbound connection")
        #expect(lines.count == 2)
        #expect(lines.last?.metadata["suppressed"] == "10000")
        #expect(manager.usage().first { $0.scope == "ip" && $0.resource == "pending_handshakes" }?.refused == 10_002)
    }

    @Test("deny list: a network is refused before the handshake, a peer after it")
    func denyList() throws {
        var list = DenyList()
        try list.insert(.network(try IPNetwork("203.0.113.0/24")))
        let blocked = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        try list.insert(.peer(blocked))
        let (manager, _, _) = Self.manager(denyList: list)
        guard case .failure(let refusal) = manager.admitHandshake(from: Self.ip("203.0.113.9")) else {
            Issue.record("a blocked network got a handshake slot")
            return
        }
        #expect(refusal.entry == nil && refusal.message.contains("203.0.113.0/24"))
        guard case .success = manager.admitHandshake(from: Self.ip("203.0.114.9")) else {
            Issue.record("an address outside the blocked network was refused")
            return
        }
        #expect(manager.admitConnection(peer: blocked, inboundFrom: nil) != nil)
        #expect(
            manager.admitConnection(peer: PeerID(publicKey: Ed25519.PrivateKey().publicKey), inboundFrom: nil) == nil)
        #expect(manager.deniedAdmissions == 2)
    }

    @Test("memory: reservations stop at the node budget and come back when released")
    func memory() {
        var limits = ResourceLimits()
        limits.systemMemory = 4 << 20
        let (manager, _, _) = Self.manager(limits)
        #expect(manager.reserveMemory(3 << 20))
        #expect(!manager.reserveMemory(2 << 20))
        #expect(manager.reserveMemory(1 << 20))
        #expect(manager.refusals(.systemMemory) == 1)
        manager.releaseMemory(2 << 20)
        #expect(manager.reserveMemory(2 << 20))
        #expect(manager.usage().first { $0.scope == "system" && $0.resource == "memory" }?.used == 4 << 20)
    }

    @Test("streams per protocol per peer")
    func streamsPerProtocol() {
        var limits = ResourceLimits()
        limits.protocolPeerInboundStreams = 2
        let (manager, _, _) = Self.manager(limits)
        let peer = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        #expect(manager.admitInboundStream(peer: peer, protocolID: "/a") == nil)
        #expect(manager.admitInboundStream(peer: peer, protocolID: "/a") == nil)
        #expect(manager.admitInboundStream(peer: peer, protocolID: "/a")?.entry == .protocolPeerInboundStreams)
        #expect(manager.admitInboundStream(peer: peer, protocolID: "/b") == nil)
        manager.inboundStreamEnded(peer: peer, protocolID: "/a")
        #expect(manager.admitInboundStream(peer: peer, protocolID: "/a") == nil)
    }

    @Test(
        "limits: unknown scopes and resources, and values below the minimum, are refused by name",
        arguments: [
            ("sytem", "connections", 1, "unknown scope"), ("system", "conections", 1, "unknown resource"),
            ("ip", "memory", 1, "unknown resource"), ("ip", "connections", 0, "at least 1"),
            ("ip", "connections", -5, "at least 1"), ("connection", "receive_window_memory", 1024, "at least 262144"),
            ("", "", 1, "unknown scope"), ("system\u{0}", "connections", 1, "unknown scope"),
        ])
    func limitsRefused(_ scope: String, _ resource: String, _ value: Int, _ fragment: String) {
        var limits = ResourceLimits()
        #expect {
            try limits.set(scope: scope, resource: resource, to: value)
        } throws: { error in
            guard let error = error as? NetworkError, error.kind == .invalidConfiguration else { return false }
            return error.message.contains(fragment) && !error.message.contains("\u{0}")
        }
        #expect(limits == ResourceLimits())
    }

    @Test("every entry's scope is a known scope and its default at least its minimum")
    func entries() throws {
        for entry in ResourceLimits.Entry.allCases {
            #expect(ResourceLimits.scopes.contains(entry.scope))
            #expect(ResourceLimits()[entry] >= entry.minimum)
            var limits = ResourceLimits()
            try limits.set(scope: entry.scope, resource: entry.resource, to: entry.minimum + 7)
            #expect(limits[entry] == entry.minimum + 7)
        }
    }
}
