import Foundation
import Logging
import Multiformats

/// Log output of the daemon: text lines (swift-log's stream handler) or one JSON object per line,
/// both on stderr.
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json

    /// Bootstraps swift-log once for the process.
    public func bootstrap(level: Logger.Level) {
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = TextLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}

/// Writes `{"ts":…,"level":…,"label":…,"msg":…,…metadata}` lines to stderr.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: String] = [
            "ts": ISO8601DateFormatter().string(from: Date()), "level": event.level.rawValue, "label": label,
            "msg": "\(event.message)",
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            object[key] = "\(value)"
        }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return
        }
        FileHandle.standardError.write(data + Data([0x0a]))
    }
}

/// Writes `TIMESTAMP LEVEL LABEL : key=value … [SOURCE] MESSAGE` lines to stderr, the layout of
/// swift-log's `StreamLogHandler`, with one difference that matters: the message and every metadata
/// value are escaped (`String.escapedForLog`), so that text a peer chose (a protocol id, a muxer
/// name, an error quoting either) can never start a line of its own and pass for a record of ours
/// (issue #10, finding 9). The JSON format is safe by construction (JSON strings escape them).
struct TextLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    /// Where each finished line goes (stderr; tests capture it).
    var write: @Sendable (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 })
        var line = "\(Self.timestamp()) \(event.level) \(label) :"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(key.escapedForLog(maximumLength: .max))=\("\(value)".escapedForLog(maximumLength: .max))"
        }
        line += " [\(event.source.escapedForLog(maximumLength: .max))] \("\(event.message)".escapedForLog(maximumLength: .max))\n"
        write(line)
    }

    private static func timestamp() -> String {
        var buffer = [Int8](repeating: 0, count: 64)
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
