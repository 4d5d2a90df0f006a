/// JSON-RPC 2.0 (https://www.jsonrpc.org/specification) as the control API uses it: the error
/// codes, request validation, and the response, error and notification objects.
public enum JSONRPCErrorCode {
    /// "Invalid JSON was received by the server."
    public static let parseError = -32700
    /// "The JSON sent is not a valid Request object."
    public static let invalidRequest = -32600
    /// "The method does not exist / is not available."
    public static let methodNotFound = -32601
    /// "Invalid method parameter(s)."
    public static let invalidParams = -32602
    /// "Internal JSON-RPC error."
    public static let internalError = -32603
    /// Application range (the spec reserves -32000…-32099 for the server): the operation failed.
    public static let failed = -32000
    /// The thing asked for does not exist.
    public static let notFound = -32001
    /// The input is well-formed but refused.
    public static let invalidInput = -32002
    /// The operation did not finish in time.
    public static let timeout = -32003

    /// The code an error is answered with. Kinds that are not JSON-RPC answers (a client-side or
    /// lifecycle error a handler let through) are answered as `failed`.
    public static func code(for kind: ControlAPIError.Kind) -> Int {
        switch kind {
        case .parseError: return parseError
        case .invalidRequest: return invalidRequest
        case .methodNotFound: return methodNotFound
        case .invalidParams: return invalidParams
        case .internalError: return internalError
        case .notFound: return notFound
        case .invalidInput: return invalidInput
        case .timeout: return timeout
        case .failed, .alreadyRunning, .socketFailure, .slowConsumer, .connectionClosed, .daemonUnreachable,
            .remoteError, .protocolError:
            return failed
        }
    }

    /// The short `error.message` for a code (JSON-RPC's own phrases for its codes).
    public static func standardMessage(for code: Int) -> String {
        switch code {
        case parseError: return "Parse error"
        case invalidRequest: return "Invalid Request"
        case methodNotFound: return "Method not found"
        case invalidParams: return "Invalid params"
        case internalError: return "Internal error"
        case notFound: return "Not found"
        case invalidInput: return "Invalid input"
        case timeout: return "Timeout"
        default: return "Failed"
        }
    }
}

/// A valid JSON-RPC request or notification.
struct JSONRPCRequest: Sendable {
    /// `nil` for a notification (no `id` member): it gets no response.
    var id: JSONValue?
    var method: String
    /// `.null` when `params` is absent (or null).
    var params: JSONValue

    /// A request that is not valid, with the id to answer it with.
    struct Invalid: Error {
        var id: JSONValue
        var error: ControlAPIError
    }

    /// Validates one parsed request line (JSON-RPC 2.0 §4). The id of an invalid request is echoed
    /// when it is itself valid, so a client can tell which request failed; else it is null.
    static func validate(_ value: JSONValue) -> Result<JSONRPCRequest, Invalid> {
        guard case .object(let members) = value else {
            if case .array = value {
                return .failure(
                    Invalid(
                        id: .null,
                        error: ControlAPIError(
                            .invalidRequest, "batch requests are not supported; send one request object per line",
                            detail: "batch_not_supported")))
            }
            return .failure(
                Invalid(
                    id: .null,
                    error: ControlAPIError(.invalidRequest, "a request must be a JSON object, not \(value.typeName)")))
        }
        var id: JSONValue?
        if let given = members["id"] {
            switch given {
            case .string, .number, .null: id = given
            default:
                return .failure(
                    Invalid(
                        id: .null,
                        error: ControlAPIError(
                            .invalidRequest, "id must be a string, a number or null, not \(given.typeName)")))
            }
        }
        let answerID = id ?? .null
        guard members["jsonrpc"] == .string("2.0") else {
            return .failure(Invalid(id: answerID, error: ControlAPIError(.invalidRequest, "jsonrpc must be \"2.0\"")))
        }
        guard case .string(let method)? = members["method"] else {
            let found = members["method"].map { "a \($0.typeName)" } ?? "missing"
            return .failure(
                Invalid(
                    id: answerID, error: ControlAPIError(.invalidRequest, "method must be a string (it is \(found))")))
        }
        guard !method.isEmpty else {
            return .failure(Invalid(id: answerID, error: ControlAPIError(.invalidRequest, "method must not be empty")))
        }
        let params = members["params"] ?? .null
        switch params {
        case .object, .array, .null: break
        default:
            return .failure(
                Invalid(
                    id: answerID,
                    error: ControlAPIError(
                        .invalidRequest, "params must be an object or an array, not \(params.typeName)")))
        }
        return .success(JSONRPCRequest(id: id, method: method, params: params))
    }

    /// The request as a JSON object (what the client sends).
    var json: JSONValue {
        var members: [String: JSONValue] = ["jsonrpc": "2.0", "method": .string(method)]
        if let id { members["id"] = id }
        if params != .null { members["params"] = params }
        return .object(members)
    }
}

/// The objects the server sends.
enum JSONRPCResponse {
    static func success(id: JSONValue, result: JSONValue) -> JSONValue {
        ["jsonrpc": "2.0", "id": id, "result": result]
    }

    /// `error.message` is JSON-RPC's short phrase for the code; `data.kind` is the stable kind
    /// string and `data.message` the specific sentence.
    static func failure(id: JSONValue, error: ControlAPIError) -> JSONValue {
        let code = JSONRPCErrorCode.code(for: error.kind)
        return [
            "jsonrpc": "2.0", "id": id,
            "error": [
                "code": .number(code),
                "message": .string(JSONRPCErrorCode.standardMessage(for: code)),
                "data": ["kind": .string(error.wireKind), "message": .string(error.message)],
            ],
        ]
    }

    static func notification(method: String, params: JSONValue) -> JSONValue {
        var members: [String: JSONValue] = ["jsonrpc": "2.0", "method": .string(method)]
        if params != .null { members["params"] = params }
        return .object(members)
    }
}

/// What the client receives: a response to one of its requests, or a notification.
enum JSONRPCIncoming: Sendable {
    case response(id: JSONValue, Result<JSONValue, ControlAPIError>)
    case notification(ControlAPINotification)

    /// Classifies one parsed line from the daemon; anything else is a `protocolError`.
    static func classify(_ value: JSONValue) throws(ControlAPIError) -> JSONRPCIncoming {
        guard case .object(let members) = value, members["jsonrpc"] == .string("2.0") else {
            throw ControlAPIError(.protocolError, "the daemon sent a line that is not a JSON-RPC 2.0 object")
        }
        if let id = members["id"] {
            if let result = members["result"], members["error"] == nil {
                return .response(id: id, .success(result))
            }
            if let error = members["error"], members["result"] == nil {
                guard let code = error["code"]?.intValue else {
                    throw ControlAPIError(.protocolError, "the daemon sent an error without an integer code")
                }
                let phrase = error["message"]?.stringValue ?? JSONRPCErrorCode.standardMessage(for: code)
                let message = error["data"]?["message"]?.stringValue ?? phrase
                let kind = error["data"]?["kind"]?.stringValue
                return .response(id: id, .failure(ControlAPIError(.remoteError, message, code: code, detail: kind)))
            }
            throw ControlAPIError(.protocolError, "the daemon sent a response with neither result nor error, or both")
        }
        guard case .string(let method)? = members["method"] else {
            throw ControlAPIError(.protocolError, "the daemon sent a message with neither an id nor a method")
        }
        return .notification(ControlAPINotification(method: method, params: members["params"] ?? .null))
    }
}

/// A notification from the daemon: `{"jsonrpc":"2.0","method":…,"params":…}`.
public struct ControlAPINotification: Sendable, Hashable {
    public var method: String
    /// `.null` when the notification has no params.
    public var params: JSONValue

    public init(method: String, params: JSONValue) {
        self.method = method
        self.params = params
    }
}
