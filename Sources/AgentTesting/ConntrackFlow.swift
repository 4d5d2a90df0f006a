/// One flow of a router's connection-tracking table, as `conntrack -L` prints it:
/// `tcp 6 119 ESTABLISHED src=198.19.1.2 dst=198.18.0.1 sport=40123 dport=4001 src=198.18.0.1
/// dst=198.18.0.11 sport=4001 dport=40123 [ASSURED] mark=0 use=1`. The first tuple is the packet
/// as the router received it from the LAN; the second is the reply it expects, whose destination
/// is the NAT mapping (the router's WAN address and the port it chose).
public struct ConntrackFlow: Sendable, Hashable, CustomStringConvertible {
    public struct Tuple: Sendable, Hashable, CustomStringConvertible {
        public var source: String
        public var destination: String
        public var sourcePort: Int?
        public var destinationPort: Int?

        public var description: String {
            "\(source):\(sourcePort.map(String.init) ?? "-")→\(destination):\(destinationPort.map(String.init) ?? "-")"
        }
    }

    /// `tcp`, `udp`, …
    public var transport: String
    /// The TCP state (`SYN_SENT`, `SYN_SENT2`, `ESTABLISHED`, `TIME_WAIT`, …); `nil` for UDP.
    public var state: String?
    /// The first packet's direction, as it arrived.
    public var original: Tuple
    /// The expected reply, after NAT.
    public var reply: Tuple
    /// `ASSURED` (traffic seen both ways), `UNREPLIED`, …
    public var flags: Set<String>

    /// The port the router's NAT gave the flow on its WAN side (the reply's destination port).
    public var mappedPort: Int? { reply.destinationPort }

    /// Whether the NAT kept the LAN host's source port.
    public var isPortPreserved: Bool { original.sourcePort != nil && original.sourcePort == reply.destinationPort }

    public var isAssured: Bool { flags.contains("ASSURED") }

    public var description: String {
        "\(transport) \(state ?? "") \(original) reply \(reply) \(flags.sorted().joined(separator: ","))"
    }

    /// Parses `conntrack -L` output (one flow per line; lines that are not flows are skipped).
    public static func parse(_ text: String) -> [ConntrackFlow] {
        text.split(separator: "\n").compactMap { parse(line: $0) }
    }

    static func parse(line: Substring) -> ConntrackFlow? {
        let fields = line.split(whereSeparator: \.isWhitespace)
        guard fields.count > 3, Int(fields[1]) != nil else { return nil }
        var state: String?
        var flags: Set<String> = []
        var tuples: [Tuple] = []
        var current: Tuple?
        for field in fields.dropFirst(2) {
            if field.hasPrefix("[") && field.hasSuffix("]") {
                flags.insert(String(field.dropFirst().dropLast()))
                continue
            }
            guard let equals = field.firstIndex(of: "=") else {
                // The timeout (a number), then the TCP state.
                if Int(field) == nil, state == nil, tuples.isEmpty, current == nil { state = String(field) }
                continue
            }
            let key = field[..<equals]
            let value = String(field[field.index(after: equals)...])
            switch key {
            case "src":
                if let done = current { tuples.append(done) }
                current = Tuple(source: value, destination: "", sourcePort: nil, destinationPort: nil)
            case "dst": current?.destination = value
            case "sport": current?.sourcePort = Int(value)
            case "dport": current?.destinationPort = Int(value)
            default: continue
            }
        }
        if let done = current { tuples.append(done) }
        guard tuples.count == 2 else { return nil }
        return ConntrackFlow(
            transport: String(fields[0]), state: state, original: tuples[0], reply: tuples[1], flags: flags)
    }
}
