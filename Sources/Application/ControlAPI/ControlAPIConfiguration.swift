import NIOCore

/// Limits of the control API server (spec/control-api.md §3). Every buffer the server keeps for a
/// client is bounded by one of these; together they bound the memory one client can make it use to
/// about `maxLineLength + maxOutboundBytes` (plus one socket read).
public struct ControlAPIConfiguration: Sendable, Hashable {
    /// spec §3: a request line is at most 1 MiB, excluding its newline.
    public static let defaultMaxLineLength = 1 << 20
    /// spec §3: arrays and objects nest at most 64 levels.
    public static let defaultMaxNestingDepth = 64
    /// spec §3: a response or notification line is at most 16 MiB; the client's line limit.
    public static let defaultMaxResponseLength = 16 << 20

    /// The longest request line accepted, excluding the newline. A longer line is answered with
    /// -32600 `line_too_long` and the connection is closed.
    public var maxLineLength = defaultMaxLineLength
    /// The deepest nesting of arrays and objects accepted in a request.
    public var maxNestingDepth = defaultMaxNestingDepth
    /// Requests of one connection being handled at once (a running subscription counts as one).
    /// At the limit the server stops reading from that connection until one finishes.
    public var maxConcurrentRequestsPerConnection = 64
    /// Bytes written to one connection and not yet taken by its socket. Above the limit the server
    /// stops reading that connection's requests; a notification that would pass it drops the
    /// subscriber (the connection is closed, with a warning logged).
    public var maxOutboundBytesPerConnection = 4 << 20
    /// Connections served at once. A connection beyond it gets one -32000 `too_many_connections`
    /// error line and is closed.
    public var maxConnections = 256
    /// The longest response the server sends; a longer result is answered with -32603 instead.
    public var maxResponseLength = defaultMaxResponseLength
    /// At shutdown, how long a connection may take to receive its `shutting_down` answers before
    /// it is closed regardless (a client that does not read would otherwise hold the shutdown).
    public var shutdownGracePeriod: TimeAmount = .seconds(2)

    public init() {}
}

/// Limits and defaults of the control API client.
public struct ControlAPIClientConfiguration: Sendable, Hashable {
    /// How long a call waits for its response, unless the call names its own timeout.
    public var callTimeout: Duration = .seconds(30)
    /// How long connecting may take.
    public var connectTimeout: Duration = .seconds(5)
    /// The longest response or notification line accepted from the daemon.
    public var maxLineLength = ControlAPIConfiguration.defaultMaxResponseLength
    /// The deepest nesting accepted in a response.
    public var maxNestingDepth = ControlAPIConfiguration.defaultMaxNestingDepth
    /// Notifications held for a subscriber that has not consumed them yet; past this the client
    /// stops reading the socket until the subscriber catches up (and the daemon, in turn, drops a
    /// subscriber that stays behind).
    public var notificationBufferSize = 64

    public init() {}
}
