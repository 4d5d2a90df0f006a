import Identity
import Resolution

/// A capability card (spec/cards.md §2): what one capability of an agent offers, the interfaces
/// and methods it exposes and where its documentation lives. One card per capability; an agent
/// may publish several.
public struct CapabilityCard: Hashable, Sendable {
    /// A named, typed value a method takes or returns.
    public struct Field: Hashable, Sendable {
        public var name: String
        public var type: String
        public var description: String

        public init(name: String, type: String, description: String = "") {
            self.name = name
            self.type = type
            self.description = description
        }
    }

    public struct Method: Hashable, Sendable {
        public var name: String
        public var parameters: [Field]
        public var returns: [Field]
        public var description: String

        public init(name: String, parameters: [Field] = [], returns: [Field] = [], description: String = "") {
            self.name = name
            self.parameters = parameters
            self.returns = returns
            self.description = description
        }
    }

    public struct Interface: Hashable, Sendable {
        public var name: String
        public var methods: [Method]

        public init(name: String, methods: [Method] = []) {
            self.name = name
            self.methods = methods
        }
    }

    /// The capability's name (§2.1), the key it is found by.
    public var name: String
    public var version: SemanticVersion
    public var description: String
    public var interfaces: [Interface]
    /// A URL (`https://…` or `http://…`), or empty.
    public var documentation: String

    public init(
        name: String, version: SemanticVersion, description: String = "", interfaces: [Interface] = [],
        documentation: String = ""
    ) {
        self.name = name
        self.version = version
        self.description = description
        self.interfaces = interfaces
        self.documentation = documentation
    }

    /// Checks every rule of §2 that does not depend on the encoding.
    /// - Throws: `.invalidCapability`, `.malformed` (a limit, an identifier, a URL).
    public func check() throws(CardError) {
        try Self.checkCapabilityName(name)
        try Limits.checkText(description, limit: Limits.descriptionBytes, "the card's description")
        guard interfaces.count <= Limits.interfaces else {
            throw CardError(.malformed, "a card has at most \(Limits.interfaces) interfaces, not \(interfaces.count)")
        }
        for interface in interfaces {
            try Limits.checkIdentifier(interface.name, "an interface name")
            guard interface.methods.count <= Limits.methods else {
                throw CardError(.malformed, "interface \(interface.name) has \(interface.methods.count) methods, over \(Limits.methods)")
            }
            for method in interface.methods {
                try Limits.checkIdentifier(method.name, "a method name")
                try Limits.checkText(method.description, limit: Limits.descriptionBytes, "the description of method \(method.name)")
                for (list, what) in [(method.parameters, "parameters"), (method.returns, "returns")] {
                    guard list.count <= Limits.fields else {
                        throw CardError(.malformed, "method \(method.name) has \(list.count) \(what), over \(Limits.fields)")
                    }
                    for field in list {
                        try Limits.checkIdentifier(field.name, "a \(what) name of method \(method.name)")
                        try Limits.checkType(field.type)
                        try Limits.checkText(field.description, limit: Limits.fieldDescriptionBytes, "the description of \(field.name)")
                    }
                }
            }
        }
        try Limits.checkDocumentation(documentation)
    }

    /// §2.1: 1–64 bytes of `a–z 0–9 . _ -`, starting and ending with a letter or digit.
    public static func checkCapabilityName(_ name: String) throws(CardError) {
        let bytes = Array(name.utf8)
        func alphanumeric(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        }
        guard !bytes.isEmpty, bytes.count <= Limits.capabilityNameBytes,
            bytes.allSatisfy({ alphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }),
            alphanumeric(bytes.first!), alphanumeric(bytes.last!)
        else {
            throw CardError(
                .invalidCapability,
                "\"\(name)\" is not a capability name: 1 to \(Limits.capabilityNameBytes) of a-z 0-9 . _ -, starting and ending with a letter or digit")
        }
    }

    /// The DHT key its providers are announced under (§7): the sha2-256 multihash of
    /// `"/agent/cap/" ‖ name`.
    public static func providerKey(capability name: String) -> [UInt8] {
        [0x12, 0x20] + SHA256.hash(Array(("/agent/cap/" + name).utf8))
    }

    /// The limits of spec/cards.md §2.
    public enum Limits {
        public static let signedCardBytes = 16384
        public static let capabilityNameBytes = 64
        public static let descriptionBytes = 1024
        public static let fieldDescriptionBytes = 256
        public static let interfaces = 16
        public static let methods = 32
        public static let fields = 16
        public static let identifierBytes = 64
        public static let typeBytes = 64
        public static let documentationBytes = 512

        static func checkText(_ text: String, limit: Int, _ what: String) throws(CardError) {
            guard text.utf8.count <= limit else {
                throw CardError(.malformed, "\(what) is \(text.utf8.count) bytes, over \(limit)")
            }
        }

        /// 1–64 bytes: a letter or `_`, then letters, digits, `_ . -`.
        static func checkIdentifier(_ text: String, _ what: String) throws(CardError) {
            let bytes = Array(text.utf8)
            func letter(_ byte: UInt8) -> Bool {
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || byte == UInt8(ascii: "_")
            }
            func rest(_ byte: UInt8) -> Bool {
                letter(byte) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "-")
            }
            guard !bytes.isEmpty, bytes.count <= identifierBytes, letter(bytes[0]), bytes.allSatisfy(rest) else {
                throw CardError(
                    .malformed, "\(what) \"\(text)\" is not an identifier (1 to \(identifierBytes) of A-Z a-z 0-9 _ . -, not starting with a digit, . or -)")
            }
        }

        /// 1–64 bytes of printable ASCII (0x20–0x7E).
        static func checkType(_ text: String) throws(CardError) {
            let bytes = Array(text.utf8)
            guard !bytes.isEmpty, bytes.count <= typeBytes, bytes.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else {
                throw CardError(.malformed, "a type \"\(text)\" is not 1 to \(typeBytes) bytes of printable ASCII")
            }
        }

        /// Empty, or up to 512 bytes of 0x21–0x7E starting with `https://` or `http://` and more.
        static func checkDocumentation(_ text: String) throws(CardError) {
            guard !text.isEmpty else { return }
            let bytes = Array(text.utf8)
            let scheme = text.hasPrefix("https://") ? 8 : text.hasPrefix("http://") ? 7 : 0
            guard bytes.count <= documentationBytes, scheme > 0, bytes.count > scheme, bytes.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E })
            else {
                throw CardError(
                    .malformed, "documentation must be an http:// or https:// URL of at most \(documentationBytes) bytes of printable ASCII without spaces")
            }
        }
    }
}
