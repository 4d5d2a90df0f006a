import Application
import Foundation
import Identity
import Multiformats
import NIOCore
import Network
import Resolution
import Session

/// The control API methods of the node (spec/control-api.md, "Methods").
enum NodeControlAPI {
    static func methods(host: Network.Host, identity: Ed25519.PrivateKey, dht: DHT? = nil) -> ControlAPIMethods {
        var methods = ControlAPIMethods()

        methods.register("id") { _ in
            .object([
                "peer_id": .string(host.peerID.description),
                "did": .string(DIDKey.string(for: identity.publicKey)),
                "public_key": .string(Data(identity.publicKey.rawRepresentation).base64EncodedString()),
                "addrs": .array(host.advertisedAddresses.map { .string($0.appending(.p2p(host.peerID.multihash)).description) }),
                "listen_addrs": .array(host.listenAddresses.map { .string($0.description) }),
                "protocols": .array(host.protocols.map { .string($0) }),
                "agent_version": .string(Network.Host.Configuration().agentVersion),
            ])
        }

        methods.register("peers") { _ in
            let connections = await host.connections()
            return .object([
                "peers": .array(
                    connections.map { info in
                        var object: [String: JSONValue] = [
                            "peer_id": .string(info.remotePeer.description),
                            "addr": info.remoteAddress.map { .string($0.description) } ?? .null,
                            "path": .string(info.path.name),
                            "direction": .string(info.direction.rawValue),
                            "streams": .number(info.streams),
                            "latency_ms": info.latency.map { .number(Double($0.nanoseconds) / 1e6) } ?? .null,
                        ]
                        if let identify = host.peerInfo(info.remotePeer) {
                            object["agent_version"] = .string(identify.agentVersion)
                            object["protocols"] = .array(identify.protocols.map { .string($0) })
                        }
                        return .object(object)
                    })
            ])
        }

        methods.register("connect") { params in
            let address = try multiaddr(params, "addr")
            // spec/control-api.md §8: the address given is dialled (or a connection dialled to it
            // is reused), so a dead address or another peer's address fails even while connected.
            let connection = try await call { try await host.connect(to: address, reuse: .sameAddress) }
            return .object([
                "peer_id": .string(connection.remotePeer?.description ?? ""),
                "addr": .string(address.description),
                "direction": .string(connection.direction.rawValue),
                "path": .string(connection.path.name),
            ])
        }

        methods.register("ping") { params in
            guard let target = params["target"]?.stringValue else {
                throw ControlAPIError.invalidParams("ping needs \"target\": a multiaddr with /p2p/ or a connected peer id")
            }
            let count = try integer(params, "count", in: 1...1000) ?? 1
            let peer = try await resolvePeer(target, host: host, dht: dht)
            // The connection new streams to the peer use: the direct one when there is one.
            guard let connection = host.connection(to: peer) else {
                throw ControlAPIError.failed("the connection to \(peer) closed", kind: "connection_failed")
            }
            let rtts = try await call { try await Ping.ping(host, on: connection, count: count) }
            return .object([
                "peer_id": .string(peer.description),
                "rtts_ms": .array(rtts.map { .number($0.seconds * 1000) }),
                "path": .string(connection.path.name),
                "addr": connection.remoteAddress.map { .string($0.description) } ?? .null,
            ])
        }

        methods.register("perf") { params in
            guard let target = params["target"]?.stringValue else {
                throw ControlAPIError.invalidParams("perf needs \"target\": a multiaddr with /p2p/ or a connected peer id")
            }
            // Capped: each byte costs both daemons work until it is sent (2^64 - 1 would never end).
            guard let upload = try integer(params, "upload", in: 0...maximumPerfBytes),
                let download = try integer(params, "download", in: 0...maximumPerfBytes)
            else {
                throw ControlAPIError.invalidParams("perf needs \"upload\" and \"download\" byte counts")
            }
            let peer = try await resolvePeer(target, host: host, dht: dht)
            let result = try await call { try await Perf.run(host, peer: peer, upload: upload, download: download) }
            return .object([
                "peer_id": .string(peer.description),
                "upload_bytes": .number(result.uploadBytes),
                "upload_seconds": .number(result.uploadSeconds),
                "upload_bytes_per_second": .number(result.uploadBytesPerSecond),
                "download_bytes": .number(result.downloadBytes),
                "download_seconds": .number(result.downloadSeconds),
                "download_bytes_per_second": .number(result.downloadBytesPerSecond),
            ])
        }
        return methods
    }

    /// The most bytes one `perf` request may upload, and download (spec/control-api.md §8).
    static let maximumPerfBytes: UInt64 = 1 << 30

    /// The integer param `key` in `range`; `nil` when absent or `null`. A value of another type, a
    /// fraction, or one out of range is `invalid_params` (never silently a default).
    static func integer<T: FixedWidthInteger>(_ params: JSONValue, _ key: String, in range: ClosedRange<T>) throws -> T?
    {
        guard let value = params[key], value != .null else { return nil }
        let integer = T.isSigned ? value.int64Value.flatMap(T.init(exactly:)) : value.uint64Value.flatMap(T.init(exactly:))
        guard let integer, range.contains(integer) else {
            let given = value.numberValue.map { "\($0)" } ?? "a \(value.typeName)"
            throw ControlAPIError.invalidParams(
                "\"\(key)\" must be an integer from \(range.lowerBound) to \(range.upperBound), not \(given)")
        }
        return integer
    }

    static func multiaddr(_ params: JSONValue, _ key: String) throws -> Multiaddr {
        guard let text = params[key]?.stringValue else {
            throw ControlAPIError.invalidParams("missing \"\(key)\": a multiaddr")
        }
        do {
            return try Multiaddr(text)
        } catch {
            throw ControlAPIError.invalidInput("bad multiaddr \"\(text)\": \(error.message)", kind: error.kind.rawValue)
        }
    }

    /// A multiaddr (connects), a `NAME.agent` (resolves, then connects to its addresses), or the
    /// peer id of a connected peer.
    static func resolvePeer(_ target: String, host: Network.Host, dht: DHT? = nil) async throws -> PeerID {
        if let dht, target.lowercased().hasSuffix(AgentName.suffix) {
            return try await connect(toName: target, host: host, dht: dht)
        }
        if target.hasPrefix("/") {
            let address = try multiaddr(.object(["addr": .string(target)]), "addr")
            let connection = try await call { try await host.connect(to: address, reuse: .sameAddress) }
            guard let peer = connection.remotePeer else { throw ControlAPIError.failed("connection has no peer") }
            return peer
        }
        let peer: PeerID
        do {
            peer = try PeerID(target)
        } catch {
            throw ControlAPIError.invalidInput("\"\(target)\" is neither a multiaddr nor a peer id: \(error.message)")
        }
        guard host.connection(to: peer) != nil else {
            throw ControlAPIError.notFound("not connected to \(peer); give a multiaddr ending in /p2p/\(peer)", kind: "not_connected")
        }
        return peer
    }

    /// Maps network and session errors to control API errors with their stable kinds.
    static func call<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as NetworkError {
            switch error.kind {
            case .invalidAddress: throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
            case .timeout: throw ControlAPIError.timeout(error.message, kind: error.kind.rawValue)
            default: throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
            }
        } catch let error as SessionError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        }
    }
}
