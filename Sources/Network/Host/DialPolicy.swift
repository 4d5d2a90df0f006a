import Identity
import Multiformats

extension Multiaddr {
    /// This address with `/p2p/<peer>` at its end, unless it already ends in a `/p2p` component.
    /// A circuit address `…/p2p/RELAY/p2p-circuit` gets the peer appended: its `/p2p` names the
    /// relay, not the peer.
    public func ending(in peer: PeerID) -> Multiaddr {
        if case .p2p? = components.last { return self }
        return appending(.p2p(peer.multihash))
    }
}
