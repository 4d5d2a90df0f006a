/// The one error type of the control API, server and client side (spec/control-api.md §5).
///
/// A method handler throws it to answer with a JSON-RPC error: `.invalidParams("…")` becomes code
/// -32602, `.notFound("…")` -32001, and so on (``JSONRPCErrorCode``). Any other error a handler throws
/// is answered as -32000 `failed` with the error's description.
///
/// The client throws it too: `daemonUnreachable` (nothing listens on the socket), `timeout`,
/// `remoteError` (the daemon answered with an error; ``code`` and ``detail`` carry its code and
/// `kind`), `protocolError` (the daemon's bytes are not JSON-RPC) and `connectionClosed`.
public struct ControlAPIError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// A request line is not valid JSON (bad syntax, invalid UTF-8, nested too deep). -32700.
        case parseError = "parse_error"
        /// A request is not a JSON-RPC 2.0 request object (or is a batch, or is too long). -32600.
        case invalidRequest = "invalid_request"
        /// No method of that name. -32601.
        case methodNotFound = "method_not_found"
        /// The params do not fit the method. -32602.
        case invalidParams = "invalid_params"
        /// A bug in the daemon (e.g. a response it cannot encode). -32603.
        case internalError = "internal_error"
        /// The operation failed. -32000.
        case failed
        /// The thing asked for does not exist. -32001.
        case notFound = "not_found"
        /// The params are well-formed but their content is refused (a bad name, a bad record). -32002.
        case invalidInput = "invalid_input"
        /// The operation, or on the client side the call, did not finish in time. -32003.
        case timeout
        /// Another live daemon answers on the socket path.
        case alreadyRunning = "already_running"
        /// The socket could not be created, bound, secured or removed.
        case socketFailure = "socket_failure"
        /// A subscriber did not read its notifications and its unsent bytes passed the limit; the
        /// server dropped it.
        case slowConsumer = "slow_consumer"
        /// The connection is closed (the client went away, or the daemon closed it).
        case connectionClosed = "connection_closed"
        /// Client: nothing listens on the socket (no socket file, or connection refused).
        case daemonUnreachable = "daemon_unreachable"
        /// Client: the daemon answered with a JSON-RPC error; see ``code`` and ``detail``.
        case remoteError = "remote_error"
        /// Client: the daemon sent something that is not a JSON-RPC response or notification.
        case protocolError = "protocol_error"
    }

    public let kind: Kind
    /// What went wrong, in words a person can act on.
    public let message: String
    /// For `remoteError`: the JSON-RPC error code the daemon answered with.
    public let code: Int?
    /// A finer, stable `kind` string: for a handler's error, what goes into `data.kind` in place of
    /// ``kind`` (e.g. `"name_held"` for an `invalidInput`); for `remoteError`, the daemon's `data.kind`.
    public let detail: String?

    public init(_ kind: Kind, _ message: String, code: Int? = nil, detail: String? = nil) {
        self.kind = kind
        self.message = message
        self.code = code
        self.detail = detail
    }

    public var description: String { message }

    /// The `kind` string this error carries on the wire (`data.kind`).
    public var wireKind: String { detail ?? kind.rawValue }

    /// -32602: the params do not fit the method.
    public static func invalidParams(_ message: String, kind: String? = nil) -> ControlAPIError {
        ControlAPIError(.invalidParams, message, detail: kind)
    }

    /// -32001: the thing asked for does not exist.
    public static func notFound(_ message: String, kind: String? = nil) -> ControlAPIError {
        ControlAPIError(.notFound, message, detail: kind)
    }

    /// -32002: the input is well-formed but refused.
    public static func invalidInput(_ message: String, kind: String? = nil) -> ControlAPIError {
        ControlAPIError(.invalidInput, message, detail: kind)
    }

    /// -32000: the operation failed.
    public static func failed(_ message: String, kind: String? = nil) -> ControlAPIError {
        ControlAPIError(.failed, message, detail: kind)
    }

    /// -32003: the operation did not finish in time.
    public static func timeout(_ message: String, kind: String? = nil) -> ControlAPIError {
        ControlAPIError(.timeout, message, detail: kind)
    }
}
