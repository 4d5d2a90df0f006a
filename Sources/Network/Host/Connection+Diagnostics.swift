import NIOCore
import Session

extension Connection {
    /// Bytes delivered to each stream and not yet read by the application (for tests and status):
    /// by construction at most the stream's receive window.
    func diagnosticBufferedInboundBytes() async throws -> [YamuxStreamID: Int] {
        try await eventLoop.submit {
            self.streams.mapValues { state in
                state.inbound.reduce(0) { $0 + $1.readableBytes }
            }
        }.get()
    }
}
