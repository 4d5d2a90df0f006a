import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Network

#if canImport(Glibc)
    import Glibc
#endif

/// The libp2p TLS certificate is renewed before it expires (spec/network.md, "QUIC certificate
/// renewal"): new handshakes present the new one, connections made with the old one go on.
@Suite("QUIC: certificate renewal")
struct QUICCertificateRenewalTests {
    static let day: Int64 = 86_400

    /// Unix seconds that the test sets.
    final class TestClock: Sendable {
        private let value: NIOLockedValueBox<Int64>
        init(_ start: Int64) { value = NIOLockedValueBox(start) }
        var now: Int64 { value.withLockedValue { $0 } }
        func set(_ seconds: Int64) { value.withLockedValue { $0 = seconds } }
    }

    static func configuration(clock: TestClock?) -> QUICEndpoint.Configuration {
        var configuration = QUICEndpoint.Configuration()
        if let clock { configuration.clock = { clock.now } }
        return configuration
    }

    @Test("a certificate is kept until less than the renewal margin of its validity remains, then made anew once")
    func renewalBoundary() throws {
        let clock = TestClock(1_800_000_000)
        let certificates = QUICCertificates(
            identity: Ed25519.PrivateKey(), configuration: Self.configuration(clock: clock), logger: Logger(label: "test"))
        let first = try certificates.current()
        #expect(first.notAfter == 1_800_000_000 + 100 * Self.day)
        clock.set(first.notAfter - 10 * Self.day - 1)  // one second before the margin
        #expect(try certificates.current() === first)
        clock.set(first.notAfter - 10 * Self.day)
        let second = try certificates.current()
        #expect(second !== first)
        #expect(second.notAfter == first.notAfter - 10 * Self.day + 100 * Self.day)
        #expect(try Libp2pTLS.subjectPublicKeyInfo(of: second.key) != Libp2pTLS.subjectPublicKeyInfo(of: first.key))
        #expect(try certificates.current() === second)
        #expect(certificates.made == 2)
    }

    @Test("over loopback: after the renewal point new handshakes get the new certificate; a connection made before it still carries stream data")
    func renewalKeepsConnections() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let logger = Logger(label: "test")
        let real = Int64(time(nil))
        // The server's first certificate is made 95 days back on its clock: valid in real time
        // for 5 more days, to be renewed from 5 days back on.
        let clock = TestClock(real - 95 * Self.day)
        let serverIdentity = Ed25519.PrivateKey()
        let serverConfiguration = Self.configuration(clock: clock)
        let serverCertificates = QUICCertificates(
            identity: serverIdentity, configuration: serverConfiguration, logger: logger)
        let clientConfiguration = Self.configuration(clock: nil)
        let clientCertificates = QUICCertificates(
            identity: Ed25519.PrivateKey(), configuration: clientConfiguration, logger: logger)
        let (serverChannel, server) = try await QUICEndpoint.bind(
            host: "127.0.0.1", port: 0, group: group, certificates: serverCertificates,
            configuration: serverConfiguration, logger: logger)
        let (clientChannel, client) = try await QUICEndpoint.bind(
            host: "127.0.0.1", port: 0, group: group, certificates: clientCertificates,
            configuration: clientConfiguration, logger: logger)
        let accepted = NIOLockedValueBox<[QUICConnectionCore]>([])
        try await server.eventLoop.submit {
            server.onAccepted = { core in accepted.withLockedValue { $0.append(core) } }
            server.accepting = true
        }.get()
        let serverAddress = try #require(serverChannel.localAddress)
        let serverPeer = PeerID(publicKey: serverIdentity.publicKey)

        func dial() async throws -> (client: QUICConnectionCore, presented: [UInt8]) {
            let core = try await client.connect(to: serverAddress, peer: serverPeer).get()
            let presented = try await core.eventLoop.submit { core.peerCertificateKey }.get()
            return (core, presented)
        }

        let first = try await dial()
        let original = try serverCertificates.current()
        let originalKey = try Libp2pTLS.subjectPublicKeyInfo(of: original.key)
        #expect(first.presented == originalKey)
        clock.set(real - 6 * Self.day)  // a day before the renewal point: no renewal yet
        #expect(try await dial().presented == originalKey)
        clock.set(real)
        let renewed = try await dial()
        #expect(renewed.presented != originalKey)
        let renewedCertificate = try serverCertificates.current()
        #expect(renewed.presented == (try Libp2pTLS.subjectPublicKeyInfo(of: renewedCertificate.key)))
        #expect(renewedCertificate.notAfter == real + 100 * Self.day)
        #expect(try await dial().presented == renewed.presented)  // renewed once, not per handshake
        #expect(serverCertificates.made == 2)

        // The first connection still works: its server side holds the old certificate and takes
        // a stream with data from the client.
        let serverSide = try #require(accepted.withLockedValue { $0.first })
        let opened = serverSide.eventLoop.makePromise(of: Int64.self)
        try await serverSide.eventLoop.submit {
            #expect(serverSide.certificate === original)
            #expect(!serverSide.isClosed)
            serverSide.onStreamOpened = { opened.succeed($0) }
        }.get()
        let connection = first.client
        let id = try await connection.eventLoop.submit { try connection.openStream() }.get()
        let payload: [UInt8] = [1, 2, 3, 4, 5]
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            connection.eventLoop.execute {
                connection.write(ByteBuffer(bytes: payload), on: id, continuation: continuation)
            }
        }
        let serverStream = try await opened.futureResult.get()
        let chunks = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<[ByteBuffer]?, Error>) in
            serverSide.eventLoop.execute { serverSide.read(serverStream, continuation: continuation) }
        }
        #expect(chunks?.flatMap { Array($0.readableBytesView) } == payload)

        try await clientChannel.close()
        try await serverChannel.close()
        try await group.shutdownGracefully()
    }
}
