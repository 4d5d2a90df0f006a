import AgentTesting
import Testing

@testable import Multiformats

@Suite("multibase: base58btc, base32, base36")
struct MultibaseTests {
    @Test("multiformats/multibase test vectors", arguments: try TestVectors.array("multibase.json"))
    func vectors(vector: Vector) throws {
        let input = try vector.hex("input_hex")
        #expect(base58btc.encode(input) == (try vector.string("base58btc")))
        #expect(Base32.encode(input) == (try vector.string("base32")))
        #expect(base36.encode(input) == (try vector.string("base36")))
        #expect(try base58btc.decode(try vector.string("base58btc")) == input)
        #expect(try Base32.decode(try vector.string("base32")) == input)
        #expect(try base36.decode(try vector.string("base36")) == input)
        #expect(Multibase.base58btc.encode(input) == "z" + (try vector.string("base58btc")))
        #expect(try Multibase.decode("b" + (try vector.string("base32"))).1 == input)
        #expect(try Multibase.decode("k" + (try vector.string("base36"))).1 == input)
    }

    @Test("base32 and base36 decode case-insensitively", arguments: try TestVectors.array("multibase.json", "case_insensitive_decode"))
    func caseInsensitive(vector: Vector) throws {
        #expect(try Multibase.decode(try vector.string("encoded")).1 == (try vector.hex("input_hex")))
    }

    @Test("characters outside the alphabet are refused", arguments: try TestVectors.array("multibase.json", "invalid"))
    func invalid(vector: Vector) throws {
        let text = try vector.string("text")
        #expect(throws: MultiformatsError.self) {
            switch try vector.string("encoding") {
            case "base58btc": _ = try base58btc.decode(text)
            default: _ = try Multibase.decode(text)
            }
        }
    }

    @Test("base32 refuses impossible lengths and non-zero tail bits")
    func base32Canonical() {
        #expect(throws: MultiformatsError.self) { _ = try Base32.decode("a") }  // 1 char: 5 bits
        #expect(throws: MultiformatsError.self) { _ = try Base32.decode("ab") }  // 'b' leaves bits set
        #expect(throws: MultiformatsError.self) { _ = try Base32.decode("my======") }
        #expect(throws: MultiformatsError.self) { _ = try Multibase.decode("") }
        #expect(throws: MultiformatsError.self) { _ = try Multibase.decode("Qabc") }
    }

    @Test("round trips and hostile text (seed 2, 5000 cases)")
    func roundTripAndHostile() throws {
        var generator = SeededGenerator(seed: 2)
        for _ in 0..<5000 {
            var bytes = generator.bytes(Int.random(in: 0...48, using: &generator))
            if Bool.random(using: &generator) { bytes.insert(0, at: 0) }
            #expect(try base58btc.decode(base58btc.encode(bytes)) == bytes)
            #expect(try base36.decode(base36.encode(bytes)) == bytes)
            #expect(try Base32.decode(Base32.encode(bytes)) == bytes)
            let garbage = String(decoding: generator.bytes(Int.random(in: 0...40, using: &generator)), as: UTF8.self)
            for decode in [{ try base58btc.decode(garbage) }, { try base36.decode(garbage) }, { try Base32.decode(garbage) }] {
                do { _ = try decode() } catch let error as MultiformatsError {
                    #expect([.invalidEncoding, .tooLarge].contains(error.kind))
                }
            }
        }
        #expect(throws: MultiformatsError.self) { _ = try base58btc.decode(String(repeating: "2", count: 9000)) }
    }
}
