/// Why a kad request to a peer failed, sorted by what it says about the peer (spec/dht.md §4,
/// "Liveness").
///
/// Liveness means liveness: a peer that answers, or refuses a request it does not like or support
/// (the kad-dht way of refusing is a reset stream), is alive. Only a failed dial through the
/// addresses we trust for it and a request that ran out of time count against it. Hearsay
/// (addresses a third party named) that does not work says nothing about the peer.
///
/// Finding 13 of issue #10: py-libp2p refuses FIND_NODE for keys longer than 50 bytes that are not
/// multihashes (our record keys), by resetting the stream; when refusals evicted, every py peer
/// left the table a second after it joined.
package struct KadRequestFailure: Error, CustomStringConvertible {
    package enum Kind: Hashable, Sendable {
        /// The peer was reached and reset or closed the stream instead of answering (the kad-dht
        /// refusal), e.g. a PUT of a record it will not store, a key it will not look up.
        case refused
        /// The peer was reached and said `na` to the kad protocol: it no longer serves the DHT
        /// (a client-mode node), though it is alive.
        case notServing
        /// The peer answered with something that is not an answer (undecodable, another type).
        case badAnswer
        /// No connection through the addresses the routing table or identify hold for the peer,
        /// or that the caller itself supplied.
        case unreachable
        /// No connection through addresses only a third party named (a lookup answer).
        case unreachableByHearsay
        /// Reached, or being dialled at addresses we trust, and not finished within the request's
        /// hard timeout.
        case timedOut
    }

    let kind: Kind
    let message: String

    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    package var description: String { message }

    /// Whether the failure is evidence that the peer is gone, so that it leaves the routing table.
    var countsAgainstLiveness: Bool { Self.countsAgainstLiveness(kind) }

    /// The liveness rule in one place: only unreachability through trusted addresses and timeouts
    /// evict; a refusal, a `na`, a bad answer or unreachable hearsay never does.
    static func countsAgainstLiveness(_ kind: Kind) -> Bool {
        switch kind {
        case .unreachable, .timedOut: true
        case .refused, .notServing, .badAnswer, .unreachableByHearsay: false
        }
    }

    /// Whether the peer was reached and declined: a PUT it refused (spec/dht.md §7 counts these for
    /// first claims).
    var isRefusal: Bool { kind == .refused || kind == .notServing }
}
