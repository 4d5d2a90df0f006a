import Identity
import Multiformats
import NIOCore
import Testing

@testable import Network

/// The automatic relay choice as a pure state machine on a virtual clock (Unix seconds).
@Suite(
    "Automatic relay choice on a virtual clock: lowest RTT first, renewals, a lost reservation replaced, a refusing relay skipped for 60 s"
)
struct RelayChoiceTests {
    /// Four relays with distinct RTTs: fast (5 ms), medium (20 ms), slow (80 ms), unmeasured.
    struct Relays {
        let fast = Self.candidate(rtt: .milliseconds(5), port: 4001)
        let medium = Self.candidate(rtt: .milliseconds(20), port: 4002)
        let slow = Self.candidate(rtt: .milliseconds(80), port: 4003)
        let unmeasured = Self.candidate(rtt: nil, port: 4004)

        /// In an order that is neither by RTT nor by peer id.
        var all: [RelayChoice.Candidate] { [unmeasured, slow, fast, medium] }

        static func candidate(rtt: TimeAmount?, port: UInt16) -> RelayChoice.Candidate {
            let relay = PeerID(publicKey: Ed25519.PrivateKey().publicKey)
            let address = try! Multiaddr("/ip4/127.0.0.2/tcp/\(port)").appending(.p2p(relay.multihash))
            return RelayChoice.Candidate(relay: relay, rtt: rtt, address: address)
        }
    }

    static func reserve(_ candidate: RelayChoice.Candidate) -> RelayChoice.Action {
        .reserve(candidate.relay, at: candidate.address)
    }

    /// A choice that is private and holds `relays` (granted at `now` until `now + 3600`).
    static func holding(_ relays: [RelayChoice.Candidate], maximum: Int = 2, now: UInt64) -> RelayChoice {
        var choice = RelayChoice(maximum: maximum)
        choice.reachabilityChanged(.private)
        for relay in relays {
            choice.granted(relay.relay, at: relay.address, expires: now + 3600, now: now)
        }
        return choice
    }

    @Test("while private: the lowest RTTs first, at most `maximum`, unmeasured last; nothing while unknown or public")
    func lowestRTTFirst() {
        let relays = Relays()
        var choice = RelayChoice(maximum: 2)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1000).isEmpty)
        choice.reachabilityChanged(.public)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1000).isEmpty)
        choice.reachabilityChanged(.private)
        #expect(
            choice.poll(candidates: relays.all, held: [], now: 1000) == [
                Self.reserve(relays.fast), Self.reserve(relays.medium),
            ])
        // Asked for already: chosen (the client may hold them before the grant is reported here),
        // and not asked again while the answers are outstanding.
        #expect(choice.chose(relays.fast.relay) && !choice.chose(relays.slow.relay))
        #expect(choice.poll(candidates: relays.all, held: [], now: 1001).isEmpty)

        // Only unmeasured and measured-slow candidates: the measured one first.
        var second = RelayChoice(maximum: 1)
        second.reachabilityChanged(.private)
        #expect(
            second.poll(candidates: [relays.unmeasured, relays.slow], held: [], now: 1000) == [
                Self.reserve(relays.slow)
            ])
    }

    @Test("a relay listed twice counts once at its lowest RTT; equal RTTs go by peer id")
    func ranking() {
        let relays = Relays()
        var slower = relays.fast
        slower.rtt = .milliseconds(90)
        let ranked = RelayChoice.rank([slower, relays.medium, relays.fast])
        #expect(ranked.map(\.relay) == [relays.fast.relay, relays.medium.relay])
        #expect(ranked.first?.rtt == .milliseconds(5))

        var tied = [relays.fast, relays.medium]
        tied[1].rtt = tied[0].rtt
        let byID = RelayChoice.rank(tied).map(\.relay)
        #expect(
            byID == [relays.fast.relay, relays.medium.relay].sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) })
    }

    @Test("relays held otherwise (configured) are not chosen here and do not count against the maximum")
    func heldElsewhere() {
        let relays = Relays()
        var choice = RelayChoice(maximum: 2)
        choice.reachabilityChanged(.private)
        let actions = choice.poll(candidates: relays.all, held: [relays.fast.relay], now: 1000)
        #expect(actions == [Self.reserve(relays.medium), Self.reserve(relays.slow)])
        #expect(!choice.chose(relays.fast.relay))
    }

    @Test("granted reservations are renewed at three quarters of their life, also after the verdict went public")
    func renewals() {
        let relays = Relays()
        var choice = Self.holding([relays.fast, relays.medium], now: 1000)
        let held: Set<PeerID> = [relays.fast.relay, relays.medium.relay]
        #expect(choice.chose(relays.fast.relay) && choice.chose(relays.medium.relay))
        #expect(choice.nextDeadline == 1000 + 2700)
        #expect(choice.poll(candidates: relays.all, held: held, now: 3699).isEmpty)
        choice.reachabilityChanged(.public)
        let due = choice.poll(candidates: relays.all, held: held, now: 3700)
        #expect(Set(due) == [Self.reserve(relays.fast), Self.reserve(relays.medium)])
        // In flight: neither asked again nor counted as a deadline.
        #expect(choice.poll(candidates: relays.all, held: held, now: 3701).isEmpty)
        #expect(choice.nextDeadline == nil)
        choice.granted(relays.fast.relay, at: relays.fast.address, expires: 3700 + 3600, now: 3700)
        #expect(choice.nextDeadline == 3700 + 2700)
        // A reservation that lasts less than 2 s is renewed 1 s later, never in a busy loop.
        choice.granted(relays.medium.relay, at: relays.medium.address, expires: 3701, now: 3700)
        #expect(choice.nextDeadline == 3701)
    }

    @Test("a lost reservation is dropped and replaced by the next best candidate at once")
    func lostReplaced() {
        let relays = Relays()
        var choice = Self.holding([relays.fast, relays.medium], now: 1000)
        #expect(choice.poll(candidates: relays.all, held: [relays.fast.relay, relays.medium.relay], now: 1010).isEmpty)
        // The fast relay went away: it is no longer a candidate, and no longer held.
        let actions = choice.poll(
            candidates: [relays.unmeasured, relays.slow, relays.medium], held: [relays.medium.relay], now: 1020)
        #expect(actions == [Self.reserve(relays.slow)])
        #expect(!choice.chose(relays.fast.relay))
        choice.granted(relays.slow.relay, at: relays.slow.address, expires: 1020 + 3600, now: 1020)
        #expect(choice.chosenRelays == [relays.medium.relay, relays.slow.relay])
    }

    @Test("a lost reservation whose relay is still the best candidate is asked again (lost to expiry, not refused)")
    func lostButStillBest() {
        let relays = Relays()
        var choice = Self.holding([relays.fast], maximum: 1, now: 1000)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1100) == [Self.reserve(relays.fast)])
    }

    @Test("a refusing relay is skipped for 60 s (the next best is asked at once), then asked again")
    func refusalSkipped() {
        let relays = Relays()
        var choice = RelayChoice(maximum: 1)
        choice.reachabilityChanged(.private)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1000) == [Self.reserve(relays.fast)])
        choice.failed(relays.fast.relay, now: 1000)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1000) == [Self.reserve(relays.medium)])
        choice.failed(relays.medium.relay, now: 1001)
        #expect(choice.poll(candidates: relays.all, held: [], now: 1001) == [Self.reserve(relays.slow)])
        choice.granted(relays.slow.relay, at: relays.slow.address, expires: 1001 + 3600, now: 1001)
        // The backoff ends are deadlines while private.
        #expect(choice.nextDeadline == 1060)
        #expect(choice.poll(candidates: relays.all, held: [relays.slow.relay], now: 1059).isEmpty)
        // Full: the refusing relays come back as candidates, but only for a free place.
        #expect(choice.poll(candidates: relays.all, held: [relays.slow.relay], now: 1061).isEmpty)
        // The slow relay refuses its renewal at 3701: the fast one (its backoff over) replaces it.
        #expect(
            choice.poll(candidates: relays.all, held: [relays.slow.relay], now: 3701) == [Self.reserve(relays.slow)])
        choice.failed(relays.slow.relay, now: 3701)
        #expect(choice.poll(candidates: relays.all, held: [], now: 3701) == [Self.reserve(relays.fast)])
        #expect(!choice.chose(relays.slow.relay))
    }

    @Test("a renewal refused at the only relay: skipped 60 s, then asked again; nothing to ask after going public")
    func refusedRenewal() {
        let relays = Relays()
        var choice = Self.holding([relays.fast], maximum: 1, now: 0)
        #expect(
            choice.poll(candidates: [relays.fast], held: [relays.fast.relay], now: 2700) == [Self.reserve(relays.fast)])
        choice.failed(relays.fast.relay, now: 2700)
        #expect(choice.poll(candidates: [relays.fast], held: [], now: 2759).isEmpty)
        #expect(choice.nextDeadline == 2760)
        #expect(choice.poll(candidates: [relays.fast], held: [], now: 2760) == [Self.reserve(relays.fast)])
        choice.failed(relays.fast.relay, now: 2760)
        choice.reachabilityChanged(.public)
        #expect(choice.nextDeadline == nil)
        #expect(choice.poll(candidates: [relays.fast], held: [], now: 4000).isEmpty)
    }
}
