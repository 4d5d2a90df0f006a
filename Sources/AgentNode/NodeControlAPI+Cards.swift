import Application
import Identity
import Multiformats
import Network
import Resolution

/// The capability card methods of the control API (spec/control-api.md, spec/cards.md):
/// card.set, card.remove, card.get, cap.find.
extension NodeControlAPI {
    static func registerCardMethods(_ methods: inout ControlAPIMethods, cards: CardService, dht: DHT, host: Network.Host) {
        methods.register("card.set") { params in
            guard let json = params["card"], json.objectValue != nil else {
                throw ControlAPIError.invalidParams("card.set needs \"card\": the card's JSON object (spec/cards.md §3)")
            }
            let agent = params["name"] == nil || params["name"] == .null ? nil : try agentName(params)
            let signed = try await card {
                try await cards.set(try CapabilityCard(json: json), agent: agent)
            }
            return signed.json
        }

        methods.register("card.remove") { params in
            guard let capability = params["capability"]?.stringValue else {
                throw ControlAPIError.invalidParams("card.remove needs \"capability\": a capability name")
            }
            let agent = params["name"] == nil || params["name"] == .null ? nil : try agentName(params)
            let removed = try await card { try cards.remove(capability: capability, agent: agent) }
            return .object(["capability": .string(capability), "removed": .bool(removed)])
        }

        methods.register("card.get") { params in
            let name = try agentName(params)
            // A local agent's cards come from the store (they are ours, signed by our key).
            let local = try await card { try cards.cards(of: name) }
            if !local.isEmpty || dht.registeredNames.contains(name) || name == AgentName(selfCertifying: host.peerID) {
                return .object([
                    "name": .string(name.value), "peer_id": .string(host.peerID.description),
                    "cards": .array(local.map(\.json)), "dropped": .array([]),
                ])
            }
            let record = try await resolution { try await dht.resolve(name) }.record.record
            let (fetched, dropped) = try await card {
                try await call { try await cards.cards(of: name, at: record.peerID, addresses: record.addresses) }
            }
            return .object([
                "name": .string(name.value), "peer_id": .string(record.peerID.description),
                "cards": .array(fetched.map(\.json)), "dropped": .array(dropped.map { .string($0) }),
            ])
        }

        methods.register("cap.find") { params in
            guard let capability = params["capability"]?.stringValue else {
                throw ControlAPIError.invalidParams("cap.find needs \"capability\": a capability name")
            }
            var range: VersionRange?
            if let value = params["version"], value != .null {
                guard let text = value.stringValue else {
                    throw ControlAPIError.invalidParams("\"version\" must be a version range string (spec/cards.md §4)")
                }
                range = try await card { try VersionRange(text) }
            }
            let result = try await card { try await cards.find(capability: capability, versions: range) }
            return .object([
                "agents": .array(
                    result.found.map { found in
                        .object([
                            "name": .string(found.agent.value), "peer_id": .string(found.peer.description),
                            "capability": .string(found.card.card.name), "version": .string(found.card.card.version.description),
                        ])
                    }),
                "dropped": .array(
                    result.dropped.map { .object(["peer_id": .string($0.peer.description), "reason": .string($0.reason)]) }),
            ])
        }
    }

    /// Maps `CardError` to control API errors with its kind: bad input (exit 2 in agentctl),
    /// storage failures (exit 1).
    static func card<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as CardError {
            switch error.kind {
            case .storage, .tooManyCards, .unknownAgent, .badSignature, .fromTheFuture:
                throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
            default:
                throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
            }
        }
    }
}
