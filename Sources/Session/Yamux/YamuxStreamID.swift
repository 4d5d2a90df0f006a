/// A yamux stream identifier.
///
/// yamux spec, "StreamID Field": "The client side should use odd ID's, and the server even. This
/// prevents any collisions. Additionally, the 0 ID is reserved to represent the session."
public struct YamuxStreamID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    public init(integerLiteral value: UInt32) { self.rawValue = value }

    /// The session itself: pings and GoAway use it, streams never do.
    public static let session = YamuxStreamID(0)

    /// Whether the id is one a client opens (odd). The session id 0 is neither client's nor server's.
    public var isClientInitiated: Bool { rawValue & 1 == 1 }

    public static func < (lhs: YamuxStreamID, rhs: YamuxStreamID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(rawValue) }
}
