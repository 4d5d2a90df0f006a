import AgentTesting
import Testing

@testable import Multiformats

@Suite("multiaddr text and binary forms")
struct MultiaddrTests {
    @Test("multiformats/go/rust-multiaddr vectors: text ↔ binary", arguments: try TestVectors.array("multiaddr.json"))
    func vectors(vector: Vector) throws {
        let text = try vector.string("text")
        let canonical = vector["canonical_text"] ?? text
        let bytes = try vector.hex("hex")
        let parsed = try Multiaddr(text)
        #expect(parsed.bytes == bytes)
        #expect(parsed.description == canonical)
        let decoded = try Multiaddr(bytes: bytes)
        #expect(decoded == parsed)
        #expect(decoded.description == canonical)
        #expect(try Multiaddr(canonical) == parsed)
    }

    @Test("malformed text is refused with a message", arguments: try TestVectors.strings("multiaddr.json", "invalid"))
    func invalidText(text: String) {
        #expect(throws: MultiformatsError.self) { _ = try Multiaddr(text) }
    }

    @Test("malformed binary is refused", arguments: try TestVectors.strings("multiaddr.json", "invalid_hex"))
    func invalidBinary(hex: String) throws {
        let bytes = try Hex.decode(hex)
        #expect(throws: MultiformatsError.self) { _ = try Multiaddr(bytes: bytes) }
    }

    @Test("errors name the problem")
    func messages() {
        #expect(throws: MultiformatsError(.unknownProtocol, "unknown multiaddr protocol \"foo\" in \"/foo/1\"")) {
            _ = try Multiaddr("/foo/1")
        }
        #expect(throws: MultiformatsError(.invalidMultiaddr, "/tcp port \"65536\" is not a number from 0 to 65535")) {
            _ = try Multiaddr("/tcp/65536")
        }
        #expect(throws: MultiformatsError(.unknownProtocol, "unknown multiaddr protocol code 127")) {
            _ = try Multiaddr(bytes: [0x7f])
        }
        #expect(throws: MultiformatsError.self) { _ = try Multiaddr("/ip4/01.2.3.4") }
        #expect(throws: MultiformatsError.self) { _ = try Multiaddr("/tcp/+80") }
    }

    @Test("peer id accessor finds the last /p2p")
    func peerID() throws {
        let address = try Multiaddr(
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit/p2p/12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV"
        )
        #expect(address.peerIDMultihash.map(PeerIDText.base58) == "12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV")
        #expect(try Multiaddr("/ip4/1.2.3.4/tcp/5").peerIDMultihash == nil)
    }

    @Test("random and mutated binary never crashes the parser (seed 3, 20000 cases)")
    func hostileBinary() throws {
        var generator = SeededGenerator(seed: 3)
        let seeds = try TestVectors.array("multiaddr.json").map { try $0.hex("hex") }
        for round in 0..<20_000 {
            let input = round % 2 == 0
                ? generator.mutate(seeds[round % seeds.count])
                : generator.bytes(Int.random(in: 0...40, using: &generator))
            do {
                let parsed = try Multiaddr(bytes: input)
                // Whatever parses must re-encode to exactly the input: one encoding per address.
                #expect(parsed.bytes == input)
                #expect(try Multiaddr(parsed.description) == parsed)
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
    }

    @Test("random and mutated text never crashes the parser (seed 4, 10000 cases)")
    func hostileText() throws {
        var generator = SeededGenerator(seed: 4)
        let seeds = try TestVectors.array("multiaddr.json").map { Array(try $0.string("text").utf8) }
        for round in 0..<10_000 {
            let input = String(decoding: generator.mutate(seeds[round % seeds.count]), as: UTF8.self)
            do {
                let parsed = try Multiaddr(input)
                #expect(try Multiaddr(bytes: parsed.bytes) == parsed)
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
    }
}
