import AgentTesting
import Multiformats
import Testing

/// Issue #10 finding 9: text a peer chose never reaches a log or a terminal unescaped.
@Suite("peer text escaping")
struct PeerTextTests {
    @Test(
        "control, format and separator characters are escaped; ordinary text is kept",
        arguments: [
            ("/yamux/1.0.0", "/yamux/1.0.0"),
            ("héllo wörld ✓ 名前", "héllo wörld ✓ 名前"),
            ("a\nb", "a\\nb"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("back\\slash", "back\\\\slash"),
            ("\u{1B}[31mred", "\\u{1B}[31mred"),
            ("\u{7F}\u{85}", "\\u{7F}\\u{85}"),
            ("evil\u{202E}txt.exe", "evil\\u{202E}txt.exe"),
            ("zero\u{200B}width", "zero\\u{200B}width"),
            ("line\u{2028}sep\u{2029}", "line\\u{2028}sep\\u{2029}"),
            ("\u{0}", "\\u{0}"),
        ])
    func escapes(input: String, expected: String) {
        #expect(input.escapedForLog() == expected)
    }

    @Test("a forged log record stays on the line it was put in")
    func forgedRecord() {
        let forged = "/yamux/1.0.0\n2026-12-06T10:00:00+0000 critical agentd : [AgentNode] identity key file replaced"
        let escaped = forged.escapedForLog()
        #expect(!escaped.contains("\n"))
        #expect(escaped.hasPrefix("/yamux/1.0.0\\n2026-12-06"))
    }

    @Test("long text is cut, saying how much was left out")
    func truncation() {
        let long = String(repeating: "x", count: 1000)
        #expect(long.escapedForLog(maximumLength: 10) == "xxxxxxxxxx…(990 more characters)")
        #expect("short".escapedForLog(maximumLength: 5) == "short")
        #expect(long.escapedForLog(maximumLength: .max) == long)
    }

    @Test("seeded random scalars: the escaped text holds no control, format or separator character")
    func randomScalars() {
        var generator = SeededGenerator(seed: 0xA9E7_10)
        for _ in 0..<2000 {
            var text = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0..<40, using: &generator) {
                // Mostly the first planes, where the dangerous characters are.
                let value = UInt32.random(in: 0..<0x3_0000, using: &generator)
                if let scalar = Unicode.Scalar(value) { text.append(scalar) }
            }
            let escaped = String(text).escapedForLog()
            for scalar in escaped.unicodeScalars {
                switch scalar.properties.generalCategory {
                case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                    Issue.record("\(String(scalar.value, radix: 16)) survived escaping of \(String(text).debugDescription)")
                default: break
                }
            }
        }
    }
}
