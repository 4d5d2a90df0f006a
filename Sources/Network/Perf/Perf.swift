import Identity
import NIOCore

/// perf (libp2p/specs `perf/perf.md`): the client sends the number of bytes it wants back as a
/// big-endian u64, then uploads its bytes and closes its side; the server counts them until EOF,
/// then sends the requested bytes and closes.
public enum Perf {
    public static let protocolID = "/perf/1.0.0"
    /// Chunk size for generated traffic: each write is one hop to the connection's event loop, so
    /// large chunks keep that cost small per byte.
    static let chunkSize = 1024 * 1024

    /// The measurement of one run.
    public struct Result: Sendable {
        public var uploadBytes: UInt64
        public var uploadSeconds: Double
        public var downloadBytes: UInt64
        public var downloadSeconds: Double

        public var uploadBytesPerSecond: Double { uploadSeconds > 0 ? Double(uploadBytes) / uploadSeconds : 0 }
        public var downloadBytesPerSecond: Double { downloadSeconds > 0 ? Double(downloadBytes) / downloadSeconds : 0 }
    }

    /// The most bytes the server sends or takes in one request by default: 1 GiB, what
    /// `agent-bench session` moves per run. The spec sets no limit, so an unchecked 64-bit size
    /// would let one SYN of 8 bytes keep a node sending for ever (finding 3 of issue #10).
    public static let defaultMaximumBytes: UInt64 = 1 << 30

    /// Registers the perf server on `host`. A node serves perf only when asked (`agentd --perf`):
    /// it is a load generator for whoever connects.
    /// - Parameter maximumBytes: a request for more, or an upload of more, is answered with a
    ///   stream reset.
    public static func register(on host: Host, maximumBytes: UInt64 = defaultMaximumBytes) {
        let logger = host.core.logger
        host.handle(protocolID) { stream in
            do {
                let header = try await stream.readExactly(8)
                let requested = header.getInteger(at: header.readerIndex, as: UInt64.self)!
                guard requested <= maximumBytes else {
                    logger.debug("perf: refused a request for \(requested) bytes (at most \(maximumBytes))")
                    stream.reset()
                    return
                }
                var uploaded: UInt64 = 0
                while let chunk = try await stream.read() {
                    uploaded += UInt64(chunk.readableBytes)
                    guard uploaded <= maximumBytes else {
                        logger.debug("perf: refused an upload of more than \(maximumBytes) bytes")
                        stream.reset()
                        return
                    }
                }
                try await send(requested, on: stream)
                try await stream.closeWrite()
            } catch {
                stream.reset()
            }
        }
    }

    /// Runs perf against `peer`: uploads `upload` bytes, then downloads `download` bytes.
    /// Cancelling the task resets the stream (a write waiting for the peer's window or a read
    /// waiting for its bytes ends at once) and throws `CancellationError`.
    public static func run(_ host: Host, peer: PeerID, upload: UInt64, download: UInt64) async throws -> Result {
        let stream = try await host.newStream(to: peer, protocols: [protocolID])
        do {
            return try await withTaskCancellationHandler {
                try await run(on: stream, peer: peer, upload: upload, download: download)
            } onCancel: {
                stream.reset()
            }
        } catch {
            stream.reset()
            try Task.checkCancellation()
            throw error
        }
    }

    private static func run(on stream: MuxedStream, peer: PeerID, upload: UInt64, download: UInt64) async throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        var header = ByteBuffer()
        header.writeInteger(download)
        try await stream.write(header)
        try await send(upload, on: stream)
        try await stream.closeWrite()
        let uploaded = clock.now
        var received: UInt64 = 0
        while let chunk = try await stream.read() { received += UInt64(chunk.readableBytes) }
        let downloaded = clock.now
        guard received == download else {
            throw NetworkError(.protocolViolation, "perf: asked for \(download) bytes, received \(received)")
        }
        return Result(
            uploadBytes: upload, uploadSeconds: (uploaded - start).seconds, downloadBytes: received,
            downloadSeconds: (downloaded - uploaded).seconds)
    }

    static func send(_ count: UInt64, on stream: MuxedStream) async throws {
        let chunk = ByteBuffer(repeating: 0, count: chunkSize)
        var remaining = count
        while remaining > 0 {
            let size = Int(min(remaining, UInt64(chunkSize)))
            try await stream.write(size == chunkSize ? chunk : chunk.getSlice(at: 0, length: size)!)
            remaining -= UInt64(size)
        }
    }
}

extension Duration {
    /// The duration in seconds as a `Double`.
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
