/// Limits and time rules of `.agent` records (spec/records.md, "Limits" and "Validation").
public enum RecordLimits {
    /// DESIGN §4: a record is at most 8192 bytes, signature included.
    public static let maximumRecordSize = 8192
    /// A record whose timestamp is more than 7 days old is rejected, whatever its TTL.
    public static let maximumAge: UInt64 = 7 * 24 * 3600
    /// Clock skew tolerated for timestamps in the future.
    public static let maximumClockSkew: UInt64 = 5 * 60
    /// Shortest TTL: shorter would make owners republish faster than the DHT spreads a record.
    public static let minimumTTL: UInt32 = 60
    /// Longest TTL: a record never outlives the maximum age.
    public static let maximumTTL: UInt32 = UInt32(maximumAge)
    /// Default TTL used by `agentctl record create` and the daemon: 24 hours.
    public static let defaultTTL: UInt32 = 24 * 3600
    /// At most this many addresses per record.
    public static let maximumAddresses = 32
    /// At most this many protocol ids per record.
    public static let maximumProtocols = 64
    /// Longest protocol id, in bytes.
    public static let maximumProtocolLength = 256
}
