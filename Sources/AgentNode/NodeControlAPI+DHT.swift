import Application
import Foundation
import Identity
import Multiformats
import NIOCore
import Network
import Resolution

/// The DHT methods of the control API (spec/control-api.md): register, unregister, names, resolve,
/// dht.peers, dht.get_closest.
extension NodeControlAPI {
    /// - Parameter namesChanged: called after a name was registered or unregistered.
    static func registerDHTMethods(_ methods: inout ControlAPIMethods, dht: DHT, namesChanged: @escaping @Sendable () -> Void = {}) {
        methods.register("register") { params in
            let name = try agentName(params)
            var addresses: [Multiaddr]?
            if let value = params["addrs"], value != .null, value.arrayValue == nil {
                throw ControlAPIError.invalidParams("\"addrs\" must be a list of multiaddr strings")
            }
            if let value = params["protocols"], value != .null, value.arrayValue == nil {
                throw ControlAPIError.invalidParams("\"protocols\" must be a list of strings")
            }
            if let list = params["addrs"]?.arrayValue {
                addresses = try list.map { value in
                    guard let text = value.stringValue else { throw ControlAPIError.invalidParams("\"addrs\" must be a list of multiaddr strings") }
                    return try multiaddr(.object(["addr": .string(text)]), "addr")
                }
            }
            var protocols: [String]?
            if let list = params["protocols"]?.arrayValue {
                protocols = try list.map { value in
                    guard let text = value.stringValue else { throw ControlAPIError.invalidParams("\"protocols\" must be a list of strings") }
                    return text
                }
            }
            var ttl = RecordLimits.defaultTTL
            if let value = params["ttl"] {
                guard let seconds = value.uint64Value, seconds >= RecordLimits.minimumTTL, seconds <= RecordLimits.maximumTTL else {
                    throw ControlAPIError.invalidParams("\"ttl\" must be \(RecordLimits.minimumTTL) to \(RecordLimits.maximumTTL) seconds")
                }
                ttl = UInt32(seconds)
            }
            // Kept in the store: the daemon publishes the name again after a restart.
            let report = try await resolution {
                try await dht.register(name, addresses: addresses, protocols: protocols, ttl: ttl, persist: true)
            }
            namesChanged()
            var object = recordJSON(report.record)
            object["replicas"] = .array(report.storedAt.map { .string($0.description) })
            object["failures"] = .array(report.failures.map { .object(["peer_id": .string($0.peer.description), "reason": .string($0.reason)]) })
            return .object(object)
        }

        methods.register("unregister") { params in
            let name = try agentName(params)
            let was = try await resolution { try dht.unregister(name) }
            namesChanged()
            return .object(["name": .string(name.value), "was_registered": .bool(was)])
        }

        methods.register("names") { _ in
            let stored = try await resolution { try dht.store.registrations(dropInvalid: false).registrations }
            let persistent = Set(stored.map(\.name))
            let published = Set(dht.registeredNames)
            // A store that cannot be read fails the call (it does not drop the record fields).
            var entries: [JSONValue] = []
            for name in published.union(persistent).sorted() {
                var object: [String: JSONValue] = [
                    "name": .string(name.value), "persistent": .bool(persistent.contains(name)),
                    "published": .bool(published.contains(name)),
                ]
                if let record = try await resolution({ try dht.store.ownRecord(for: name) }) {
                    let fields = recordJSON(record)
                    for key in ["seq", "expires", "addresses", "protocols"] { object[key] = fields[key] }
                }
                entries.append(.object(object))
            }
            return .object(["names": .array(entries)])
        }

        methods.register("resolve") { params in
            let name = try agentName(params)
            let noCache = params["no_cache"]?.boolValue ?? false
            let started = NIODeadline.now()
            let resolution = try await resolution { try await dht.resolve(name, useCache: !noCache) }
            var object = recordJSON(resolution.record)
            object["source"] = .string(resolution.source.rawValue)
            object["replicas"] = .number(resolution.replicas)
            object["invalid_answers"] = .number(resolution.invalidAnswers)
            object["claims"] = .number(resolution.claims)
            object["elapsed_ms"] = .number(Double((NIODeadline.now() - started).nanoseconds) / 1e6)
            if let lookup = resolution.lookup {
                object["lookup"] = lookupJSON(lookup)
            }
            return .object(object)
        }

        methods.register("dht.peers") { _ in
            let entries = dht.routingTableEntries
            let table = RoutingTable(localPeer: dht.host.peerID)
            return .object([
                "mode": .string(dht.mode.rawValue),
                "protocol": .string(dht.configuration.protocolID),
                "size": .number(entries.count),
                "buckets": .array(
                    dht.bucketSummaries.filter { $0.entries > 0 || $0.replacements > 0 }.map { bucket in
                        .object([
                            "index": .number(bucket.index), "common_prefix_length": .number(bucket.commonPrefixLength),
                            "entries": .number(bucket.entries), "replacements": .number(bucket.replacements),
                        ])
                    }),
                "peers": .array(
                    entries.map { entry in
                        .object([
                            "peer_id": .string(entry.peer.id.description),
                            "addrs": .array(entry.peer.addresses.map { .string($0.description) }),
                            "bucket": table.bucketIndex(for: entry.key).map { .number($0) } ?? .null,
                            "connected": .bool(dht.host.connection(to: entry.peer.id) != nil),
                            "last_seen_seconds_ago": .number(Double((NIODeadline.now() - entry.lastSeen).nanoseconds) / 1e9),
                        ])
                    }),
            ])
        }

        methods.register("dht.get_closest") { params in
            guard let text = params["key"]?.stringValue, !text.isEmpty else {
                throw ControlAPIError.invalidParams("dht.get_closest needs \"key\": a peer id, a NAME.agent, or text")
            }
            let (key, kind) = try lookupKey(text)
            // Peers refuse kad messages with longer keys (ours too, KadMessage): a lookup for one
            // would only collect refusals, so it is refused here with a clear error instead.
            guard key.count <= KadLimits.maximumKeyLength else {
                throw ControlAPIError.invalidParams(
                    "\"key\" is \(key.count) bytes; kad keys are at most \(KadLimits.maximumKeyLength) bytes")
            }
            let result = await dht.lookupClosestPeers(to: key)
            let target = KademliaKey(hashing: key)
            return .object([
                "key": .string(text), "key_kind": .string(kind), "kademlia_key": .string(target.description),
                "peers": .array(
                    result.closest.map { peer in
                        .object([
                            "peer_id": .string(peer.id.description),
                            "addrs": .array(peer.addresses.map { .string($0.description) }),
                            "common_prefix_length": .number(target.commonPrefixLength(with: peer.key)),
                        ])
                    }),
                "lookup": lookupJSON(result.statistics),
                "termination": .string(result.termination.rawValue),
            ])
        }
    }

    /// The key bytes `text` stands for: a `NAME.agent` is its record key, a peer id its multihash,
    /// anything else its UTF-8 bytes.
    static func lookupKey(_ text: String) throws -> ([UInt8], String) {
        if text.lowercased().hasSuffix(AgentName.suffix) {
            do {
                return (try AgentName(text).recordKey, "name")
            } catch {
                throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
            }
        }
        if let peer = try? PeerID(text) { return (peer.multihash.bytes, "peer_id") }
        return (Array(text.utf8), "bytes")
    }

    static func agentName(_ params: JSONValue) throws -> AgentName {
        guard let text = params["name"]?.stringValue else {
            throw ControlAPIError.invalidParams("missing \"name\": a NAME.agent")
        }
        do {
            return try AgentName(text.lowercased().hasSuffix(AgentName.suffix) ? text : text + AgentName.suffix)
        } catch {
            throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
        }
    }

    /// Resolves `text` (a NAME.agent) and connects to the peer through the record's addresses.
    static func connect(toName text: String, host: Network.Host, dht: DHT) async throws -> PeerID {
        let name: AgentName
        do {
            name = try AgentName(text)
        } catch {
            throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
        }
        let resolved = try await resolution { try await dht.resolve(name) }
        let peer = resolved.record.record.peerID
        if host.connection(to: peer) != nil { return peer }
        var failures: [String] = []
        // A record's addresses are its owner's word: dialled only as the scope rule allows
        // (spec/network.md, "Addresses"), by the dial policy (direct ones raced, relayed ones
        // after them or after a head start; "Dial policy").
        let rule = host.addressScopeRule
        let addresses = resolved.record.record.addresses
        for address in addresses where !rule.permits(address, from: .thirdParty) {
            failures.append("\(address): not dialled (out of this node's address scope)")
        }
        if addresses.contains(where: { rule.permits($0, from: .thirdParty) }) {
            do {
                _ = try await host.connect(to: peer, addresses: addresses, origin: .thirdParty)
                return peer
            } catch {
                failures.append("\(error)")
            }
        }
        throw ControlAPIError.failed(
            "\(name) resolved to \(peer), but none of its \(resolved.record.record.addresses.count) addresses answered: \(failures.joined(separator: "; "))",
            kind: "unreachable")
    }

    /// Maps resolution errors to control API errors: not found → not_found (exit 1), malformed
    /// names and records → invalid input (exit 2), the rest → failed.
    static func resolution<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ResolutionError {
            switch error.kind {
            case .notFound: throw ControlAPIError.notFound(error.message, kind: error.kind.rawValue)
            case .invalidName, .malformed, .oversized, .ttlOutOfRange, .selfCertifyingMismatch:
                throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
            default: throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
            }
        }
    }

    static func recordJSON(_ signed: SignedAgentRecord) -> [String: JSONValue] {
        let record = signed.record
        return [
            "name": .string(record.name.value),
            "peer_id": .string(record.peerID.description),
            "public_key": .string(Data(record.publicKey.rawRepresentation).base64EncodedString()),
            "addresses": .array(record.addresses.map { .string($0.description) }),
            "protocols": .array(record.protocols.map { .string($0) }),
            "seq": .number(record.seq),
            "timestamp": .string(Timestamp.rfc3339Milliseconds(record.timestamp)),
            "timestamp_unix": .number(record.timestamp),
            "ttl": .number(UInt64(record.ttl)),
            "expires": .string(Timestamp.rfc3339Milliseconds(record.expires)),
            "expires_unix": .number(record.expires),
        ]
    }

    static func lookupJSON(_ statistics: LookupStatistics) -> JSONValue {
        .object([
            "hops": .number(statistics.hops), "requests": .number(statistics.requests),
            "responses": .number(statistics.responses), "failures": .number(statistics.failures),
            "timeouts": .number(statistics.timeouts),
            "duration_ms": .number(Double(statistics.duration.nanoseconds) / 1e6),
        ])
    }
}
