#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Multiformats
import NIOCore

/// An IP address of either family, as a small value: 128 bits plus the family, no allocation.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack `[::]` listener reports for an IPv4
/// peer) are IPv4 addresses here. Were they kept as IPv6, every IPv4 peer of a dual-stack node would
/// share one /64 and so one per-IP limit: a single attacker could exhaust it for all of them.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address family.
    public enum Family: Hashable, Sendable {
        case v4
        case v6

        /// Bits in an address of this family: 32 or 128.
        public var bitCount: Int { self == .v4 ? 32 : 128 }
    }

    public let family: Family
    /// The 128 bits in network order, high half first. An IPv4 address sits in the low 32 bits of `low`.
    let high: UInt64
    let low: UInt64

    init(family: Family, high: UInt64, low: UInt64) {
        self.family = family
        self.high = high
        self.low = low
    }

    /// An IPv4 address.
    public init(_ address: IPv4Address) {
        self.init(family: .v4, high: 0, low: UInt64(address.value))
    }

    /// An IPv6 address; IPv4-mapped ones (`::ffff:0:0/96`) become IPv4.
    public init(_ address: IPv6Address) {
        let bytes = address.bytes
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 0..<8 { high = high << 8 | UInt64(bytes[index]) }
        for index in 8..<16 { low = low << 8 | UInt64(bytes[index]) }
        self.init(v6High: high, low: low)
    }

    private init(v6High high: UInt64, low: UInt64) {
        if high == 0, low >> 32 == 0xffff {
            self.init(family: .v4, high: 0, low: low & 0xffff_ffff)
        } else {
            self.init(family: .v6, high: high, low: low)
        }
    }

    /// Parses `127.0.0.1` or `2001:db8::1` (the forms `IPv4Address` and `IPv6Address` accept).
    /// - Throws: `NetworkError.invalidAddress` naming the text.
    public init(_ text: some StringProtocol) throws(NetworkError) {
        let text = Substring(text)
        // inet_pton reads a C string: a NUL inside would cut "::1\0junk" down to "::1". Only the
        // characters of the two notations pass, and no more than the longest IPv6 text (45).
        guard text.utf8.count <= 45,
            text.utf8.allSatisfy({ Self.isAddressCharacter($0) })
        else {
            throw NetworkError(.invalidAddress, "\"\(Self.printable(text))\" is not an IPv4 or IPv6 address")
        }
        do {
            if text.contains(":") {
                self.init(try IPv6Address(text))
            } else {
                self.init(try IPv4Address(text))
            }
        } catch {
            throw NetworkError(.invalidAddress, "\"\(Self.printable(text))\" is not an IPv4 or IPv6 address")
        }
    }

    /// The IP address of a socket address, read from the `sockaddr` without going through text;
    /// `nil` for Unix domain sockets.
    public init?(_ socketAddress: SocketAddress) {
        switch socketAddress {
        case .v4(let address):
            self.init(family: .v4, high: 0, low: UInt64(UInt32(bigEndian: address.address.sin_addr.s_addr)))
        case .v6(let address):
            var bytes = address.address.sin6_addr
            let (high, low) = withUnsafeBytes(of: &bytes) { raw -> (UInt64, UInt64) in
                var high: UInt64 = 0
                var low: UInt64 = 0
                for index in 0..<8 { high = high << 8 | UInt64(raw[index]) }
                for index in 8..<16 { low = low << 8 | UInt64(raw[index]) }
                return (high, low)
            }
            self.init(v6High: high, low: low)
        case .unixDomainSocket:
            return nil
        }
    }

    /// The IP address an `/ip4/…` or `/ip6/…` multiaddr starts with; `nil` for any other address.
    public init?(_ multiaddr: Multiaddr) {
        switch multiaddr.components.first {
        case .ip4(let address)?: self.init(address)
        case .ip6(let address)?: self.init(address)
        default: return nil
        }
    }

    /// `127.0.0.1` or the RFC 5952 form of an IPv6 address.
    public var description: String {
        switch family {
        case .v4:
            return IPv4Address(UInt32(truncatingIfNeeded: low)).description
        case .v6:
            var bytes = [UInt8](repeating: 0, count: 16)
            for index in 0..<8 {
                bytes[index] = UInt8(truncatingIfNeeded: high >> (56 - 8 * index))
                bytes[8 + index] = UInt8(truncatingIfNeeded: low >> (56 - 8 * index))
            }
            return IPv6Address(bytes: bytes).description
        }
    }

    private static func isAddressCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: ":"), UInt8(ascii: "."):
            true
        default: false
        }
    }

    /// At most 64 characters of hostile text, for error messages.
    static func printable(_ text: Substring) -> String {
        let head = text.prefix(64).unicodeScalars.map {
            $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f ? Character($0) : "?"
        }
        return String(head) + (text.count > 64 ? "…" : "")
    }
}

/// An IP network in CIDR notation: `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 (IPv4) or
/// /128 (IPv6) network holding only itself.
///
/// It is also the key of the subnet an address falls in, for per-subnet limits:
/// `IPNetwork(containing: address, prefixLength: 24)` is the /24 around an IPv4 address. The
/// `subnetPrefixLengths` name the two sizes the resource manager and the routing table count by
/// (RFC 6177 hands an IPv6 end site a /48 and a LAN a /64; one IPv4 host is a /32, one LAN a /24).
///
/// The value is a few words, hashable without allocating: cheap to use as a dictionary key on every
/// accepted connection.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The network address, host bits zero.
    public let address: IPAddress
    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    public let prefixLength: Int

    /// Prefix lengths for "one host" and "one site" per family: IPv4 /32 and /24, IPv6 /64 and /48.
    public static func subnetPrefixLengths(_ family: IPAddress.Family) -> (host: Int, site: Int) {
        family == .v4 ? (32, 24) : (64, 48)
    }

    /// The network of `prefixLength` bits that holds `address` (its host bits cleared).
    /// - Precondition: `prefixLength` is within 0 and the family's bit count (a bug of ours otherwise).
    public init(containing address: IPAddress, prefixLength: Int) {
        precondition(
            (0...address.family.bitCount).contains(prefixLength),
            "prefix length \(prefixLength) out of range for \(address.family)")
        let (highMask, lowMask) = Self.masks(address.family, prefixLength)
        self.address = IPAddress(family: address.family, high: address.high & highMask, low: address.low & lowMask)
        self.prefixLength = prefixLength
    }

    /// Parses `ADDRESS/PREFIX` or a bare `ADDRESS`.
    ///
    /// Strict, because this text comes from flags, files and the control API, where a typo must not
    /// silently block or trust a wider range than meant: the prefix is decimal without sign or leading
    /// zeros and within the family's bits, and the address has no bits set past the prefix
    /// (`10.0.0.1/8` is refused with a hint to write `10.0.0.0/8`).
    /// - Throws: `NetworkError.invalidAddress` with a message naming the problem.
    public init(_ text: some StringProtocol) throws(NetworkError) {
        let text = Substring(text)
        guard text.utf8.count <= 64 else {
            throw NetworkError(.invalidAddress, "\"\(IPAddress.printable(text))\" is too long for an IP network")
        }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = try IPAddress(parts[0])
        guard parts.count == 2 else {
            self.init(containing: address, prefixLength: address.family.bitCount)
            return
        }
        let prefix = parts[1]
        let bits = address.family.bitCount
        guard (1...3).contains(prefix.utf8.count), prefix.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            !(prefix.utf8.count > 1 && prefix.utf8.first == 0x30), let length = Int(prefix), length <= bits
        else {
            throw NetworkError(
                .invalidAddress,
                "\"\(IPAddress.printable(text))\": the prefix length must be a number from 0 to \(bits)")
        }
        self.init(containing: address, prefixLength: length)
        guard self.address == address else {
            throw NetworkError(
                .invalidAddress,
                "\"\(IPAddress.printable(text))\" has bits set past its /\(length) prefix; the network is \(self)")
        }
    }

    /// Whether `address` is in this network (always false across families).
    public func contains(_ address: IPAddress) -> Bool {
        guard address.family == self.address.family else { return false }
        let (highMask, lowMask) = Self.masks(address.family, prefixLength)
        return address.high & highMask == self.address.high && address.low & lowMask == self.address.low
    }

    /// `10.0.0.0/8`, `2001:db8::/32`; always with the prefix.
    public var description: String { "\(address)/\(prefixLength)" }

    private static func masks(_ family: IPAddress.Family, _ prefixLength: Int) -> (high: UInt64, low: UInt64) {
        // A prefix of the 128-bit value; IPv4 lives in the low 32 bits, so its prefix starts at bit 96.
        let bits = family == .v4 ? prefixLength + 96 : prefixLength
        let high: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : ~(UInt64.max >> bits))
        let lowBits = bits - 64
        let low: UInt64 = lowBits <= 0 ? 0 : (lowBits >= 64 ? .max : ~(UInt64.max >> lowBits))
        return (high, low)
    }
}
