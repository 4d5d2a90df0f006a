import Resolution

/// The JSON form of cards (spec/cards.md §3): what `agentctl card set FILE.json` reads and what the
/// control API returns. Parsing is strict: unknown keys, wrong types and broken rules are refused.
extension CapabilityCard {
    /// Parses the card JSON object of §3.1.
    /// - Throws: `.malformed` (shape, unknown keys, limits), `.invalidCapability`, `.invalidVersion`.
    public init(json value: JSONValue) throws(CardError) {
        let object = try Self.object(value, "a card", keys: ["name", "version", "description", "interfaces", "documentation"])
        guard let name = object["name"]?.stringValue else { throw CardError(.malformed, "a card needs \"name\": a string") }
        guard let version = object["version"]?.stringValue else {
            throw CardError(.malformed, "a card needs \"version\": a semantic version string")
        }
        let interfaces = try Self.array(object["interfaces"], "\"interfaces\"", limit: Limits.interfaces).map {
            value throws(CardError) -> Interface in
            let object = try Self.object(value, "an interface", keys: ["name", "methods"])
            return Interface(
                name: try Self.string(object["name"], "an interface's \"name\"", required: true),
                methods: try Self.array(object["methods"], "\"methods\"", limit: Limits.methods).map { value throws(CardError) in
                    let object = try Self.object(value, "a method", keys: ["name", "parameters", "returns", "description"])
                    return Method(
                        name: try Self.string(object["name"], "a method's \"name\"", required: true),
                        parameters: try Self.fields(object["parameters"], "\"parameters\""),
                        returns: try Self.fields(object["returns"], "\"returns\""),
                        description: try Self.string(object["description"], "a method's \"description\"", required: false))
                })
        }
        self.init(
            name: name, version: try SemanticVersion(version),
            description: try Self.string(object["description"], "\"description\"", required: false),
            interfaces: interfaces,
            documentation: try Self.string(object["documentation"], "\"documentation\"", required: false))
        try check()
    }

    /// The JSON object of §3.1; empty optional members are left out.
    public var json: JSONValue {
        var object: [String: JSONValue] = ["name": .string(name), "version": .string(version.description)]
        if !description.isEmpty { object["description"] = .string(description) }
        object["interfaces"] = .array(
            interfaces.map { interface in
                .object([
                    "name": .string(interface.name),
                    "methods": .array(
                        interface.methods.map { method in
                            var object: [String: JSONValue] = [
                                "name": .string(method.name),
                                "parameters": .array(method.parameters.map(\.json)),
                                "returns": .array(method.returns.map(\.json)),
                            ]
                            if !method.description.isEmpty { object["description"] = .string(method.description) }
                            return .object(object)
                        }),
                ])
            })
        if !documentation.isEmpty { object["documentation"] = .string(documentation) }
        return .object(object)
    }

    private static func object(_ value: JSONValue, _ what: String, keys: Set<String>) throws(CardError) -> [String: JSONValue] {
        guard let object = value.objectValue else { throw CardError(.malformed, "\(what) must be a JSON object") }
        if let unknown = object.keys.sorted().first(where: { !keys.contains($0) }) {
            throw CardError(.malformed, "\(what) has an unknown member \"\(unknown)\" (allowed: \(keys.sorted().joined(separator: ", ")))")
        }
        return object
    }

    private static func array(_ value: JSONValue?, _ what: String, limit: Int) throws(CardError) -> [JSONValue] {
        guard let value, value != .null else { return [] }
        guard let array = value.arrayValue else { throw CardError(.malformed, "\(what) must be a list") }
        guard array.count <= limit else { throw CardError(.malformed, "\(what) has \(array.count) entries, over \(limit)") }
        return array
    }

    private static func string(_ value: JSONValue?, _ what: String, required: Bool) throws(CardError) -> String {
        guard let value, value != .null else {
            if required { throw CardError(.malformed, "\(what) is required") }
            return ""
        }
        guard let text = value.stringValue else { throw CardError(.malformed, "\(what) must be a string") }
        return text
    }

    private static func fields(_ value: JSONValue?, _ what: String) throws(CardError) -> [Field] {
        try array(value, what, limit: Limits.fields).map { value throws(CardError) in
            let object = try Self.object(value, "an entry of \(what)", keys: ["name", "type", "description"])
            return Field(
                name: try string(object["name"], "a field's \"name\"", required: true),
                type: try string(object["type"], "a field's \"type\"", required: true),
                description: try string(object["description"], "a field's \"description\"", required: false))
        }
    }
}

extension CapabilityCard.Field {
    public var json: JSONValue {
        var object: [String: JSONValue] = ["name": .string(name), "type": .string(type)]
        if !description.isEmpty { object["description"] = .string(description) }
        return .object(object)
    }
}

extension SignedCapabilityCard {
    /// §3.2: `{"agent", "timestamp" (RFC 3339 UTC, milliseconds), "card": {…}}`.
    public var json: JSONValue {
        .object([
            "agent": .string(agent.value),
            "timestamp": .string(Self.rfc3339(timestamp)),
            "card": card.json,
        ])
    }

    /// `YYYY-MM-DDTHH:MM:SS.000Z` (cards are dated in whole seconds).
    static func rfc3339(_ seconds: UInt64) -> String {
        var text = Timestamp.iso8601(seconds)
        text.removeLast()
        return text + ".000Z"
    }
}
