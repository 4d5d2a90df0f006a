/// Why a capability card, a version range or a card request was refused. The raw values are the
/// stable kinds of spec/cards.md (§5 and §6): in the control API's `kind`, in `agentctl --json`
/// errors and in `/agent/card/1.0.0` error answers.
public struct CardError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// The signed card is larger than 16384 bytes, or a card answer larger than its limit.
        case oversized
        /// The bytes (or the JSON) do not follow the encoding: a break of the canonical rules, a
        /// missing or unknown field, a count or length over its limit.
        case malformed
        /// The card's `agent` is not a canonical `.agent` name.
        case invalidName = "invalid_name"
        /// The capability name breaks spec/cards.md §2.
        case invalidCapability = "invalid_capability"
        /// The version is not a semantic version (SemVer 2.0.0).
        case invalidVersion = "invalid_version"
        /// A version range breaks spec/cards.md §4.
        case invalidRange = "invalid_range"
        /// The signature does not verify under the agent's key.
        case badSignature = "bad_signature"
        /// The card names another agent than the one asked for.
        case wrongAgent = "wrong_agent"
        /// The card is for another capability than the one asked for.
        case wrongCapability = "wrong_capability"
        /// The card is dated more than 300 s ahead of the checker's clock.
        case fromTheFuture = "from_the_future"
        /// No key is known for the card's agent (no valid record).
        case unknownAgent = "unknown_agent"
        /// The agent has as many cards as a node keeps (64).
        case tooManyCards = "too_many_cards"
        /// The card store failed.
        case storage
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
