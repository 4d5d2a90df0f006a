import AgentTesting
import Foundation
import Testing

@testable import Application

@Suite("Control API JSON: the parser and encoder")
struct ControlAPIJSONTests {
    @Test(
        "integers keep their exact value through parse and encode",
        arguments: [
            "0", "-1", "9007199254740993", "9223372036854775807", "-9223372036854775808",
            "9223372036854775808", "18446744073709551615",
        ])
    func exactIntegers(text: String) throws {
        let value = try JSONValue(parsing: text)
        #expect(value.numberValue?.isInteger == true)
        #expect(value.jsonText == text)
    }

    @Test("UInt64.max and Int64.min are exact; an integer past 64 bits is a parse error, not a rounded Double")
    func integerRanges() throws {
        #expect(try JSONValue(parsing: "18446744073709551615").uint64Value == UInt64.max)
        #expect(try JSONValue(parsing: "-9223372036854775808").int64Value == Int64.min)
        for text in ["18446744073709551616", "-9223372036854775809", "[1,100000000000000000000000]"] {
            do throws(ControlAPIError) {
                let value = try JSONValue(parsing: text)
                Issue.record("\(text) parsed as \(value.jsonText)")
            } catch {
                #expect(error.kind == .parseError)
                #expect(error.message.contains("64 bits"))
            }
        }
        // Written with an exponent or a fraction, the same magnitude is a Double, as §4 says.
        #expect(try JSONValue(parsing: "1.8446744073709552e19").numberValue?.isInteger == false)
    }

    @Test(
        "fractions and exponents are Doubles and read back the same",
        arguments: ["1.0", "0.1", "-2.5", "1e-07", "1.5e+300", "5e-324"])
    func doubles(text: String) throws {
        let value = try JSONValue(parsing: text)
        #expect(value.numberValue?.isInteger == false)
        let again = try JSONValue(parsing: value.jsonText)
        #expect(again == value)
    }

    @Test("1 and 1.0 stay different; a Double converts to Int64 only when exact")
    func oneAndOnePointZero() throws {
        let one = try JSONValue(parsing: "1")
        let onePointZero = try JSONValue(parsing: "1.0")
        #expect(one != onePointZero)
        #expect(onePointZero.int64Value == 1)
        #expect(try JSONValue(parsing: "1.5").int64Value == nil)
    }

    @Test("a non-finite Double is written as null (JSON has no NaN or infinity)")
    func nonFinite() {
        #expect(JSONValue.number(Double.nan).jsonText == "null")
        #expect(JSONValue.number(Double.infinity).jsonText == "null")
    }

    @Test("strings: escapes in, escapes out, never a raw newline or control character on the wire")
    func strings() throws {
        let value = try JSONValue(parsing: #""a\"b\\c\/d\n\t\r\b\f\u0000\u00e9\ud83d\ude00""#)
        #expect(value.stringValue == "a\"b\\c/d\n\t\r\u{8}\u{c}\u{0}é😀")
        let text = value.jsonText
        #expect(!text.contains("\n"))
        #expect(text == #""a\"b\\c/d\n\t\r\b\f\u0000é😀""#)
        #expect(try JSONValue(parsing: text) == value)
        let controls = JSONValue.string(String((0..<32).map { Character(Unicode.Scalar(UInt8($0))) }))
        #expect(controls.jsonText.utf8.allSatisfy { $0 >= 0x20 })
        #expect(try JSONValue(parsing: controls.jsonText) == controls)
    }

    @Test("objects are written with sorted keys; nested values round-trip")
    func objects() throws {
        let value: JSONValue = ["b": [1, 2.5, "x", nil, true], "a": ["nested": [:]], "c": []]
        #expect(value.jsonText == #"{"a":{"nested":{}},"b":[1,2.5,"x",null,true],"c":[]}"#)
        #expect(try JSONValue(parsing: value.jsonText) == value)
        #expect(try JSONValue(parsing: value.formatted()) == value)
        #expect(value.formatted().contains("\n  \"a\": {"))
    }

    @Test(
        "malformed JSON is a parse error",
        arguments: [
            "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "+1", "-", "1e", "1e+",
            "tru", "nul", "NaN", "Infinity", "'x'", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"",
            "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"a\u{1}b\"", "[1] [2]", "{} x", "1e400", "\u{feff}{}",
            "{\"a\":1,\"a\":2}",
        ])
    func malformed(text: String) {
        #expect(throws: ControlAPIError.self) { try JSONValue(parsing: text) }
        do throws(ControlAPIError) {
            _ = try JSONValue(parsing: text)
        } catch {
            #expect(error.kind == .parseError)
        }
    }

    @Test(
        "invalid UTF-8 is a parse error",
        arguments: [
            [0x22, 0xFF, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xE0, 0x80, 0xAF, 0x22],
            [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x22, 0xC3, 0x22],
            [0x22, 0xE2, 0x82, 0x22],
        ] as [[UInt8]])
    func invalidUTF8(bytes: [UInt8]) {
        #expect(throws: ControlAPIError.self) { try JSONValue(parsing: bytes) }
    }

    @Test("valid multi-byte UTF-8 parses")
    func validUTF8() throws {
        #expect(try JSONValue(parsing: Array("\"é€😀\"".utf8)).stringValue == "é€😀")
    }

    @Test("nesting is limited before descending: a million brackets fail fast, without recursion")
    func depthLimit() throws {
        let atLimit = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(try JSONValue(parsing: atLimit, maxDepth: 64).arrayValue != nil)
        let overLimit = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: ControlAPIError.self) { try JSONValue(parsing: overLimit, maxDepth: 64) }
        let deep = [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        do throws(ControlAPIError) {
            _ = try JSONValue(parsing: deep)
            Issue.record("a million brackets parsed")
        } catch {
            #expect(error.message.contains("nested deeper than 64"))
        }
        let deepObjects = String(repeating: "{\"a\":", count: 100_000)
        #expect(throws: ControlAPIError.self) { try JSONValue(parsing: deepObjects) }
    }

    @Test("seeded random bytes and mutations of valid JSON never crash the parser")
    func hostile() throws {
        var random = SeededGenerator(seed: 0x4A53_4F4E)
        let valid = Array(
            #"{"jsonrpc":"2.0","id":[1,{"x":"\u00e9"}],"method":"m","params":{"a":-1.5e3,"b":null}}"#.utf8)
        for _ in 0..<5000 {
            let input =
                Bool.random(using: &random)
                ? random.bytes(Int.random(in: 0..<64, using: &random)) : random.mutate(valid)
            if let value = try? JSONValue(parsing: input) {
                // Whatever parses must re-encode to something that parses to the same value.
                #expect(try JSONValue(parsing: value.jsonText) == value)
            }
        }
    }

    @Test("decode and encode Codable types; a mismatch is invalidParams naming the field")
    func codable() throws {
        struct Params: Codable, Equatable {
            var name: String
            var count: UInt64
            var extra: JSONValue?
        }
        let value: JSONValue = ["name": "bob", "count": .number(UInt64.max), "extra": ["k": [1, "two"]]]
        let decoded = try value.decode(Params.self)
        #expect(decoded == Params(name: "bob", count: UInt64.max, extra: ["k": [1, "two"]]))
        #expect(try JSONValue(encoding: decoded) == value)
        do throws(ControlAPIError) {
            _ = try JSONValue(["name": 5, "count": 1]).decode(Params.self)
            Issue.record("decoded a number as a string")
        } catch {
            #expect(error.kind == .invalidParams)
            #expect(error.message.contains("params.name"))
        }
        do throws(ControlAPIError) {
            _ = try JSONValue(["name": "x"]).decode(Params.self)
            Issue.record("decoded without count")
        } catch {
            #expect(error.message.contains("params.count is missing"))
        }
    }
}

extension JSONValue {
    fileprivate init(_ value: JSONValue) { self = value }
}
