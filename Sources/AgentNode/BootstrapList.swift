import Foundation
import Identity
import Multiformats

/// The peers a node contacts first to join the network, read from `bootstrap-nodes.json`
/// (spec/bootstrap.md):
///
/// ```json
/// { "version": 1,
///   "peers": [ { "peer_id": "12D3KooW…", "addrs": ["/ip4/192.0.2.7/tcp/4001"] } ] }
/// ```
///
/// Every address must parse as a multiaddr; an address that carries `/p2p/<id>` must name the
/// entry's own peer id (a typo there would send the node to authenticate the wrong peer).
public struct BootstrapList: Hashable, Sendable {
    /// The only format version so far.
    public static let version = 1
    /// Largest file read, to keep a mistaken path (a log, a binary) from being slurped whole.
    public static let maximumFileSize = 1 << 20

    public struct Peer: Hashable, Sendable {
        public let peerID: PeerID
        /// Dialable addresses, each ending in `/p2p/<peerID>` (added when the file omits it).
        public let addresses: [Multiaddr]

        public init(peerID: PeerID, addresses: [Multiaddr]) {
            self.peerID = peerID
            self.addresses = addresses
        }
    }

    public let peers: [Peer]

    public init(peers: [Peer]) {
        self.peers = peers
    }

    private struct FileFormat: Decodable {
        let version: Int?
        let peers: [PeerEntry]?
    }

    private struct PeerEntry: Decodable {
        let peer_id: String?
        let addrs: [String]?
    }

    /// Parses and validates the JSON text of a bootstrap file.
    /// - Parameter source: a name for messages (usually the path).
    /// - Throws: `NodeError.invalidConfiguration` naming the entry and the problem.
    public init(json: [UInt8], source: String = "bootstrap list") throws(NodeError) {
        let file: FileFormat
        do {
            file = try JSONDecoder().decode(FileFormat.self, from: Data(json))
        } catch {
            throw NodeError(.invalidConfiguration, "\(source) is not valid JSON of the expected shape: \(Self.describe(error))")
        }
        guard let version = file.version else {
            throw NodeError(.invalidConfiguration, "\(source) has no \"version\" field (expected \(Self.version))")
        }
        guard version == Self.version else {
            throw NodeError(
                .invalidConfiguration, "\(source) has version \(version); this agentd reads version \(Self.version)")
        }
        guard let entries = file.peers else {
            throw NodeError(.invalidConfiguration, "\(source) has no \"peers\" list")
        }
        var peers: [Peer] = []
        var seen = Set<PeerID>()
        for (index, entry) in entries.enumerated() {
            let place = "\(source), peers[\(index)]"
            guard let idText = entry.peer_id else {
                throw NodeError(.invalidConfiguration, "\(place) has no \"peer_id\"")
            }
            let peerID: PeerID
            do {
                peerID = try PeerID(idText)
            } catch {
                throw NodeError(.invalidConfiguration, "\(place): \(error.message)")
            }
            guard seen.insert(peerID).inserted else {
                throw NodeError(.invalidConfiguration, "\(place): peer \(peerID) is listed twice")
            }
            guard let addrTexts = entry.addrs, !addrTexts.isEmpty else {
                throw NodeError(.invalidConfiguration, "\(place) (\(peerID)) has no \"addrs\"")
            }
            var addresses: [Multiaddr] = []
            for text in addrTexts {
                var address: Multiaddr
                do {
                    address = try Multiaddr(text)
                } catch {
                    throw NodeError(.invalidConfiguration, "\(place): bad multiaddr \"\(text)\": \(error.message)")
                }
                if let named = address.peerIDMultihash {
                    guard named == peerID.multihash else {
                        throw NodeError(
                            .invalidConfiguration,
                            "\(place): address \(text) names peer \(PeerIDText.base58(named)), but the entry's peer_id is \(peerID)")
                    }
                } else {
                    address = address.appending(.p2p(peerID.multihash))
                }
                addresses.append(address)
            }
            peers.append(Peer(peerID: peerID, addresses: addresses))
        }
        self.peers = peers
    }

    /// Reads and validates a bootstrap file.
    public static func load(path: String) throws(NodeError) -> BootstrapList {
        let bytes: [UInt8]
        do {
            bytes = try PrivateFile.read(path, limit: maximumFileSize, requirePrivate: false)
        } catch {
            throw NodeError(.fileSystem, "cannot read bootstrap file: \(error.message)")
        }
        return try BootstrapList(json: bytes, source: path)
    }

    /// The JSON text of this list, in the file format.
    public func json() -> String {
        var entries: [String] = []
        for peer in peers {
            let addrs = peer.addresses.map { "\"\($0)\"" }.joined(separator: ", ")
            entries.append("    { \"peer_id\": \"\(peer.peerID)\", \"addrs\": [\(addrs)] }")
        }
        return "{\n  \"version\": \(Self.version),\n  \"peers\": [\n" + entries.joined(separator: ",\n") + "\n  ]\n}\n"
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
            DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return path.isEmpty ? context.debugDescription : "at \(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}
