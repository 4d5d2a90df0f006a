/// A set of semantic versions, written in the range syntax of spec/cards.md §4 (a strict subset
/// of npm's node-semver ranges): `1.2.3`, `=1.2`, `>=1.0 <2.0`, `^1.2`, `~1.2.3`, `1.x`, `*`,
/// alternatives joined by `||`.
public struct VersionRange: Hashable, Sendable, CustomStringConvertible {
    /// spec/cards.md §4 limits.
    public static let maximumLength = 256
    public static let maximumAlternatives = 8
    public static let maximumComparators = 8
    /// Numbers in a range are below 2^63, so that the +1 of an upper bound never overflows.
    static let maximumNumber: UInt64 = 1 << 63 - 1

    /// One primitive comparison.
    struct Bound: Hashable, Sendable {
        enum Operator: Hashable, Sendable { case less, lessOrEqual, greater, greaterOrEqual, equal }
        let op: Operator
        let version: SemanticVersion

        func admits(_ candidate: SemanticVersion) -> Bool {
            switch op {
            case .less: return candidate < version
            case .lessOrEqual: return !(version < candidate)
            case .greater: return version < candidate
            case .greaterOrEqual: return !(candidate < version)
            case .equal: return candidate.hasSamePrecedence(as: version)
            }
        }
    }

    /// One alternative: every bound must hold.
    struct Alternative: Hashable, Sendable {
        var bounds: [Bound] = []
        /// The full versions with a pre-release written in the alternative's comparators: a
        /// pre-release version matches only with the same MAJOR.MINOR.PATCH as one of them (§4.3).
        var prereleaseCores: [SemanticVersion] = []

        func admits(_ version: SemanticVersion) -> Bool {
            guard bounds.allSatisfy({ $0.admits(version) }) else { return false }
            return version.prerelease.isEmpty || prereleaseCores.contains { $0.hasSameCore(as: version) }
        }
    }

    let alternatives: [Alternative]
    /// The text as given.
    public let description: String

    /// Every version (`*`).
    public static let any = try! VersionRange("*")

    /// Parses `text` (§4.1).
    /// - Throws: `.invalidRange` saying which part is wrong.
    public init(_ text: String) throws(CardError) {
        guard text.utf8.count <= Self.maximumLength else {
            throw CardError(.invalidRange, "a version range is at most \(Self.maximumLength) bytes, not \(text.utf8.count)")
        }
        guard text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw CardError(.invalidRange, "a version range is printable ASCII")
        }
        let sets = text.split(separator: "||", omittingEmptySubsequences: false)
        guard sets.count <= Self.maximumAlternatives else {
            throw CardError(.invalidRange, "\"\(text)\": more than \(Self.maximumAlternatives) alternatives")
        }
        var alternatives: [Alternative] = []
        for set in sets {
            let comparators = set.split(separator: " ", omittingEmptySubsequences: true)
            guard !comparators.isEmpty else {
                throw CardError(.invalidRange, "\"\(text)\": an empty alternative")
            }
            guard comparators.count <= Self.maximumComparators else {
                throw CardError(.invalidRange, "\"\(text)\": more than \(Self.maximumComparators) comparators in one alternative")
            }
            var alternative = Alternative()
            for comparator in comparators {
                try Self.add(String(comparator), to: &alternative, range: text)
            }
            alternatives.append(alternative)
        }
        self.alternatives = alternatives
        self.description = text
    }

    /// Whether `version` is in the range: some alternative admits it.
    public func contains(_ version: SemanticVersion) -> Bool {
        alternatives.contains { $0.admits(version) }
    }

    /// A partial version: MAJOR[.MINOR[.PATCH[-PRERELEASE]]], wildcards as nil.
    private struct Partial {
        var numbers: [UInt64]
        var full: SemanticVersion?
    }

    private static func add(_ comparator: String, to alternative: inout Alternative, range: String) throws(CardError) {
        var body = Substring(comparator)
        enum Prefix { case none, caret, tilde, op(Bound.Operator) }
        var prefix = Prefix.none
        for (token, value) in [(">=", Prefix.op(.greaterOrEqual)), ("<=", .op(.lessOrEqual)), (">", .op(.greater)),
                               ("<", .op(.less)), ("=", .op(.equal)), ("^", .caret), ("~", .tilde)]
        where body.hasPrefix(token) {
            prefix = value
            body = body.dropFirst(token.count)
            break
        }
        let partial = try parsePartial(body, comparator: comparator, range: range)
        if partial.numbers.isEmpty {
            // `*`, `x`, `X`: every version, written alone.
            guard case .none = prefix else {
                throw CardError(.invalidRange, "\"\(range)\": a wildcard takes no operator (\"\(comparator)\")")
            }
            return
        }
        if let full = partial.full, !full.prerelease.isEmpty { alternative.prereleaseCores.append(full) }
        let n = partial.numbers
        let major = n[0]
        func version(_ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> SemanticVersion {
            SemanticVersion(major: a, minor: b, patch: c)
        }
        // The version just past the partial: 1 → 2.0.0, 1.2 → 1.3.0.
        let next = n.count == 1 ? version(major + 1) : version(major, n[1] + 1)
        let low = partial.full ?? version(major, n.count > 1 ? n[1] : 0)
        var bounds: [Bound] = []
        switch prefix {
        case .none, .op(.equal):
            if let full = partial.full {
                bounds = [Bound(op: .equal, version: full)]
            } else {
                bounds = [Bound(op: .greaterOrEqual, version: low), Bound(op: .less, version: next)]
            }
        case .op(.greaterOrEqual):
            bounds = [Bound(op: .greaterOrEqual, version: low)]
        case .op(.greater):
            bounds = [partial.full.map { Bound(op: .greater, version: $0) } ?? Bound(op: .greaterOrEqual, version: next)]
        case .op(.less):
            bounds = [Bound(op: .less, version: low)]
        case .op(.lessOrEqual):
            bounds = [partial.full.map { Bound(op: .lessOrEqual, version: $0) } ?? Bound(op: .less, version: next)]
        case .tilde:
            let upper = n.count == 1 ? version(major + 1) : version(major, n[1] + 1)
            bounds = [Bound(op: .greaterOrEqual, version: low), Bound(op: .less, version: upper)]
        case .caret:
            let upper: SemanticVersion
            if major > 0 || n.count == 1 {
                upper = version(major + 1)
            } else if n[1] > 0 || n.count == 2 {
                upper = version(0, n[1] + 1)
            } else {
                upper = version(0, 0, n[2] + 1)
            }
            bounds = [Bound(op: .greaterOrEqual, version: low), Bound(op: .less, version: upper)]
        }
        alternative.bounds += bounds
    }

    private static func parsePartial(_ text: Substring, comparator: String, range: String) throws(CardError) -> Partial {
        let bad = CardError(.invalidRange, "\"\(range)\": \"\(comparator)\" is not a version or partial version")
        guard !text.isEmpty, !text.contains("+") else { throw bad }
        var core = text
        var prerelease: Substring?
        if let dash = text.firstIndex(of: "-") {
            core = text[..<dash]
            prerelease = text[text.index(after: dash)...]
        }
        let parts = core.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 3 else { throw bad }
        var numbers: [UInt64] = []
        var wildcard = false
        for part in parts {
            if part == "x" || part == "X" || part == "*" {
                wildcard = true
                continue
            }
            // After a wildcard only wildcards (`1.x.3` is not a range).
            guard !wildcard else { throw bad }
            let value: UInt64
            do {
                value = try SemanticVersion.number(ArraySlice(part.utf8), text: String(comparator))
            } catch {
                throw bad
            }
            guard value <= maximumNumber else {
                throw CardError(.invalidRange, "\"\(range)\": numbers in a range are below 2^63")
            }
            numbers.append(value)
        }
        if let prerelease {
            // A pre-release only on a full MAJOR.MINOR.PATCH.
            guard numbers.count == 3, !prerelease.isEmpty else { throw bad }
            do {
                return Partial(numbers: numbers, full: try SemanticVersion(String(text)))
            } catch {
                throw bad
            }
        }
        return Partial(
            numbers: numbers,
            full: numbers.count == 3 ? SemanticVersion(major: numbers[0], minor: numbers[1], patch: numbers[2]) : nil)
    }
}
