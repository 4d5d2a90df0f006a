import Foundation
import Identity
import Multiformats
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@testable import Network

@Suite("Dial policy: the schedule on a virtual clock; an unanswered direct address does not hold the relayed path back")
struct DialPolicyTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    func at(_ milliseconds: Int64) -> NIODeadline { t0 + .milliseconds(milliseconds) }
    func address(_ text: String) -> Multiaddr { try! Multiaddr(text) }
    let relay = "/ip4/198.51.100.9/tcp/4001/p2p/12D3KooWGU6DLGUP9KBZdrwGdDvVj3Yq998hvcVg3fUn6Xvbvwn8/p2p-circuit"

    @Test("ranking: public, then private and other local scopes, then loopback; circuits apart; duplicates dropped")
    func ranking() {
        let schedule = DialSchedule(addresses: [
            address("/ip4/127.0.0.1/tcp/1"), address(relay), address("/ip4/192.168.1.2/tcp/1"),
            address("/ip4/8.8.8.8/tcp/1"), address("/dns4/example.com/tcp/1"), address("/ip4/10.0.0.1/tcp/1"),
            address("/ip4/8.8.8.8/tcp/1"),
        ])
        #expect(schedule.direct.map(\.description) == [
            "/ip4/8.8.8.8/tcp/1", "/dns4/example.com/tcp/1", "/ip4/192.168.1.2/tcp/1", "/ip4/10.0.0.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
        ])
        #expect(schedule.relayed == [address(relay)])
        // --public-cidr: a scope function that calls 10/8 public ranks it first.
        let lab = DialSchedule(
            addresses: [address("/ip4/127.0.0.1/tcp/1"), address("/ip4/10.0.0.1/tcp/1")],
            scope: { $0 == IPAddress(address("/ip4/10.0.0.1/tcp/1")) ? .publicInternet : AddressScope.of($0) })
        #expect(lab.direct.first == address("/ip4/10.0.0.1/tcp/1"))
    }

    @Test("QUIC before TCP within a scope (scope first): TCP starts a stagger later, or at once when QUIC failed")
    func quicFirst() {
        let tcp = address("/ip4/192.168.1.2/tcp/4001")
        let quic = address("/ip4/192.168.1.2/udp/4001/quic-v1")
        let publicTCP = address("/ip4/8.8.8.8/tcp/4001")
        let loopbackQUIC = address("/ip4/127.0.0.1/udp/4001/quic-v1")
        let ranked = DialSchedule(addresses: [loopbackQUIC, tcp, publicTCP, quic])
        #expect(ranked.direct == [publicTCP, quic, tcp, loopbackQUIC])
        var schedule = DialSchedule(addresses: [tcp, quic])
        #expect(schedule.begin(now: at(0)) == [quic])
        #expect(schedule.tick(now: at(249)) == [])
        #expect(schedule.tick(now: at(250)) == [tcp])
        var failing = DialSchedule(addresses: [tcp, quic])
        #expect(failing.begin(now: at(0)) == [quic])
        #expect(failing.failed(quic, now: at(10)) == [tcp])
    }

    @Test("direct dials 250 ms apart, at most 4 at once, the next at once after a failure; relayed after a 1 s head start")
    func staggered() {
        let direct = (1...6).map { address("/ip4/8.8.8.\($0)/tcp/1") }
        var schedule = DialSchedule(addresses: direct + [address(relay)])
        #expect(schedule.begin(now: at(0)) == [direct[0]])
        #expect(schedule.nextWakeup == at(250))
        #expect(schedule.tick(now: at(100)) == [])
        #expect(schedule.tick(now: at(250)) == [direct[1]])
        #expect(schedule.tick(now: at(500)) == [direct[2]])
        #expect(schedule.tick(now: at(750)) == [direct[3]])
        // Four running: no fifth until one fails; the relayed one waits for its head start.
        #expect(schedule.nextWakeup == at(1000))
        #expect(schedule.tick(now: at(1000)) == [address(relay)])
        #expect(schedule.nextWakeup == nil)
        #expect(schedule.tick(now: at(1200)) == [])
        #expect(schedule.failed(direct[1], now: at(1300)) == [direct[4]])
        #expect(schedule.nextWakeup == nil, "four running again")
        #expect(schedule.failed(direct[0], now: at(1400)) == [direct[5]])
        #expect(!schedule.isExhausted)
        for failed in [direct[2], direct[3], direct[4], direct[5]] { _ = schedule.failed(failed, now: at(1500)) }
        #expect(!schedule.isExhausted, "the relayed dial still runs")
        #expect(schedule.failed(address(relay), now: at(1600)) == [])
        #expect(schedule.isExhausted)
    }

    @Test("relayed addresses start at once when every direct dial failed, or when there is none; 250 ms apart")
    func relayedEarly() {
        let second = relay.replacingOccurrences(of: "198.51.100.9", with: "198.51.100.10")
        var schedule = DialSchedule(addresses: [address("/ip4/8.8.8.8/tcp/1"), address(relay), address(second)])
        #expect(schedule.begin(now: at(0)) == [address("/ip4/8.8.8.8/tcp/1")])
        #expect(schedule.nextWakeup == at(1000))
        #expect(schedule.failed(address("/ip4/8.8.8.8/tcp/1"), now: at(30)) == [address(relay)])
        #expect(schedule.nextWakeup == at(280))
        #expect(schedule.tick(now: at(280)) == [address(second)])
        // A relayed failure starts the next relayed one without waiting.
        var onlyRelayed = DialSchedule(addresses: [address(relay), address(second)])
        #expect(onlyRelayed.begin(now: at(0)) == [address(relay)])
        #expect(onlyRelayed.failed(address(relay), now: at(10)) == [address(second)])
        #expect(DialSchedule(addresses: []).isExhausted)
    }

    /// A TCP listener on 127.0.0.1 whose accept queue is full (backlog 0, one connection queued,
    /// never accepted): further SYNs are dropped, so a dial to it neither connects nor fails until
    /// its timeout. Returns the listener's address and the descriptors to close.
    func silentListener() throws -> (Multiaddr, [Int32]) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(listener, pointer, length) == 0 && listen(listener, 0) == 0
                    && getsockname(listener, pointer, &length) == 0
            }
        }
        guard bound else { throw NetworkError(.connectionFailed, "cannot make the silent listener: errno \(errno)") }
        let port = UInt16(bigEndian: address.sin_port)
        var descriptors = [listener]
        // Fill the accept queue: one connection completes and stays queued.
        let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        descriptors.append(filler)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) == 0 }
        }
        guard connected else { throw NetworkError(.connectionFailed, "cannot fill the silent listener: errno \(errno)") }
        return (try Multiaddr("/ip4/127.0.0.1/tcp/\(port)"), descriptors)
    }

    @Test("a direct address that never answers: the relayed address connects after the head start, not after the dial timeout")
    func silentDirectAddress() async throws {
        // A dial timeout far beyond anything load can add to the relayed connection: a policy that
        // waited for the silent address would take all of it.
        var patient = Host.Configuration()
        patient.dialTimeout = .seconds(120)
        let trio = try await RelayTrio.start(dialerConfiguration: patient)
        let (silent, descriptors) = try silentListener()
        // Closed before the hosts shut down: the pending dial's next SYN is refused, so it ends.
        var closed = false
        func closeListener() {
            guard !closed else { return }
            closed = true
            for descriptor in descriptors { close(descriptor) }
        }
        defer { closeListener() }
        do {
            try await trio.bClient.reserve(at: trio.relayAddress)
            let clock = ContinuousClock()
            let start = clock.now
            let connection = try await trio.a.connect(
                to: trio.b.peerID, addresses: [trio.relayAddress.appending(.p2pCircuit), silent])
            let elapsed = clock.now - start
            #expect(connection.path == .relayed(relay: trio.relay.peerID))
            #expect(connection.remotePeer == trio.b.peerID)
            // The head start is 1 s; a dial that waited for the silent address would take the
            // dial timeout (120 s here).
            #expect(elapsed >= .milliseconds(1000) && elapsed < .seconds(60), "relayed after \(elapsed)")
            print("dial policy: relayed connection after \(elapsed) with a silent direct address")
            // The silent dial is still pending: it never connected.
            #expect(await trio.a.connections().filter { $0.remotePeer == trio.b.peerID }.map(\.path) == [connection.path])
        } catch {
            closeListener()
            try await trio.shutdown()
            throw error
        }
        closeListener()
        try await trio.shutdown()
    }

    @Test("every address fails: one error names each; the host's existing connection answers without a dial")
    func failures() async throws {
        let trio = try await RelayTrio.start()
        do {
            let peer = trio.b.peerID
            // Nobody listens on ports 1 and 9 of loopback: refused at once.
            let dead = [try Multiaddr("/ip4/127.0.0.1/tcp/1"), try Multiaddr("/ip4/127.0.0.1/tcp/9")]
            await #expect(throws: NetworkError.self) {
                _ = try await trio.a.connect(to: peer, addresses: dead)
            }
            do {
                _ = try await trio.a.connect(to: peer, addresses: dead)
            } catch let error as NetworkError {
                #expect(error.kind == .connectionFailed)
                #expect(error.message.contains("/ip4/127.0.0.1/tcp/1/p2p/") && error.message.contains("/ip4/127.0.0.1/tcp/9/p2p/"))
            }
            await #expect(throws: NetworkError.self) { _ = try await trio.a.connect(to: peer, addresses: []) }
            let direct = try await trio.b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let first = try await trio.a.connect(to: peer, addresses: [direct])
            let again = try await trio.a.connect(to: peer, addresses: dead)
            #expect(first === again)
        } catch {
            try await trio.shutdown()
            throw error
        }
        try await trio.shutdown()
    }
}
