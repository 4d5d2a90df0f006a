import Identity
import Multiformats

/// libp2p mDNS discovery's messages (libp2p/specs `discovery/mdns.md`), without I/O: the query for
/// `_p2p._udp.local`, our response (a PTR to `<peer-name>._p2p._udp.local` and TXT records
/// `dnsaddr=<multiaddr>/p2p/<id>`, one per address), and the peers a response announces.
public enum MDNSDiscovery {
    /// The DNS-SD service name.
    public static let serviceName = DNSName("_p2p._udp.local")
    /// At most this many peers are taken from one message, and this many addresses per peer.
    public static let maximumPeersPerMessage = 16
    public static let maximumAddressesPerPeer = 16

    /// The query: one PTR question for the service.
    public static func query() -> DNSMessage {
        DNSMessage(isResponse: false, questions: [.init(name: serviceName, type: DNSMessage.typePTR)])
    }

    /// Our response: `peerName` (random, 1–63 characters, per the spec), one TXT record per
    /// address, each address ending in `/p2p/<peer>`.
    public static func response(peerName: String, peer: PeerID, addresses: [Multiaddr], ttl: UInt32 = 120) -> DNSMessage {
        let instance = DNSName(labels: [peerName] + serviceName.labels)
        let texts = addresses.prefix(maximumAddressesPerPeer).map { address -> DNSMessage.Record in
            var full = address
            if case .p2p? = address.components.last {} else { full = address.appending(.p2p(peer.multihash)) }
            return DNSMessage.Record(name: instance, ttl: ttl, data: .txt([Array("dnsaddr=\(full)".utf8)]))
        }
        return DNSMessage(
            isResponse: true, answers: [DNSMessage.Record(name: serviceName, ttl: ttl, data: .ptr(instance))],
            additionals: texts)
    }

    /// Whether `message` asks for the service (a query with a PTR question for it).
    public static func isQuery(_ message: DNSMessage) -> Bool {
        !message.isResponse && message.questions.contains { $0.name == serviceName && $0.type == DNSMessage.typePTR }
    }

    /// The peers a response announces: the TXT records (answers or additional) of every instance
    /// that a PTR answer for the service names, their `dnsaddr=` strings parsed as multiaddrs that
    /// end in `/p2p/<id>`. Anything else (other names, unparseable or id-less addresses) is
    /// skipped; at most 16 peers and 16 addresses each.
    public static func peers(in message: DNSMessage) -> [PeerID: [Multiaddr]] {
        guard message.isResponse else { return [:] }
        var instances = Set<DNSName>()
        for record in message.answers where record.name == serviceName {
            if case .ptr(let target) = record.data { instances.insert(target) }
        }
        var result: [PeerID: [Multiaddr]] = [:]
        for record in message.answers + message.additionals where instances.contains(record.name) {
            guard case .txt(let strings) = record.data else { continue }
            for string in strings {
                guard string.starts(with: Array("dnsaddr=".utf8)),
                    let text = String(validating: string.dropFirst(8), as: UTF8.self),
                    let address = try? Multiaddr(text), case .p2p(let hash)? = address.components.last,
                    let peer = try? PeerID(multihash: hash)
                else { continue }
                if result[peer] == nil, result.count >= maximumPeersPerMessage { continue }
                var addresses = result[peer, default: []]
                guard addresses.count < maximumAddressesPerPeer, !addresses.contains(address) else { continue }
                addresses.append(address)
                result[peer] = addresses
            }
        }
        return result
    }
}
