/// A method handler: params in (`.null` when the request has none), result out. Throw a
/// ``ControlAPIError`` (`.invalidParams`, `.notFound`, `.invalidInput`, `.failed`, `.timeout`) to
/// answer with its JSON-RPC error; any other error is answered as -32000 `failed`. The task is
/// cancelled when the client disconnects or the server shuts down.
public typealias ControlAPIMethodHandler = @Sendable (_ params: JSONValue) async throws -> JSONValue

/// A subscription handler: it checks the params (throwing answers with an error, as for a method),
/// calls ``ControlAPISubscriber/accept(_:)`` to send the response, then sends notifications with
/// ``ControlAPISubscriber/notify(_:_:)`` until the client disconnects (its task is cancelled and
/// `notify` throws `connectionClosed`) or the subscriber is dropped (`notify` throws `slowConsumer`).
/// When it returns or throws after accepting, the subscription is over and the server closes the
/// connection, so the client's notification stream ends.
public typealias ControlAPISubscriptionHandler =
    @Sendable (_ params: JSONValue, _ subscriber: ControlAPISubscriber) async throws -> Void

/// The methods a control API server answers, by name.
public struct ControlAPIMethods: Sendable {
    enum Handler: Sendable {
        case call(ControlAPIMethodHandler)
        case subscription(ControlAPISubscriptionHandler)
    }

    private(set) var handlers: [String: Handler] = [:]

    public init() {}

    /// Registers a method. Names are unique; `rpc.` names are reserved by JSON-RPC.
    public mutating func register(_ method: String, _ handler: @escaping ControlAPIMethodHandler) {
        add(method, .call(handler))
    }

    /// Registers a subscription method (see ``ControlAPISubscriptionHandler``).
    public mutating func registerSubscription(_ method: String, _ handler: @escaping ControlAPISubscriptionHandler) {
        add(method, .subscription(handler))
    }

    /// The registered method names, sorted.
    public var names: [String] { handlers.keys.sorted() }

    func handler(for method: String) -> Handler? { handlers[method] }

    private mutating func add(_ method: String, _ handler: Handler) {
        precondition(!method.isEmpty, "a control API method needs a name")
        precondition(!method.hasPrefix("rpc."), "JSON-RPC 2.0 §4 reserves method names that begin with rpc.: \(method)")
        precondition(handlers[method] == nil, "control API method \(method) is registered twice")
        handlers[method] = handler
    }
}
