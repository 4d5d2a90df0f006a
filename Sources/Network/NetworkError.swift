/// The one error type of the `Network` module.
public struct NetworkError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// An address cannot be dialled or listened on (unsupported protocols, missing /p2p, DNS).
        case invalidAddress = "invalid_address"
        /// The TCP connection could not be made.
        case connectionFailed = "connection_failed"
        /// The connection was closed (by either side) while an operation was in progress.
        case connectionClosed = "connection_closed"
        /// No protocol offered was supported by the peer.
        case protocolNotSupported = "protocol_not_supported"
        /// A limit was reached (connections, handshakes in flight, streams).
        case resourceLimit = "resource_limit"
        /// A limit refused the peer or the address: the deny list, or a resource limit at admission.
        case refused
        /// A setting (a limits file, a flag) is not valid.
        case invalidConfiguration = "invalid_configuration"
        /// The operation did not finish in time.
        case timeout
        /// The peer answered with something the protocol does not allow.
        case protocolViolation = "protocol_violation"
        /// The host is shut down.
        case shutdown
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
