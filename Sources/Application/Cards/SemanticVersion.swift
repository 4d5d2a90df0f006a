/// A semantic version (SemVer 2.0.0, https://semver.org): `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`,
/// spec/cards.md §3.
public struct SemanticVersion: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// One dot-separated pre-release identifier: numeric ones compare as numbers and sort before
    /// alphanumeric ones (SemVer §11.4).
    public enum Identifier: Hashable, Sendable, Comparable {
        case numeric(UInt64)
        case alphanumeric(String)

        public static func < (lhs: Identifier, rhs: Identifier) -> Bool {
            switch (lhs, rhs) {
            case (.numeric(let a), .numeric(let b)): return a < b
            case (.numeric, .alphanumeric): return true
            case (.alphanumeric, .numeric): return false
            // ASCII order (SemVer §11.4.2: "compared lexically in ASCII sort order").
            case (.alphanumeric(let a), .alphanumeric(let b)): return Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
            }
        }
    }

    /// spec/cards.md §3: the text form is at most 64 bytes.
    public static let maximumLength = 64

    public let major: UInt64
    public let minor: UInt64
    public let patch: UInt64
    public let prerelease: [Identifier]
    /// Build metadata as written (ignored by precedence, SemVer §10).
    public let build: [String]
    /// The text as parsed (a valid version has exactly one text form, given its build metadata).
    public let description: String

    public init(major: UInt64, minor: UInt64, patch: UInt64, prerelease: [Identifier] = []) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.prerelease = prerelease
        self.build = []
        var text = "\(major).\(minor).\(patch)"
        if !prerelease.isEmpty {
            text += "-" + prerelease.map { identifier in
                switch identifier {
                case .numeric(let value): return String(value)
                case .alphanumeric(let value): return value
                }
            }.joined(separator: ".")
        }
        self.description = text
    }

    /// Parses `text` as SemVer 2.0.0, strictly: no leading `v`, no leading zeros in numeric parts,
    /// no empty identifiers, numbers below 2^64.
    /// - Throws: `.invalidVersion` saying what is wrong.
    public init(_ text: String) throws(CardError) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maximumLength else {
            throw CardError(.invalidVersion, "a version is 1 to \(Self.maximumLength) bytes, not \(bytes.count)")
        }
        var core = bytes[...]
        var build: [String] = []
        if let plus = core.firstIndex(of: UInt8(ascii: "+")) {
            build = try Self.identifiers(core[(plus + 1)...], text: text, part: "build metadata", numeric: false)
                .map { String(decoding: $0, as: UTF8.self) }
            core = core[..<plus]
        }
        var prerelease: [Identifier] = []
        if let dash = core.firstIndex(of: UInt8(ascii: "-")) {
            for identifier in try Self.identifiers(core[(dash + 1)...], text: text, part: "pre-release", numeric: true) {
                prerelease.append(
                    identifier.allSatisfy(Self.isDigit)
                        ? .numeric(try Self.number(identifier, text: text))
                        : .alphanumeric(String(decoding: identifier, as: UTF8.self)))
            }
            core = core[..<dash]
        }
        let parts = core.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw CardError(.invalidVersion, "\"\(text)\" is not MAJOR.MINOR.PATCH")
        }
        self.major = try Self.number(parts[0], text: text)
        self.minor = try Self.number(parts[1], text: text)
        self.patch = try Self.number(parts[2], text: text)
        self.prerelease = prerelease
        self.build = build
        self.description = text
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    static func isIdentifierByte(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) || byte == UInt8(ascii: "-")
    }

    /// A numeric part: digits, no leading zero (except "0" itself), below 2^64.
    static func number(_ digits: ArraySlice<UInt8>, text: String) throws(CardError) -> UInt64 {
        guard !digits.isEmpty, digits.allSatisfy(isDigit) else {
            throw CardError(.invalidVersion, "\"\(text)\": \"\(String(decoding: digits, as: UTF8.self))\" is not a number")
        }
        guard digits.count == 1 || digits.first != UInt8(ascii: "0") else {
            throw CardError(.invalidVersion, "\"\(text)\": numbers have no leading zeros")
        }
        var value: UInt64 = 0
        for digit in digits {
            let (times, overflowTimes) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflowSum) = times.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
            guard !overflowTimes, !overflowSum else {
                throw CardError(.invalidVersion, "\"\(text)\": a number is 2^64 or more")
            }
            value = sum
        }
        return value
    }

    private static func identifiers(
        _ bytes: ArraySlice<UInt8>, text: String, part: String, numeric: Bool
    ) throws(CardError) -> [ArraySlice<UInt8>] {
        let identifiers = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for identifier in identifiers {
            guard !identifier.isEmpty, identifier.allSatisfy(isIdentifierByte) else {
                throw CardError(.invalidVersion, "\"\(text)\": bad \(part) identifier \"\(String(decoding: identifier, as: UTF8.self))\"")
            }
            if numeric, identifier.count > 1, identifier.first == UInt8(ascii: "0"), identifier.allSatisfy(isDigit) {
                throw CardError(.invalidVersion, "\"\(text)\": numeric \(part) identifiers have no leading zeros")
            }
        }
        return identifiers
    }

    /// Precedence (SemVer §11): build metadata is ignored; a pre-release sorts before its release.
    public static func < (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        if (lhs.major, lhs.minor, lhs.patch) != (rhs.major, rhs.minor, rhs.patch) {
            return (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
        }
        switch (lhs.prerelease.isEmpty, rhs.prerelease.isEmpty) {
        case (true, _): return false
        case (false, true): return true
        case (false, false): return lhs.prerelease.lexicographicallyPrecedes(rhs.prerelease)
        }
    }

    /// Equal precedence (build metadata ignored).
    public func hasSamePrecedence(as other: SemanticVersion) -> Bool { !(self < other) && !(other < self) }

    /// Same MAJOR.MINOR.PATCH.
    func hasSameCore(as other: SemanticVersion) -> Bool {
        (major, minor, patch) == (other.major, other.minor, other.patch)
    }
}
