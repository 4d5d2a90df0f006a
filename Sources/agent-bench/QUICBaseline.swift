import CQuicBaseline
import Foundation

/// The plain C QUIC baseline (Sources/CQuicBaseline, issue #13): a client and a server on the same
/// ngtcp2 + GnuTLS layer as agentd, in blocking loops on their own threads, one `sendto` per
/// datagram. Each call runs on a thread of its own, off Swift's cooperative pool.
enum QUICBaseline {
    struct Download {
        /// Bytes per second, stream open to FIN.
        var rate: Double
        /// CPU seconds of the sending and receiving thread.
        var senderCPU: Double
        var receiverCPU: Double
    }

    /// A one-stream download of `bytes` with agentd's default windows.
    static func download(bytes: Int, streamWindow: UInt64, connectionWindow: UInt64) async throws -> Download {
        try await offPool {
            var result = cqb_transfer()
            var message = [CChar](repeating: 0, count: 512)
            guard cqb_download(UInt64(bytes), streamWindow, connectionWindow, &result, &message, message.count) == 0
            else { throw BenchmarkError(text(message)) }
            return Download(
                rate: Double(bytes) / result.seconds, senderCPU: result.sender_cpu, receiverCPU: result.receiver_cpu)
        }
    }

    /// Dial-to-handshake-complete times of `count` connections in turn, and their rate (closes included).
    static func handshakes(count: Int) async throws -> (times: [Double], perSecond: Double) {
        try await offPool {
            var times = [Double](repeating: 0, count: count)
            var total = 0.0
            var message = [CChar](repeating: 0, count: 512)
            guard cqb_handshakes(Int32(count), &times, &total, &message, message.count) == 0 else {
                throw BenchmarkError(text(message))
            }
            return (times, Double(count) / total)
        }
    }

    private static func text(_ message: [CChar]) -> String {
        String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Runs `body` (which blocks) on a new thread.
    private static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.start()
        }
    }
}
