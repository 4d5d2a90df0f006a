import NIOConcurrencyHelpers

/// The client connection as a subscription handler sees it: it sends the response once, then
/// notifications (spec/control-api.md §6).
///
/// Backpressure (decided: drop, never pause and never buffer without bound): ``notify(_:_:)``
/// never waits. It counts the bytes handed to the connection and not yet taken by the socket; when
/// a notification would take that count past ``ControlAPIConfiguration/maxOutboundBytesPerConnection``
/// the subscriber is dropped — a warning is logged, the connection is closed, and `notify` throws
/// `slowConsumer`. A source that produces faster than one client reads thus costs the daemon a
/// bounded amount of memory, and the other clients are unaffected.
public final class ControlAPISubscriber: Sendable {
    private let connection: ControlAPIServerConnection
    private let requestID: JSONValue?
    private let token: UInt64
    private let accepted = NIOLockedValueBox(false)

    init(connection: ControlAPIServerConnection, requestID: JSONValue?, token: UInt64) {
        self.connection = connection
        self.requestID = requestID
        self.token = token
    }

    /// Sends the response to the subscribe request (`result`, e.g. a subscription id). Call it once,
    /// before the first notification. Throws `connectionClosed` when the client has gone.
    public func accept(_ result: JSONValue = .null) throws(ControlAPIError) {
        let first = accepted.withLockedValue { accepted in
            defer { accepted = true }
            return !accepted
        }
        precondition(first, "ControlAPISubscriber.accept called twice")
        guard let requestID else { return }
        try connection.send(JSONRPCResponse.success(id: requestID, result: result), as: .response, answering: token)
    }

    /// Sends the notification `{"jsonrpc":"2.0","method":method,"params":params}` (no `params`
    /// member when `params` is `.null`). Never waits; throws `connectionClosed` when the client has
    /// gone, `slowConsumer` when the client is too far behind and has been dropped.
    public func notify(_ method: String, _ params: JSONValue = .null) throws(ControlAPIError) {
        precondition(isAccepted, "ControlAPISubscriber.notify called before accept")
        try connection.send(JSONRPCResponse.notification(method: method, params: params), as: .notification)
    }

    /// False once the client has disconnected or been dropped.
    public var isConnected: Bool { !connection.isClosed }

    var isAccepted: Bool { accepted.withLockedValue { $0 } }
}
