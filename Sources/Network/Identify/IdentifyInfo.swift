import Foundation
import Multiformats

/// What a peer told us about itself with identify, as kept in the peer store: at most
/// `Identify.maximumListenAddresses` addresses and `Identify.maximumProtocols` protocols, each of
/// bounded length (spec/session.md §6).
public struct IdentifyInfo: Sendable, Hashable {
    public var protocolVersion: String
    public var agentVersion: String
    public var listenAddresses: [Multiaddr]
    public var observedAddress: Multiaddr?
    public var protocols: [String]

    public init(
        protocolVersion: String, agentVersion: String, listenAddresses: [Multiaddr], observedAddress: Multiaddr?,
        protocols: [String]
    ) {
        self.protocolVersion = protocolVersion
        self.agentVersion = agentVersion
        self.listenAddresses = listenAddresses
        self.observedAddress = observedAddress
        self.protocols = protocols
    }

    /// Decodes a merged identify message, keeping what fits the caps: the first
    /// `maximumListenAddresses` valid addresses of at most `maximumAddressLength` bytes, the first
    /// `maximumProtocols` protocol ids of at most `maximumProtocolLength` bytes, versions cut to
    /// `maximumVersionLength` Unicode scalars. What is over a cap is left out rather than refused:
    /// an honest peer with many interfaces still gets identified. Attack prevented: 64 KiB of
    /// identify is ~9,300 minimal `/ip4` addresses, ten times that once parsed, per peer id.
    init(_ message: Agentd_Identify_Identify) {
        var addresses: [Multiaddr] = []
        for bytes in message.listenAddrs where bytes.count <= Identify.maximumAddressLength {
            guard addresses.count < Identify.maximumListenAddresses else { break }
            // An address we cannot parse (an unknown protocol code) is left out; it was of no use.
            guard let address = try? Multiaddr(bytes: bytes), !addresses.contains(address) else { continue }
            addresses.append(address)
        }
        var protocols: [String] = []
        var seen = Set<String>()
        for id in message.protocols where !id.isEmpty && id.utf8.count <= Identify.maximumProtocolLength {
            guard protocols.count < Identify.maximumProtocols else { break }
            if seen.insert(id).inserted { protocols.append(id) }
        }
        var observed: Multiaddr?
        if message.hasObservedAddr, message.observedAddr.count <= Identify.maximumAddressLength {
            observed = try? Multiaddr(bytes: message.observedAddr)
        }
        self.init(
            protocolVersion: Self.capped(message.protocolVersion), agentVersion: Self.capped(message.agentVersion),
            listenAddresses: addresses, observedAddress: observed, protocols: protocols)
    }

    /// `text` cut to `Identify.maximumVersionLength` Unicode scalars (not `Character`s: one
    /// grapheme cluster can carry any number of combining scalars).
    private static func capped(_ text: String) -> String {
        guard text.unicodeScalars.count > Identify.maximumVersionLength else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.prefix(Identify.maximumVersionLength)))
    }
}
