/// `/agent/card/1.0.0` messages (spec/cards.md §8), canonical protobuf like cards:
/// ```proto
/// message CardRequest  { string capability = 1; string agent = 2; }
/// message CardResponse { repeated bytes cards = 1; string error = 2; }
/// ```
/// One request and one response per stream, each a varint-length-prefixed frame.
public enum CardWire {
    public static let protocolID = "/agent/card/1.0.0"
    /// A request is at most this long (a capability name and an agent name fit many times over).
    public static let maximumRequestBytes = 512
    /// A response holds at most this many cards and bytes.
    public static let maximumCards = 64
    public static let maximumResponseBytes = 1024 * 1024
    /// `capability` value that asks for every card.
    public static let all = "all"

    public struct Request: Hashable, Sendable {
        /// A capability name, or `all`.
        public var capability: String
        /// The agent whose cards are asked for; empty for every agent the node serves.
        public var agent: String

        public init(capability: String, agent: String = "") {
            self.capability = capability
            self.agent = agent
        }
    }

    public struct Response: Hashable, Sendable {
        public var cards: [[UInt8]]
        /// Empty, or the kind of why the request was refused (`malformed`, `invalid_capability`, …).
        public var error: String

        public init(cards: [[UInt8]] = [], error: String = "") {
            self.cards = cards
            self.error = error
        }
    }

    public static func encode(_ request: Request) -> [UInt8] {
        var writer = CanonicalProtobufWriter()
        writer.field(1, request.capability)
        writer.field(2, request.agent)
        return writer.bytes
    }

    public static func encode(_ response: Response) -> [UInt8] {
        var writer = CanonicalProtobufWriter()
        for card in response.cards { writer.field(1, card) }
        writer.field(2, response.error)
        return writer.bytes
    }

    /// - Throws: `.malformed` (not canonical, no capability, not UTF-8).
    public static func decodeRequest(_ bytes: some Collection<UInt8>) throws(CardError) -> Request {
        let bytes = Array(bytes)
        var reader = CanonicalProtobufReader(bytes[...], what: "CardRequest")
        var request = Request(capability: "")
        while let (number, value) = try reader.next(schema: [1: (true, false, 64), 2: (true, false, 253)]) {
            guard let text = String(validating: value.bytesValue, as: UTF8.self) else {
                throw CardError(.malformed, "CardRequest: field \(number) is not UTF-8")
            }
            if number == 1 { request.capability = text } else { request.agent = text }
        }
        guard !request.capability.isEmpty else { throw CardError(.malformed, "CardRequest: capability is required") }
        return request
    }

    /// - Throws: `.malformed` (not canonical, more than 64 cards, a card over 16384 bytes).
    public static func decodeResponse(_ bytes: some Collection<UInt8>) throws(CardError) -> Response {
        let bytes = Array(bytes)
        var reader = CanonicalProtobufReader(bytes[...], what: "CardResponse")
        var response = Response()
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, true, CapabilityCard.Limits.signedCardBytes), 2: (true, false, 64),
        ]
        while let (number, value) = try reader.next(schema: schema) {
            if number == 1 {
                guard response.cards.count < maximumCards else {
                    throw CardError(.malformed, "CardResponse: more than \(maximumCards) cards")
                }
                response.cards.append(Array(value.bytesValue))
            } else {
                guard let text = String(validating: value.bytesValue, as: UTF8.self) else {
                    throw CardError(.malformed, "CardResponse: error is not UTF-8")
                }
                response.error = text
            }
        }
        return response
    }
}
