import Application
import NIOConcurrencyHelpers
import Network

/// One event of the node, as a line on agentd's stdout beside the ready line and as a control API
/// notification (`events.subscribe`): `{"event": name, …fields}` (README, "Event lines").
public struct NodeEvent: Sendable, Hashable {
    public let name: String
    public let fields: [String: JSONValue]

    public init(_ name: String, _ fields: [String: JSONValue]) {
        precondition(fields["event"] == nil, "an event's fields cannot hold \"event\"")
        self.name = name
        self.fields = fields
    }

    /// The JSON object: `fields` with `"event": name`.
    public var json: JSONValue {
        var object = fields
        object["event"] = .string(name)
        return .object(object)
    }

    /// The object as one line of compact JSON (keys sorted), without the newline.
    public var jsonLine: String { json.jsonText }

    /// `{"event":"autonat","verdict":"public|private|unknown","confidence":N}`.
    public static func autonat(_ reachability: Reachability, confidence: Int) -> NodeEvent {
        NodeEvent("autonat", ["verdict": .string(reachability.rawValue), "confidence": .number(confidence)])
    }
}

/// Hands each `NodeEvent` to the daemon's output (`onPublish`, agentd's stdout) and to every
/// subscriber (`events.subscribe`), in the order published. A subscriber's buffer is bounded: one
/// that does not keep up loses the oldest events (the control API drops a client that does not read
/// its socket anyway). Subscriptions end when the node stops (`finish`).
public final class NodeEvents: Sendable {
    private struct State {
        var subscribers: [Int: AsyncStream<NodeEvent>.Continuation] = [:]
        var nextID = 0
        var finished = false
    }

    private let state = NIOLockedValueBox(State())
    private let onPublish: @Sendable (NodeEvent) -> Void

    public init(onPublish: @escaping @Sendable (NodeEvent) -> Void = { _ in }) {
        self.onPublish = onPublish
    }

    /// Events published from now on.
    public func subscribe(bufferSize: Int = 256) -> AsyncStream<NodeEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: NodeEvent.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = state.withLockedValue { state -> Int? in
            guard !state.finished else { return nil }
            defer { state.nextID += 1 }
            state.subscribers[state.nextID] = continuation
            return state.nextID
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    public func publish(_ event: NodeEvent) {
        // Under the lock, so that two publishers reach the output and every subscriber in one order.
        state.withLockedValue { state in
            guard !state.finished else { return }
            onPublish(event)
            for continuation in state.subscribers.values { continuation.yield(event) }
        }
    }

    /// Ends every subscription; later ones end at once, later events are dropped.
    public func finish() {
        let continuations = state.withLockedValue { state -> [AsyncStream<NodeEvent>.Continuation] in
            state.finished = true
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}
