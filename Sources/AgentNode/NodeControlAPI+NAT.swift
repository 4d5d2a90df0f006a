import Application
import Identity
import NIOCore
import Network

/// Reachability in the control API (spec/control-api.md): `nat` and `events.subscribe`.
extension NodeControlAPI {
    static func registerNATMethods(
        _ methods: inout ControlAPIMethods, events: NodeEvents, autonat: AutoNATService, server: AutoNATServer?,
        relaying: NodeRelaying? = nil
    ) {
        methods.register("nat") { _ in
            natStatus(autonat.status, server: server, relay: relaying?.natFields())
        }

        // Notifications `{"jsonrpc":"2.0","method":"event","params":{"event":…}}` for every node
        // event from now on, until the client disconnects or the node stops.
        methods.registerSubscription("events.subscribe") { params, subscriber in
            guard params == .null || params.objectValue?.isEmpty == true else {
                throw ControlAPIError.invalidParams("events.subscribe takes no params")
            }
            let stream = events.subscribe()
            try subscriber.accept(.object(["subscription": "events"]))
            for await event in stream {
                try subscriber.notify("event", event.json)
            }
        }
    }

    /// The `nat` result (spec/control-api.md §8.7).
    static func natStatus(
        _ status: AutoNATService.Status, server: AutoNATServer?, relay: [String: JSONValue]? = nil
    ) -> JSONValue {
        let tracker = status.tracker
        func seconds(_ at: NIODeadline) -> JSONValue {
            .number(Double(max(0, (status.at - at).nanoseconds)) / 1e9)
        }
        let answers: [JSONValue] = tracker.answers.reversed().map { answer in
            .object([
                "server": .string(answer.server.description),
                "status": answer.status.map { .string($0.description) } ?? .null,
                "text": .string(answer.text),
                "addr": answer.address.map { .string($0.description) } ?? .null,
                "evidence": answer.evidence.map { .string($0.rawValue) } ?? .null,
                "seconds_ago": seconds(answer.at),
            ])
        }
        let votes: [JSONValue] = tracker.votes.sorted { $0.value.at > $1.value.at }.map { server, vote in
            .object([
                "server": .string(server.description), "verdict": .string(vote.reachability.rawValue),
                "seconds_ago": seconds(vote.at),
            ])
        }
        var serverObject: [String: JSONValue] = ["enabled": .bool(server != nil)]
        if let server {
            let answered = server.counters.answers.sorted { $0.key.rawValue < $1.key.rawValue }
            serverObject["answers"] = .object(
                Dictionary(uniqueKeysWithValues: answered.map { ($0.key.description, .number($0.value)) }))
        }
        var result: [String: JSONValue] = [
            "reachability": .string(tracker.reachability.rawValue),
            "confidence": .number(tracker.confidence),
            "observed_ips": .array(tracker.observedIPs.map { .string($0.description) }),
            "checked_addrs": .array(tracker.candidates.map { .string($0.description) }),
            "servers": .array(tracker.servers.keys.map(\.description).sorted().map { .string($0) }),
            "votes": .array(votes),
            "answers": .array(answers),
            "autonat_server": .object(serverObject),
            "relay_reservations": .array([]),
        ]
        // The reservations this node holds at relays, and its own relay service's state and usage.
        if let relay { result.merge(relay) { $1 } }
        return .object(result)
    }
}
