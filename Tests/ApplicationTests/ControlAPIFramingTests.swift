import NIOCore
import Testing

@testable import Application

@Suite("Control API framing: newline-delimited lines with a length limit")
struct ControlAPIFramingTests {
    func lines(_ framer: inout LineFramer) throws -> [String] {
        var result: [String] = []
        while let line = try framer.nextLine() { result.append(String(buffer: line)) }
        return result
    }

    @Test("lines split on \\n, a \\r before it is dropped, a partial line waits for its newline")
    func splitting() throws {
        var framer = LineFramer(maxLineLength: 100)
        framer.append(ByteBuffer(string: "one\ntwo\r\nthr"))
        #expect(try lines(&framer) == ["one", "two"])
        #expect(framer.bufferedByteCount == 3)
        framer.append(ByteBuffer(string: "ee\n\n"))
        #expect(try lines(&framer) == ["three", ""])
        #expect(framer.bufferedByteCount == 0)
    }

    @Test("a line of exactly the limit passes; one byte more fails, with or without its newline")
    func limit() throws {
        var framer = LineFramer(maxLineLength: 10)
        framer.append(ByteBuffer(string: String(repeating: "a", count: 10) + "\r\n"))
        #expect(try lines(&framer) == [String(repeating: "a", count: 10)])

        var withNewline = LineFramer(maxLineLength: 10)
        withNewline.append(ByteBuffer(string: String(repeating: "a", count: 11) + "\n"))
        #expect(throws: ControlAPIError.self) { try withNewline.nextLine() }

        var without = LineFramer(maxLineLength: 10)
        without.append(ByteBuffer(string: String(repeating: "a", count: 12)))
        do throws(ControlAPIError) {
            _ = try without.nextLine()
            Issue.record("a 12-byte partial line passed a 10-byte limit")
        } catch {
            #expect(error.kind == .invalidRequest)
            #expect(error.detail == "line_too_long")
        }
    }

    @Test("a line that never ends is refused once it passes the limit, not buffered further")
    func neverEnding() throws {
        var framer = LineFramer(maxLineLength: 1 << 20)
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
        var appended = 0
        var refused = false
        while appended < 4 << 20 {
            framer.append(chunk)
            appended += chunk.readableBytes
            do throws(ControlAPIError) {
                _ = try framer.nextLine()
            } catch {
                refused = true
                break
            }
        }
        #expect(refused)
        #expect(framer.bufferedByteCount <= (1 << 20) + 64 * 1024)
    }

    @Test("a long line arriving one byte at a time is found in linear time")
    func byteAtATime() throws {
        var framer = LineFramer(maxLineLength: 1 << 20)
        let byte = ByteBuffer(string: "x")
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            for _ in 0..<200_000 {
                framer.append(byte)
                if try framer.nextLine() != nil { Issue.record("a line without a newline") }
            }
        }
        framer.append(ByteBuffer(string: "\n"))
        #expect(try framer.nextLine()?.readableBytes == 200_000)
        // Quadratic rescanning would take minutes here.
        #expect(elapsed < .seconds(20))
    }
}
