import Logging
import NIOConcurrencyHelpers
import Testing

@testable import AgentNode

/// Issue #10 finding 9: the daemon's text log cannot be forged by text a peer chose.
@Suite("text log handler")
struct TextLogHandlerTests {
    static func capture(_ body: (Logger) -> Void) -> String {
        let lines = NIOLockedValueBox("")
        var handler = TextLogHandler(label: "agentd")
        handler.write = { line in lines.withLockedValue { $0 += line } }
        body(Logger(label: "agentd", factory: { _ in handler }))
        return lines.withLockedValue { $0 }
    }

    @Test("a peer's muxer name with a forged record comes out on one escaped line")
    func forgedLineEscaped() {
        let muxer = "/yamux/1.0.0\n2026-12-06T10:00:00+0000 critical agentd : [AgentNode] identity key file replaced"
        let output = Self.capture { logger in
            logger.info("connection error: no common muxer: the peer announced \(muxer)", metadata: ["muxer": "\(muxer)"])
        }
        #expect(output.filter { $0 == "\n" }.count == 1, "\(output)")
        #expect(output.hasSuffix("identity key file replaced\n"))
        #expect(output.contains("announced /yamux/1.0.0\\n2026-12-06T10:00:00+0000 critical"))
        #expect(output.contains("muxer=/yamux/1.0.0\\n2026"))
    }

    @Test("the layout: timestamp, level, label, sorted metadata, source, message")
    func layout() {
        let output = Self.capture { logger in
            var logger = logger
            logger[metadataKey: "peer"] = "12D3KooW"
            logger.warning("refusing inbound connection", metadata: ["conn": "7"])
        }
        let fields = output.split(separator: " ", maxSplits: 6).map(String.init)
        #expect(fields.count == 7, "\(output)")
        #expect(fields[0].count >= 24 && fields[0].contains("T"))
        #expect(Array(fields[1...5]) == ["warning", "agentd", ":", "conn=7", "peer=12D3KooW"])
        #expect(fields[6].hasSuffix("refusing inbound connection\n"))
    }
}
