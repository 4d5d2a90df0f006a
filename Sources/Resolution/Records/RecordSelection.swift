import Identity

/// Why a record was accepted over what was held before.
public enum RecordAcceptance: String, Hashable, Sendable {
    /// Nothing was held for the name.
    case firstClaim = "first_claim"
    /// The holder published a higher seq.
    case update
    /// The very same record again (a republish of identical bytes); storing it changes nothing.
    case identical
    /// The held claim had expired, so the name was free.
    case previousClaimLapsed = "previous_claim_lapsed"
    /// The held key endorsed the incoming key (`RecordRotation`) and the seq is higher.
    case rotation
}

/// The outcome of offering a record to a holder of a name.
public enum RecordDecision: Hashable, Sendable {
    case accept(RecordAcceptance)
    case reject(ResolutionError)

    public var isAccepted: Bool {
        if case .accept = self { return true }
        return false
    }
}

/// The ownership rules of DESIGN §4 as one pure function (spec/records.md, "Ownership").
///
/// The first valid claim holds a name while it is refreshed; updates must come from the same key
/// with a higher seq; a different key gets the name only through a rotation endorsed by the holding
/// key, or once the held claim has lapsed (expired unrefreshed).
public enum RecordSelection {
    /// Decides whether `incoming` replaces `existing` (the record held for the same name, if any) at
    /// time `now`, in seconds since the epoch.
    ///
    /// `incoming` is validated first (`SignedAgentRecord.validate(now:)`), so every reject reason of
    /// a lone record applies too. `existing` is trusted: it passed this function when stored.
    public static func select(
        existing: SignedAgentRecord?, incoming: SignedAgentRecord, now: UInt64
    ) -> RecordDecision {
        do {
            try incoming.validate(now: now)
        } catch {
            return .reject(error)
        }
        guard let existing else { return .accept(.firstClaim) }
        let held = existing.record
        let offered = incoming.record
        precondition(held.name == offered.name, "select() compares records for different names")

        if held.isExpired(at: now) {
            return .accept(.previousClaimLapsed)
        }
        if offered.publicKey == held.publicKey {
            if offered.seq > held.seq { return .accept(.update) }
            if offered.seq == held.seq {
                if incoming.bytes == existing.bytes { return .accept(.identical) }
                // Two different records with one seq: the owner's software is broken or its key is
                // in two hands. Keeping the first prevents flapping between the versions.
                return .reject(
                    ResolutionError(
                        .conflictingSeq,
                        "record for \(offered.name) reuses seq \(offered.seq) with different content; the holder must publish a higher seq"))
            }
            return .reject(
                ResolutionError(
                    .staleSeq,
                    "record for \(offered.name) has seq \(offered.seq), but seq \(held.seq) is already held; updates need a higher seq"))
        }
        guard let rotation = offered.rotation else {
            return .reject(
                ResolutionError(
                    .nameHeld,
                    "record for \(offered.name) is signed by \(offered.peerID), but the name is held by \(held.peerID) until \(Timestamp.iso8601(held.expires))"))
        }
        guard rotation.previousKey == held.publicKey else {
            return .reject(
                ResolutionError(
                    .rotationFromWrongKey,
                    "rotation of \(offered.name) is endorsed by \(PeerID(publicKey: rotation.previousKey)), but the name is held by \(held.peerID)"))
        }
        guard offered.seq > held.seq else {
            return .reject(
                ResolutionError(
                    .staleSeq,
                    "rotation of \(offered.name) has seq \(offered.seq); it must be above the held seq \(held.seq)"))
        }
        return .accept(.rotation)
    }
}
