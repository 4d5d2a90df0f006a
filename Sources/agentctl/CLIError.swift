import AgentNode
import Application
import Foundation
import Identity
import Multiformats
import Resolution

/// Exit codes of every agentctl command (DESIGN §5).
enum ExitStatus: Int32 {
    case ok = 0
    /// Not found, or the operation failed.
    case failed = 1
    /// Bad usage or invalid input.
    case usage = 2
    /// The daemon is not reachable.
    case unreachable = 3
}

/// An error at the CLI edge: module errors are mapped to an exit status and a stable `kind` here
/// and nowhere else.
struct CLIError: Error {
    var status: ExitStatus
    var kind: String
    var message: String
    var hint: String?

    init(_ status: ExitStatus, kind: String, _ message: String, hint: String? = nil) {
        self.status = status
        self.kind = kind
        self.message = message
        self.hint = hint
    }

    init(_ error: Error) {
        switch error {
        case let error as CLIError:
            self = error
        case let error as IdentityError:
            switch error.kind {
            case .notFound:
                self.init(.failed, kind: "not_found", error.message, hint: "create an identity with: agentctl identity new")
            case .alreadyExists:
                self.init(.failed, kind: "already_exists", error.message, hint: "pass --force to replace it; the old identity is lost")
            case .insecureKeyFile, .fileSystem, .cryptoFailure:
                self.init(.failed, kind: error.kind.rawValue, error.message)
            case .invalidKey, .invalidKeyFile, .invalidPeerID, .invalidSignature:
                self.init(.usage, kind: error.kind.rawValue, error.message)
            }
        case let error as ResolutionError:
            self.init(.usage, kind: error.kind.rawValue, error.message)
        case let error as MultiformatsError:
            self.init(.usage, kind: error.kind.rawValue, error.message)
        case let error as ControlAPIError:
            self.init(controlAPI: error, dataDirectory: nil)
        case let error as NodeError:
            self.init(error.kind == .fileSystem ? .failed : .usage, kind: error.kind.rawValue, error.message)
        default:
            self.init(.failed, kind: "failed", "\(error)")
        }
    }

    /// Writes the error to stderr: one line (plus a hint) for people; with `--json`, one JSON
    /// object on one line (spec/control-api.md §7), so that a script can read errors line by line.
    func report(json: Bool) {
        if json {
            var object: [String: JSONValue] = [
                "kind": .string(kind), "message": .string(message), "exit_code": .number(Int(status.rawValue)),
            ]
            if let hint { object["hint"] = .string(hint) }
            Output.writeError(JSONValue.object(["error": .object(object)]).jsonText + "\n")
        } else {
            Output.writeError("agentctl: \(message)\n" + (hint.map { "hint: \($0)\n" } ?? ""))
        }
    }
}

/// Output helpers: results on stdout, errors on stderr.
enum Output {
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func writeError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Pretty, key-sorted JSON text ending in a newline.
    static func json(_ object: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// Runs a command body, turning any error into a reported `CLIError` and the process exit code.
    static func run(json: Bool, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            let failure = CLIError(error)
            failure.report(json: json)
            throw ExitCodeError(status: failure.status)
        }
    }
}

/// Thrown after an error has been reported, to end the process with its status.
struct ExitCodeError: Error {
    let status: ExitStatus
}

/// The current time in seconds since the Unix epoch.
func currentUnixTime() -> UInt64 {
    UInt64(Date().timeIntervalSince1970)
}
