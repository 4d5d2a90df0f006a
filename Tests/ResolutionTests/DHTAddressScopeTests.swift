import Foundation
import Identity
import Logging
import Multiformats
import NIOCore
import ResolutionTesting
import Testing

@testable import Network
@testable import Resolution

/// Issue #10 finding 10 over real connections: addresses a kad answer supplies are dialled only as
/// the scope rule allows (spec/network.md, "Addresses"); what the user typed is dialled anyway.
@Suite("DHT: address scopes of third-party addresses", .serialized)
struct DHTAddressScopeTests {
    /// An RFC 1918 address. Whether anything answers there depends on the machine's network (a
    /// sandbox may intercept every outbound connection): the test tells a dial from none by the
    /// path the request takes, not by what answers.
    static let privateAddress = "/ip4/10.99.0.1/tcp/4001"

    /// A server-mode DHT node on 127.0.0.1 only (loopback-only), with `publicNetworks`.
    static func victim(in network: DHTLoopbackNetwork, publicNetworks: [IPNetwork] = []) async throws -> DHTLoopbackNetwork.Node
    {
        var hostConfiguration = Network.Host.Configuration()
        hostConfiguration.dialTimeout = .seconds(1)
        hostConfiguration.limits = .loopbackTestNetwork
        hostConfiguration.publicNetworks = publicNetworks
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let host = Network.Host(
            identity: Ed25519.PrivateKey(), group: network.group, configuration: hostConfiguration, logger: logger)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        // Patient: nothing here waits for a timeout, and a loaded machine may take seconds to answer.
        var configuration = DHTLoopbackNetwork.configuration()
        configuration.requestTimeout = .seconds(60)
        configuration.requestHardTimeout = .seconds(60)
        let dht = DHT(host: host, store: try RecordStore(path: nil), configuration: configuration, logger: logger)
        dht.start()
        host.spawn("dht service") { try? await dht.run(maintenance: false) }
        return DHTLoopbackNetwork.Node(host: host, dht: dht, address: bound.appending(.p2p(host.peerID.multihash)))
    }

    @Test(
        "a loopback-only node refuses to dial an RFC 1918 address a kad answer supplied, and dials it when the user typed it"
    )
    func privateAddressFromKadAnswer() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let victim = try await Self.victim(in: network)
        let honest = try await network.addNode()
        let stranger = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let told = try Multiaddr(Self.privateAddress)
        let (liar, liarAddress) = try await DHTLivenessTests.liar(
            in: network,
            naming: [
                KadMessage.Peer(peerID: stranger, addresses: [told]),
                KadMessage.Peer(peerID: honest.peerID, addresses: [honest.address.decapsulatingPeer()]),
            ])
        #expect(victim.host.addressScopeRule.dialsLoopback)

        // Bootstrapping through the liar (an address the user typed): the honest peer, named at its
        // loopback address, is dialled and enters the table; the stranger at 10.99.0.1 is not dialled.
        await victim.dht.bootstrap([liarAddress])
        #expect(victim.dht.state.withLockedValue { $0.table.contains(honest.peerID) })
        #expect(!victim.dht.state.withLockedValue { $0.table.contains(stranger) })
        let plan = victim.dht.dialPlan(for: KademliaPeer(id: stranger, addresses: [told]), hearsay: true)
        #expect(plan.known.isEmpty && plan.hearsay.isEmpty)

        // A request to the stranger through the kad answer's address fails without a dial: the
        // DHT found no address to try (its message when no dial error exists; a dial that failed
        // would report that dial's error, whatever answered at 10.99.0.1).
        do {
            _ = try await victim.dht.exchange(
                KadMessage(type: .ping), with: KademliaPeer(id: stranger, addresses: [told]), hearsay: true)
            Issue.record("a request to \(told) succeeded")
        } catch {
            #expect(error.kind == .unreachableByHearsay)
            #expect(error.message == "no dialable address known for \(stranger)", "\(error.message)")
        }

        // The same address from the user (a bootstrap seed, `agentctl connect`) is dialled: the
        // request fails on that dial (nothing there is the stranger), as a failed trusted dial.
        do {
            _ = try await victim.dht.exchange(
                KadMessage(type: .ping), with: KademliaPeer(id: stranger, addresses: [told]), hearsay: false)
            Issue.record("a request to \(told) succeeded")
        } catch {
            #expect(error.kind == .unreachable)
            #expect(error.message != "no dialable address known for \(stranger)", "\(error.message)")
        }
        do {
            _ = try await victim.host.connect(to: told.appending(.p2p(stranger.multihash)))
            Issue.record("a connection to \(told) succeeded")
        } catch let error as NetworkError {
            // Refused before any dial would be `invalid_address` or `refused`.
            #expect(error.kind == .connectionFailed || error.kind == .timeout, "\(error)")
        } catch {
            // The dial reached something that is not the stranger (the handshake failed).
        }
        await liar.shutdown()
        await victim.host.shutdown()
        try await network.shutdown()
    }

    @Test("with --public-cidr 10.99.0.0/16 the same kad answer's address is dialled")
    func publicCIDR() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let victim = try await Self.victim(in: network, publicNetworks: [try IPNetwork("10.99.0.0/16")])
        let stranger = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
        let told = try Multiaddr(Self.privateAddress)
        let plan = victim.dht.dialPlan(for: KademliaPeer(id: stranger, addresses: [told]), hearsay: true)
        #expect(plan.hearsay == [told])
        let other = try Multiaddr("/ip4/10.98.0.1/tcp/4001")
        #expect(victim.dht.dialPlan(for: KademliaPeer(id: stranger, addresses: [other]), hearsay: true).hearsay.isEmpty)
        await victim.host.shutdown()
        try await network.shutdown()
    }
}

@Suite("announced addresses: identify and records", .serialized)
struct AnnouncedAddressTests {
    @Test("an --announce address comes first in identify and in the node's own record")
    func announcedFirst() async throws {
        let network = DHTLoopbackNetwork(threads: 1)
        let announced = try Multiaddr("/ip4/203.0.113.7/tcp/4001")
        var hostConfiguration = Network.Host.Configuration()
        hostConfiguration.limits = .loopbackTestNetwork
        hostConfiguration.announcedAddresses = [announced]
        var logger = Logger(label: "dht-test")
        logger.logLevel = .critical
        let host = Network.Host(
            identity: Ed25519.PrivateKey(), group: network.group, configuration: hostConfiguration, logger: logger)
        let bound = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        #expect(host.advertisedAddresses == [announced, bound])

        let dht = DHT(host: host, store: try RecordStore(path: nil), configuration: DHTLoopbackNetwork.configuration(), logger: logger)
        dht.start()
        host.spawn("dht service") { try? await dht.run(maintenance: false) }
        let other = try await network.addNode()
        _ = try await other.host.connect(to: bound.appending(.p2p(host.peerID.multihash)))
        #expect(try await DHTLivenessTests.eventually { other.host.peerInfo(host.peerID) != nil })
        #expect(other.host.peerInfo(host.peerID)?.listenAddresses == [announced, bound])

        await dht.bootstrap([other.address])
        let report = try await dht.register(try AgentName("announced.agent"))
        #expect(report.record.record.addresses == [announced, bound])
        await host.shutdown()
        try await network.shutdown()
    }
}
