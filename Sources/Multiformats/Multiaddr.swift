#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A multiaddr (multiformats/multiaddr): a self-describing network address such as
/// `/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…`, in text and binary form.
///
/// Parsing is strict: unknown protocols, malformed values, truncated input and overlong varints
/// are errors with a message; nothing is skipped.
public struct Multiaddr: Hashable, Sendable, CustomStringConvertible {
    /// Longest binary multiaddr accepted; far beyond any real address, small enough to bound work.
    public static let maximumByteCount = 1024
    /// Longest DNS name in a `/dns*` component (RFC 1035: 255 octets).
    public static let maximumDNSNameLength = 255

    /// One `/protocol/value` part.
    public enum Component: Hashable, Sendable {
        case ip4(IPv4Address)
        case ip6(IPv6Address)
        case dns(String)
        case dns4(String)
        case dns6(String)
        case tcp(UInt16)
        case udp(UInt16)
        case quicV1
        /// A peer id, as its multihash.
        case p2p(Multihash)
        case p2pCircuit

        /// The component's protocol.
        public var `protocol`: MultiaddrProtocol {
            switch self {
            case .ip4: .ip4
            case .ip6: .ip6
            case .dns: .dns
            case .dns4: .dns4
            case .dns6: .dns6
            case .tcp: .tcp
            case .udp: .udp
            case .quicV1: .quicV1
            case .p2p: .p2p
            case .p2pCircuit: .p2pCircuit
            }
        }
    }

    /// The components, outermost first.
    public var components: [Component]

    /// Creates a multiaddr from components.
    public init(_ components: [Component]) {
        self.components = components
    }

    // MARK: Text

    /// Parses the text form, e.g. `/ip4/127.0.0.1/tcp/4001`.
    /// - Throws: `MultiformatsError` naming the component that is wrong.
    public init(_ text: String) throws(MultiformatsError) {
        guard text.utf8.count <= Self.maximumByteCount * 4 else {
            throw MultiformatsError(.tooLarge, "multiaddr text of \(text.utf8.count) bytes is over the limit")
        }
        guard text.first == "/" else {
            throw MultiformatsError(.invalidMultiaddr, "multiaddr \"\(text)\" must start with '/'")
        }
        var parts = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !(parts.count == 1 && parts.first == "") else {
            throw MultiformatsError(.invalidMultiaddr, "multiaddr \"/\" has no components")
        }
        var components: [Component] = []
        while let name = parts.popFirst() {
            guard !name.isEmpty else {
                throw MultiformatsError(.invalidMultiaddr, "multiaddr \"\(text)\" has an empty component")
            }
            guard let proto = MultiaddrProtocol(name: name) else {
                throw MultiformatsError(.unknownProtocol, "unknown multiaddr protocol \"\(name)\" in \"\(text)\"")
            }
            if case .none = proto.valueLayout {
                components.append(try Component(proto, text: ""))
                continue
            }
            guard let value = parts.popFirst(), !value.isEmpty else {
                throw MultiformatsError(.invalidMultiaddr, "multiaddr protocol /\(proto.name) is missing its value")
            }
            components.append(try Component(proto, text: value))
        }
        self.components = components
        guard self.byteCount <= Self.maximumByteCount else {
            throw MultiformatsError(.tooLarge, "multiaddr is over \(Self.maximumByteCount) bytes")
        }
    }

    /// The canonical text form.
    public var description: String {
        var text = ""
        for component in components {
            text += "/" + component.protocol.name
            if let value = component.textValue {
                text += "/" + value
            }
        }
        return text
    }

    // MARK: Binary

    /// Parses the binary form; the whole of `bytes` must be one multiaddr.
    /// - Throws: `MultiformatsError` for unknown codes, truncation, bad varints or bad values.
    public init<Bytes: Collection<UInt8>>(bytes input: Bytes) throws(MultiformatsError) {
        guard input.count <= Self.maximumByteCount else {
            throw MultiformatsError(.tooLarge, "multiaddr of \(input.count) bytes is over \(Self.maximumByteCount)")
        }
        guard !input.isEmpty else {
            throw MultiformatsError(.invalidMultiaddr, "empty binary multiaddr")
        }
        let bytes = Array(input)
        var index = 0
        var components: [Component] = []
        while index < bytes.count {
            let code = try UVarint.read(bytes, at: &index)
            guard let proto = MultiaddrProtocol(rawValue: code) else {
                throw MultiformatsError(.unknownProtocol, "unknown multiaddr protocol code \(code)")
            }
            let length: Int
            switch proto.valueLayout {
            case .none: length = 0
            case .fixed(let size): length = size
            case .lengthPrefixed:
                let declared = try UVarint.read(bytes, at: &index)
                guard declared <= UInt64(bytes.count - index) else {
                    throw MultiformatsError(
                        .truncated, "/\(proto.name) value claims \(declared) bytes, only \(bytes.count - index) remain")
                }
                length = Int(declared)
            }
            guard length <= bytes.count - index else {
                throw MultiformatsError(.truncated, "/\(proto.name) value needs \(length) bytes, only \(bytes.count - index) remain")
            }
            components.append(try Component(proto, binary: bytes[index..<(index + length)]))
            index += length
        }
        self.components = components
    }

    /// The binary form.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        for component in components {
            UVarint.encode(component.protocol.rawValue, into: &bytes)
            component.appendBinaryValue(to: &bytes)
        }
        return bytes
    }

    var byteCount: Int {
        var count = 0
        for component in components {
            var value: [UInt8] = []
            component.appendBinaryValue(to: &value)
            count += UVarint.encodedLength(component.protocol.rawValue) + value.count
        }
        return count
    }

    // MARK: Convenience

    /// The peer id multihash of the last `/p2p/` component, if any.
    public var peerIDMultihash: Multihash? {
        for component in components.reversed() {
            if case .p2p(let multihash) = component { return multihash }
        }
        return nil
    }

    /// A copy with `component` appended.
    public func appending(_ component: Component) -> Multiaddr {
        Multiaddr(components + [component])
    }
}

extension Multiaddr.Component {
    init(_ proto: MultiaddrProtocol, text: Substring) throws(MultiformatsError) {
        switch proto {
        case .ip4: self = .ip4(try IPv4Address(text))
        case .ip6: self = .ip6(try IPv6Address(text))
        case .dns, .dns4, .dns6:
            let name = String(text)
            guard name.utf8.count <= Multiaddr.maximumDNSNameLength else {
                throw MultiformatsError(.invalidMultiaddr, "/\(proto.name) name is over 255 bytes")
            }
            self = Self.dnsComponent(proto, name)
        case .tcp, .udp:
            guard let port = UInt16(text), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw MultiformatsError(.invalidMultiaddr, "/\(proto.name) port \"\(text)\" is not a number from 0 to 65535")
            }
            self = proto == .tcp ? .tcp(port) : .udp(port)
        case .p2p:
            do {
                self = .p2p(try PeerIDText.decode(text))
            } catch {
                throw MultiformatsError(.invalidMultiaddr, "/p2p value \"\(text)\" is not a peer id: \(error.message)")
            }
        case .quicV1: self = .quicV1
        case .p2pCircuit: self = .p2pCircuit
        }
    }

    init(_ proto: MultiaddrProtocol, binary value: ArraySlice<UInt8>) throws(MultiformatsError) {
        switch proto {
        case .ip4:
            self = .ip4(IPv4Address(value.reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }))
        case .ip6:
            self = .ip6(IPv6Address(bytes: Array(value)))
        case .tcp, .udp:
            let port = UInt16(value[value.startIndex]) << 8 | UInt16(value[value.startIndex + 1])
            self = proto == .tcp ? .tcp(port) : .udp(port)
        case .dns, .dns4, .dns6:
            guard !value.isEmpty, value.count <= Multiaddr.maximumDNSNameLength else {
                throw MultiformatsError(.invalidMultiaddr, "/\(proto.name) name must be 1 to 255 bytes")
            }
            guard let name = String(validating: value, as: UTF8.self), !name.contains("/") else {
                throw MultiformatsError(.invalidMultiaddr, "/\(proto.name) name is not valid UTF-8 without '/'")
            }
            self = Self.dnsComponent(proto, name)
        case .p2p:
            do {
                self = .p2p(try Multihash(bytes: value))
            } catch {
                throw MultiformatsError(.invalidMultiaddr, "/p2p value is not a peer id multihash: \(error.message)")
            }
        case .quicV1: self = .quicV1
        case .p2pCircuit: self = .p2pCircuit
        }
    }

    private static func dnsComponent(_ proto: MultiaddrProtocol, _ name: String) -> Self {
        switch proto {
        case .dns4: .dns4(name)
        case .dns6: .dns6(name)
        default: .dns(name)
        }
    }

    var textValue: String? {
        switch self {
        case .ip4(let address): address.description
        case .ip6(let address): address.description
        case .dns(let name), .dns4(let name), .dns6(let name): name
        case .tcp(let port), .udp(let port): String(port)
        case .p2p(let multihash): PeerIDText.base58(multihash)
        case .quicV1, .p2pCircuit: nil
        }
    }

    func appendBinaryValue(to bytes: inout [UInt8]) {
        switch self {
        case .ip4(let address):
            bytes.append(contentsOf: address.bytes)
        case .ip6(let address):
            bytes.append(contentsOf: address.bytes)
        case .tcp(let port), .udp(let port):
            bytes.append(UInt8(port >> 8))
            bytes.append(UInt8(port & 0xff))
        case .dns(let name), .dns4(let name), .dns6(let name):
            UVarint.encode(UInt64(name.utf8.count), into: &bytes)
            bytes.append(contentsOf: name.utf8)
        case .p2p(let multihash):
            let value = multihash.bytes
            UVarint.encode(UInt64(value.count), into: &bytes)
            bytes.append(contentsOf: value)
        case .quicV1, .p2pCircuit:
            break
        }
    }
}

/// An IPv4 address.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The address in host byte order (`127.0.0.1` is `0x7f00_0001`).
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad text. Only the plain form is accepted: four decimal octets 0–255 without
    /// leading zeros (a leading zero reads as octal to some parsers, so it is ambiguous).
    public init(_ text: Substring) throws(MultiformatsError) {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else {
            throw MultiformatsError(.invalidMultiaddr, "\"\(text)\" is not an IPv4 address")
        }
        var value: UInt32 = 0
        for octet in octets {
            guard (1...3).contains(octet.utf8.count), octet.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                !(octet.utf8.count > 1 && octet.utf8.first == 0x30), let number = UInt32(octet), number <= 255
            else {
                throw MultiformatsError(.invalidMultiaddr, "\"\(text)\" is not an IPv4 address")
            }
            value = value << 8 | number
        }
        self.value = value
    }

    public var bytes: [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }

    public var description: String {
        "\(value >> 24).\((value >> 16) & 0xff).\((value >> 8) & 0xff).\(value & 0xff)"
    }
}

/// An IPv6 address; text is parsed and printed by the C library (`inet_pton`/`inet_ntop`), which
/// prints the RFC 5952 canonical form.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes in network order.
    public let bytes: [UInt8]

    /// - Precondition: `bytes.count == 16`.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        self.bytes = bytes
    }

    public init(_ text: Substring) throws(MultiformatsError) {
        var address = in6_addr()
        let parsed = String(text).withCString { inet_pton(AF_INET6, $0, &address) }
        guard parsed == 1 else {
            throw MultiformatsError(.invalidMultiaddr, "\"\(text)\" is not an IPv6 address")
        }
        self.bytes = withUnsafeBytes(of: &address) { Array($0) }
    }

    public var description: String {
        var address = in6_addr()
        withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let result = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
        precondition(result != nil, "inet_ntop failed on a 16-byte address")
        return String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
