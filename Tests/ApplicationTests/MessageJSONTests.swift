import Resolution
import Testing

@testable import Application

/// The JSON form of spec/messages.md §6.
@Suite("agent message JSON form")
struct MessageJSONTests {
    static func message(_ content: AgentMessage.Content?, kind: AgentMessage.Kind = .request) -> AgentMessage {
        AgentMessage(
            id: MessageID(high: 0x0123_4567_89ab_cdef, low: 42), kind: kind, sender: try! AgentName("alice"),
            recipient: try! AgentName("bob"), timestamp: 1_796_630_400_250, content: content)
    }

    @Test("text is a string, JSON is the value, other bytes are base64; type lower case; RFC 3339 with ms")
    func forms() throws {
        let text = Self.message(.text("héllo")).json
        #expect(text["type"] == .string("request"))
        #expect(text["timestamp"] == .string("2026-12-07T08:00:00.250Z"))
        #expect(text["content"] == .string("héllo"))
        #expect(text["content_encoding"] == nil)
        #expect(text["id"] == .string(MessageID(high: 0x0123_4567_89ab_cdef, low: 42).description))

        let json = Self.message(
            AgentMessage.Content(mediaType: "application/json", bytes: Array(#"{"a": [1, true]}"#.utf8))
        ).json
        #expect(json["content"] == .object(["a": .array([.number(JSONNumber(1)), .bool(true)])]))

        let binary = Self.message(AgentMessage.Content(mediaType: "image/png", bytes: [0, 255, 1])).json
        #expect(binary["content"] == .string("AP8B"))
        #expect(binary["content_encoding"] == .string("base64"))

        let none = Self.message(nil, kind: .response(inReplyTo: MessageID(high: 0, low: 7))).json
        #expect(none["content"] == nil && none["media_type"] == nil)
        #expect(none["in_reply_to"] == .string("00000000000000000000000007"))
    }

    @Test(
        "every form reads back to the same message",
        arguments: [
            AgentMessage.Content.text("plain"),
            AgentMessage.Content(mediaType: "application/json", bytes: Array(#"{"k":[1,"x"]}"#.utf8)),
            AgentMessage.Content(mediaType: "application/octet-stream", bytes: Array(0...255)),
            AgentMessage.Content(mediaType: "text/plain; charset=utf-8", bytes: [0xff]),
            AgentMessage.Content(mediaType: "application/json", bytes: Array("{not json".utf8)),
        ])
    func roundTrip(content: AgentMessage.Content) throws {
        for kind in MessageCodecTests.kinds {
            let message = Self.message(content, kind: kind)
            #expect(try AgentMessage(json: message.json) == message)
            #expect(try AgentMessage(json: JSONValue(parsing: message.json.jsonText)) == message)
        }
    }

    @Test("content from the local API: defaults, JSON values, base64")
    func contentInput() throws {
        #expect(try AgentMessage.Content(json: .string("hi"), mediaType: nil, encoding: nil) == .text("hi"))
        #expect(
            try AgentMessage.Content(
                json: .object(["b": .null, "a": .number(JSONNumber(1))]), mediaType: nil, encoding: nil)
                == AgentMessage.Content(mediaType: "application/json", bytes: Array(#"{"a":1,"b":null}"#.utf8)))
        #expect(
            try AgentMessage.Content(json: .string("s"), mediaType: .string("application/json"), encoding: nil)
                == AgentMessage.Content(mediaType: "application/json", bytes: Array(#""s""#.utf8)))
        #expect(
            try AgentMessage.Content(json: .string("AAE="), mediaType: nil, encoding: .string("base64"))
                == AgentMessage.Content(mediaType: "application/octet-stream", bytes: [0, 1]))
        #expect(try AgentMessage.Content(json: nil, mediaType: nil, encoding: nil) == nil)
    }

    @Test(
        "bad JSON input is refused with a reason",
        arguments: [
            #"{"id":"00000000000000000000000001","type":"REQUEST","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"Alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z"}"#,
            #"{"id":"0000000000000000000000000I","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07 08:00:00Z"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-02-30T08:00:00Z"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z","extra":1}"#,
            #"{"id":"00000000000000000000000001","type":"response","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z","sequence":1}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z","content":"AA=","content_encoding":"base64"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z","content":"x","media_type":"text/html"}"#,
            #"{"id":"00000000000000000000000001","type":"request","sender":"alice.agent","recipient":"bob.agent","timestamp":"2026-12-07T08:00:00.000Z","media_type":"text/html"}"#,
            #"["not an object"]"#,
        ])
    func refused(text: String) throws {
        #expect(throws: MessageError.self) { try AgentMessage(json: JSONValue(parsing: text)) }
    }

    @Test("RFC 3339 timestamps: formatting and parsing agree, fraction digits optional")
    func timestamps() throws {
        for milliseconds: UInt64 in [1, 999, 1000, 951_782_400_000, 1_796_630_400_250, 253_402_300_799_999] {
            #expect(try MessageTime.parse(MessageTime.rfc3339(milliseconds)) == milliseconds)
        }
        #expect(try MessageTime.parse("2026-12-07T08:00:00Z") == 1_796_630_400_000)
        #expect(try MessageTime.parse("2026-12-07T08:00:00.5Z") == 1_796_630_400_500)
        #expect(MessageTime.rfc3339(1_796_630_400_007) == "2026-12-07T08:00:00.007Z")
        for bad in [
            "2026-12-07T08:00:00.0000Z", "2026-12-07t08:00:00Z", "2026-12-07T24:00:00Z", "1969-12-31T23:59:59Z",
            "2026-12-07T08:00:60Z", "2026-12-07T08:00:00+00:00", "2026-13-07T08:00:00Z", "",
        ] {
            #expect(throws: MessageError.self, "\(bad)") { try MessageTime.parse(bad) }
        }
    }

    @Test("base64 decoding is canonical")
    func base64() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        for bad in ["A", "AB=", "AAB=", "AAAB==", "A===", "AA AA", "AA\nA", "=AAA", "AA=A"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }
}
