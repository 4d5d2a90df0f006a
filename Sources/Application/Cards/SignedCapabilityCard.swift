import Identity
import Resolution

/// A capability card as an agent signs it (spec/cards.md §5): the card, the agent that offers it
/// and when it was signed, in canonical protobuf, with an Ed25519 signature by the key of the
/// agent's record over `"agent-card:v1\n" ‖ card bytes`.
///
/// `init(bytes:)` checks the encoding only; `verify(…)` checks the signature and the rest of §6.
public struct SignedCapabilityCard: Hashable, Sendable {
    public static let signingContext = Array("agent-card:v1\n".utf8)
    /// Cards dated more than this far ahead of the checker's clock are refused (§6).
    public static let maximumClockSkew: UInt64 = 300

    public let agent: AgentName
    /// Seconds since 1970-01-01T00:00:00Z.
    public let timestamp: UInt64
    public let card: CapabilityCard
    public let signature: [UInt8]
    /// The `SignedCard` message: exactly what travels and is stored.
    public let bytes: [UInt8]
    /// The `Card` message's bytes (what the signature covers, after the context).
    public let cardBytes: [UInt8]

    /// Signs `card` for `agent` at `timestamp` with `key`.
    /// - Throws: what `CapabilityCard.check()` throws; `.oversized` when the signed card is over
    ///   16384 bytes.
    public init(card: CapabilityCard, agent: AgentName, timestamp: UInt64, signedWith key: Ed25519.PrivateKey) throws(CardError) {
        try card.check()
        guard timestamp >= 1 else { throw CardError(.malformed, "a card's timestamp is at least 1") }
        let body = Self.encode(card, agent: agent, timestamp: timestamp)
        let signature = key.signature(for: Self.signingContext + body)
        var outer = CanonicalProtobufWriter()
        outer.field(1, body)
        outer.field(2, signature)
        guard outer.bytes.count <= CapabilityCard.Limits.signedCardBytes else {
            throw CardError(
                .oversized, "the signed card is \(outer.bytes.count) bytes, over \(CapabilityCard.Limits.signedCardBytes)")
        }
        self.agent = agent
        self.timestamp = timestamp
        self.card = card
        self.signature = signature
        self.bytes = outer.bytes
        self.cardBytes = body
    }

    /// Decodes a `SignedCard` (§5.3: size first, then fields in wire order, then presence).
    /// - Throws: `.oversized`, `.malformed`, `.invalidName`, `.invalidCapability`, `.invalidVersion`.
    public init(bytes input: some Collection<UInt8>) throws(CardError) {
        guard input.count <= CapabilityCard.Limits.signedCardBytes else {
            throw CardError(.oversized, "a signed card is at most \(CapabilityCard.Limits.signedCardBytes) bytes, not \(input.count)")
        }
        let bytes = Array(input)
        var reader = CanonicalProtobufReader(bytes[...], what: "SignedCard")
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, false, CapabilityCard.Limits.signedCardBytes), 2: (true, false, Ed25519.signatureLength),
        ]
        var body: ArraySlice<UInt8>?
        var signature: ArraySlice<UInt8>?
        while let (number, value) = try reader.next(schema: schema) {
            if number == 1 {
                body = value.bytesValue
            } else {
                signature = value.bytesValue
            }
        }
        guard let body, let signature else { throw CardError(.malformed, "SignedCard: card and signature are required") }
        guard signature.count == Ed25519.signatureLength else {
            throw CardError(.malformed, "SignedCard: the signature is \(signature.count) bytes, not 64")
        }
        (self.agent, self.timestamp, self.card) = try Self.decodeCard(body)
        self.signature = Array(signature)
        self.bytes = bytes
        self.cardBytes = Array(body)
    }

    /// Checks the card for use (§6), in order: the agent and capability asked for, the time, the
    /// agent's key, the signature.
    /// - Parameters:
    ///   - agent: the agent whose card this should be (nil: any).
    ///   - capability: the capability asked for (nil: any).
    ///   - now: the checker's clock, Unix seconds.
    ///   - key: the agent's current key (its record's), or nil when none is known. A self-certifying
    ///     agent's key comes from its name and overrides `key`.
    /// - Throws: `.wrongAgent`, `.wrongCapability`, `.fromTheFuture`, `.unknownAgent`, `.badSignature`.
    public func verify(
        agent expectedAgent: AgentName?, capability: String?, now: UInt64, key: Ed25519.PublicKey?
    ) throws(CardError) {
        try checkAddressing(agent: expectedAgent, capability: capability, now: now)
        try checkSignature(key: key)
    }

    /// The checks of §6 that need no key (rules 2–4): done first, so that a misaddressed or
    /// future-dated card costs no record lookup.
    public func checkAddressing(agent expectedAgent: AgentName?, capability: String?, now: UInt64) throws(CardError) {
        if let expectedAgent, expectedAgent != agent {
            throw CardError(.wrongAgent, "the card is \(agent)'s, not \(expectedAgent)'s")
        }
        if let capability, capability != card.name {
            throw CardError(.wrongCapability, "the card is for \(card.name), not \(capability)")
        }
        // now + 300 without wrap-around (a clock near 2^64 admits everything, as the true sum would).
        guard now > UInt64.max - Self.maximumClockSkew || timestamp <= now + Self.maximumClockSkew else {
            throw CardError(.fromTheFuture, "\(agent)'s card for \(card.name) is dated \(timestamp - now) s ahead")
        }
    }

    /// §6 rules 5–6: the signature under the agent's key (a self-certifying agent's from its name).
    public func checkSignature(key: Ed25519.PublicKey?) throws(CardError) {
        let signer: Ed25519.PublicKey
        if let peer = agent.selfCertifyingPeerID, let inlined = peer.ed25519PublicKey {
            signer = inlined
        } else if let key {
            signer = key
        } else {
            throw CardError(.unknownAgent, "no valid record for \(agent), so no key to check its card against")
        }
        guard signer.isValidSignature(signature, for: Self.signingContext + cardBytes) else {
            throw CardError(.badSignature, "\(agent)'s card for \(card.name) is not signed by \(PeerID(publicKey: signer))")
        }
    }

    // MARK: Encoding

    /// `Card` (§5.1): agent 1, timestamp 2, name 3, version 4, description 5, interfaces 6,
    /// documentation 7.
    static func encode(_ card: CapabilityCard, agent: AgentName, timestamp: UInt64) -> [UInt8] {
        var writer = CanonicalProtobufWriter()
        writer.field(1, agent.value)
        writer.field(2, timestamp)
        writer.field(3, card.name)
        writer.field(4, card.version.description)
        writer.field(5, card.description)
        for interface in card.interfaces {
            var inner = CanonicalProtobufWriter()
            inner.field(1, interface.name)
            for method in interface.methods {
                var m = CanonicalProtobufWriter()
                m.field(1, method.name)
                for field in method.parameters { m.field(2, encode(field)) }
                for field in method.returns { m.field(3, encode(field)) }
                m.field(4, method.description)
                inner.field(2, m.bytes)
            }
            writer.field(6, inner.bytes)
        }
        writer.field(7, card.documentation)
        return writer.bytes
    }

    private static func encode(_ field: CapabilityCard.Field) -> [UInt8] {
        var writer = CanonicalProtobufWriter()
        writer.field(1, field.name)
        writer.field(2, field.type)
        writer.field(3, field.description)
        return writer.bytes
    }

    private static func text(_ bytes: ArraySlice<UInt8>, _ what: String) throws(CardError) -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CardError(.malformed, "\(what) is not valid UTF-8")
        }
        return text
    }

    static func decodeCard(_ bytes: ArraySlice<UInt8>) throws(CardError) -> (AgentName, UInt64, CapabilityCard) {
        typealias Limits = CapabilityCard.Limits
        var reader = CanonicalProtobufReader(bytes, what: "Card")
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, false, AgentName.maximumLength), 2: (false, false, 0), 3: (true, false, Limits.capabilityNameBytes),
            4: (true, false, SemanticVersion.maximumLength), 5: (true, false, Limits.descriptionBytes),
            6: (true, true, Limits.signedCardBytes), 7: (true, false, Limits.documentationBytes),
        ]
        var agent: AgentName?
        var timestamp: UInt64?
        var name: String?
        var version: SemanticVersion?
        var description = ""
        var interfaces: [CapabilityCard.Interface] = []
        var documentation = ""
        while let (number, value) = try reader.next(schema: schema) {
            switch number {
            case 1:
                do {
                    agent = try AgentName(canonical: try text(value.bytesValue, "the agent name"))
                } catch let error as CardError {
                    throw CardError(.invalidName, "the card's agent: \(error.message)")
                } catch {
                    throw CardError(.invalidName, "the card's agent is not a canonical .agent name: \(error)")
                }
            case 2:
                timestamp = value.varintValue
            case 3:
                let text = try text(value.bytesValue, "the capability name")
                try CapabilityCard.checkCapabilityName(text)
                name = text
            case 4:
                version = try SemanticVersion(try text(value.bytesValue, "the version"))
            case 5:
                description = try text(value.bytesValue, "the description")
            case 6:
                guard interfaces.count < Limits.interfaces else {
                    throw CardError(.malformed, "Card: more than \(Limits.interfaces) interfaces")
                }
                interfaces.append(try decodeInterface(value.bytesValue))
            default:
                documentation = try text(value.bytesValue, "the documentation URL")
                try Limits.checkDocumentation(documentation)
            }
        }
        guard let agent, let timestamp, let name, let version else {
            throw CardError(.malformed, "Card: agent, timestamp, name and version are required")
        }
        return (
            agent, timestamp,
            CapabilityCard(
                name: name, version: version, description: description, interfaces: interfaces, documentation: documentation)
        )
    }

    private static func decodeInterface(_ bytes: ArraySlice<UInt8>) throws(CardError) -> CapabilityCard.Interface {
        typealias Limits = CapabilityCard.Limits
        var reader = CanonicalProtobufReader(bytes, what: "Interface")
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, false, Limits.identifierBytes), 2: (true, true, Limits.signedCardBytes),
        ]
        var name: String?
        var methods: [CapabilityCard.Method] = []
        while let (number, value) = try reader.next(schema: schema) {
            if number == 1 {
                let text = try text(value.bytesValue, "an interface name")
                try Limits.checkIdentifier(text, "an interface name")
                name = text
            } else {
                guard methods.count < Limits.methods else {
                    throw CardError(.malformed, "Interface: more than \(Limits.methods) methods")
                }
                methods.append(try decodeMethod(value.bytesValue))
            }
        }
        guard let name else { throw CardError(.malformed, "Interface: name is required") }
        return CapabilityCard.Interface(name: name, methods: methods)
    }

    private static func decodeMethod(_ bytes: ArraySlice<UInt8>) throws(CardError) -> CapabilityCard.Method {
        typealias Limits = CapabilityCard.Limits
        var reader = CanonicalProtobufReader(bytes, what: "Method")
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, false, Limits.identifierBytes), 2: (true, true, Limits.signedCardBytes),
            3: (true, true, Limits.signedCardBytes), 4: (true, false, Limits.descriptionBytes),
        ]
        var method = CapabilityCard.Method(name: "")
        var named = false
        while let (number, value) = try reader.next(schema: schema) {
            switch number {
            case 1:
                method.name = try text(value.bytesValue, "a method name")
                try Limits.checkIdentifier(method.name, "a method name")
                named = true
            case 2:
                guard method.parameters.count < Limits.fields else {
                    throw CardError(.malformed, "Method: more than \(Limits.fields) parameters")
                }
                method.parameters.append(try decodeField(value.bytesValue))
            case 3:
                guard method.returns.count < Limits.fields else {
                    throw CardError(.malformed, "Method: more than \(Limits.fields) returns")
                }
                method.returns.append(try decodeField(value.bytesValue))
            default:
                method.description = try text(value.bytesValue, "a method description")
            }
        }
        guard named else { throw CardError(.malformed, "Method: name is required") }
        return method
    }

    private static func decodeField(_ bytes: ArraySlice<UInt8>) throws(CardError) -> CapabilityCard.Field {
        typealias Limits = CapabilityCard.Limits
        var reader = CanonicalProtobufReader(bytes, what: "Field")
        let schema: [UInt64: (lengthDelimited: Bool, repeated: Bool, limit: Int)] = [
            1: (true, false, Limits.identifierBytes), 2: (true, false, Limits.typeBytes),
            3: (true, false, Limits.fieldDescriptionBytes),
        ]
        var name: String?
        var type: String?
        var description = ""
        while let (number, value) = try reader.next(schema: schema) {
            switch number {
            case 1:
                let text = try text(value.bytesValue, "a field name")
                try Limits.checkIdentifier(text, "a field name")
                name = text
            case 2:
                let text = try text(value.bytesValue, "a field type")
                try Limits.checkType(text)
                type = text
            default:
                description = try text(value.bytesValue, "a field description")
            }
        }
        guard let name, let type else { throw CardError(.malformed, "Field: name and type are required") }
        return CapabilityCard.Field(name: name, type: type, description: description)
    }
}
