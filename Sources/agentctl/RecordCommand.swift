import AgentNode
import ArgumentParser
import Foundation
import Identity
import Multiformats
import Resolution

#if canImport(Glibc)
import Glibc
#endif

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Create and verify signed .agent records offline (format: spec/records.md).",
        subcommands: [Create.self, Verify.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a .agent record with the identity in the data directory.",
            discussion: "Writes the binary record to --out, or to stdout when stdout is not a terminal.")

        @Option(help: "The name, e.g. alice or alice.agent (case-insensitive).")
        var name: String
        @Option(name: .customLong("address"), help: "A multiaddr where the agent can be reached (repeatable).")
        var addresses: [String] = []
        @Option(name: .customLong("protocol"), help: "A protocol id the agent speaks (repeatable).")
        var protocols: [String] = []
        @Option(help: "Seconds the record stays valid (\(RecordLimits.minimumTTL)–\(RecordLimits.maximumTTL)).")
        var ttl: UInt32 = RecordLimits.defaultTTL
        @Option(help: "Sequence number; each update needs a higher one (default: the timestamp).")
        var seq: UInt64?
        @Option(help: "Signing time in seconds since the Unix epoch (default: now).")
        var timestamp: UInt64?
        @Option(
            name: .customLong("rotate-from"),
            help: "Key file of the key that holds the name now; it endorses this identity as the new holder.")
        var rotateFrom: String?
        @Option(help: "Write the record to this file.")
        var out: String?
        @OptionGroup var dataDir: DataDirOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            try Output.run(json: output.json) {
                let agentName = try AgentName(name)
                var parsedAddresses: [Multiaddr] = []
                for text in addresses {
                    do {
                        parsedAddresses.append(try Multiaddr(text))
                    } catch let error as MultiformatsError {
                        throw CLIError(.usage, kind: error.kind.rawValue, "bad --address \"\(text)\": \(error.message)")
                    }
                }
                let directory = DataDirectory.resolve(explicit: dataDir.dataDir)
                let key = try KeyFile.read(from: directory.identityKeyPath)
                let time = timestamp ?? currentUnixTime()
                let rotation = try rotateFrom.map { path throws -> RecordRotation in
                    let previous = try KeyFile.read(from: path)
                    return RecordRotation.endorse(name: agentName, newKey: key.publicKey, by: previous)
                }
                let record = AgentRecord(
                    name: agentName, publicKey: key.publicKey, seq: seq ?? time, timestamp: time, ttl: ttl,
                    addresses: parsedAddresses, protocols: protocols, rotation: rotation)
                let signed = try record.signed(with: key)
                // Refuse to produce a record others would refuse (TTL range, self-certifying names);
                // checked at its own timestamp so past-dated records can still be made for tests.
                try signed.validate(now: time)

                if let out {
                    try PrivateFile.write(signed.bytes, to: out, mode: 0o644, overwrite: true)
                }
                if output.json {
                    var object = RecordJSON.object(signed)
                    object["record_base64"] = Data(signed.bytes).base64EncodedString()
                    if let out { object["file"] = out }
                    Output.write(Output.json(object))
                } else if let out {
                    Output.write("wrote record for \(agentName) (seq \(record.seq), \(signed.bytes.count) bytes) to \(out)\n")
                } else {
                    guard isatty(STDOUT_FILENO) == 0 else {
                        throw CLIError(
                            .usage, kind: "terminal_output",
                            "refusing to write a binary record to a terminal; use --out FILE, redirect stdout, or --json")
                    }
                    FileHandle.standardOutput.write(Data(signed.bytes))
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a record file and print it as JSON; exit 2 with the reason when it is invalid.")

        @Argument(help: "The record file, or - for stdin.")
        var file: String
        @Option(help: "Check validity at this time, in seconds since the Unix epoch (default: now).")
        var now: UInt64?
        @OptionGroup var output: OutputOptions

        func run() throws {
            try Output.run(json: output.json) {
                let bytes = try readInput(file, limit: RecordLimits.maximumRecordSize + 1)
                let signed = try SignedAgentRecord(bytes: bytes)
                try signed.validate(now: now ?? currentUnixTime())
                var object = RecordJSON.object(signed)
                object["valid"] = true
                Output.write(Output.json(object))
            }
        }
    }
}

/// Reads a file or stdin (`-`), at most `limit` bytes: one byte over a format's limit is enough for
/// its decoder to say "oversized", and a wrong path to a huge file is not slurped.
func readInput(_ path: String, limit: Int) throws -> [UInt8] {
    if path == "-" {
        var bytes: [UInt8] = []
        while bytes.count < limit {
            let chunk = FileHandle.standardInput.readData(ofLength: limit - bytes.count)
            if chunk.isEmpty { break }
            bytes.append(contentsOf: chunk)
        }
        return bytes
    }
    do {
        return try PrivateFile.read(path, limit: 1 << 20, requirePrivate: false).prefix(limit).map { $0 }
    } catch {
        throw CLIError(.failed, kind: error.kind.rawValue, error.message)
    }
}

/// The JSON form of a record, shared by `record verify`, `record create --json` and (later) `resolve`.
enum RecordJSON {
    static func object(_ signed: SignedAgentRecord) -> [String: Any] {
        let record = signed.record
        var object: [String: Any] = [
            "name": record.name.value,
            "peer_id": record.peerID.description,
            "did": DIDKey.string(for: record.publicKey),
            "public_key": Data(record.publicKey.rawRepresentation).base64EncodedString(),
            "seq": record.seq,
            "timestamp": Timestamp.rfc3339Milliseconds(record.timestamp),
            "timestamp_unix": record.timestamp,
            "ttl": record.ttl,
            "expires": Timestamp.rfc3339Milliseconds(record.expires),
            "expires_unix": record.expires,
            "addresses": record.addresses.map(\.description),
            "protocols": record.protocols,
            "dht_key": record.name.dhtKey.map { String(format: "%02x", $0) }.joined(),
            "size": signed.bytes.count,
        ]
        if let rotation = record.rotation {
            object["rotation"] = ["previous_peer_id": PeerID(publicKey: rotation.previousKey).description]
        }
        if let owner = record.name.selfCertifyingPeerID {
            object["self_certifying_peer_id"] = owner.description
        }
        return object
    }
}
