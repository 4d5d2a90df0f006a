import AgentNode
import Application
import ArgumentParser
import Foundation

/// Options of every command that talks to the running daemon.
struct DaemonOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (default: $AGENTD_HOME, else ~/.agentd).")
    var dataDir: String?

    @Option(name: .customLong("api-socket"), help: "The control API socket (default: DATA_DIR/agentd.sock).")
    var apiSocket: String?

    @Option(name: .customLong("timeout"), help: "Seconds to wait for the daemon's answer.")
    var timeout: Double = 30

    /// The data directory these options name.
    var dataDirectory: DataDirectory { DataDirectory.resolve(explicit: dataDir) }

    /// The socket to connect to: `--api-socket`, else the data directory's `agentd.sock`.
    var socketPath: String {
        if let apiSocket, !apiSocket.isEmpty { return apiSocket }
        return dataDirectory.apiSocketPath
    }

    /// `--timeout` as a `Duration`; bad usage when it is not a positive number of seconds.
    func timeoutDuration() throws(CLIError) -> Duration {
        guard timeout.isFinite, timeout > 0, timeout <= 86_400 else {
            throw CLIError(.usage, kind: "invalid_input", "--timeout must be a number of seconds between 0 and 86400")
        }
        return .milliseconds(Int64((timeout * 1000).rounded(.up)))
    }
}

/// Talking to the daemon from a command: connect, call, and map every failure to the CLI's exit
/// codes (DESIGN §5): 3 when the daemon is unreachable, 2 for what the daemon refused as bad input,
/// 1 for the rest.
enum Daemon {
    /// Connects to the daemon named by `options`, runs `body` with the client, and closes it.
    /// Control API errors come out as `CLIError`s.
    static func withClient<T: Sendable>(
        _ options: DaemonOptions, _ body: (ControlAPIClient) async throws -> T
    ) async throws -> T {
        let client: ControlAPIClient
        do {
            var configuration = ControlAPIClientConfiguration()
            configuration.callTimeout = try options.timeoutDuration()
            configuration.connectTimeout = min(configuration.callTimeout, .seconds(5))
            client = try await ControlAPIClient.connect(socketPath: options.socketPath, configuration: configuration)
        } catch let error as ControlAPIError {
            throw CLIError(controlAPI: error, dataDirectory: options.dataDir ?? options.dataDirectory.path)
        }
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch let error as ControlAPIError {
            await client.close()
            throw CLIError(controlAPI: error, dataDirectory: options.dataDir ?? options.dataDirectory.path)
        } catch {
            await client.close()
            throw error
        }
    }
}

extension CLIError {
    /// The exit status and kind of a control API failure. Remote errors map by their JSON-RPC code,
    /// which is the category (the `kind` names the case within it): parse error, invalid request,
    /// method not found, invalid params and invalid input are bad usage (2); not found, failed,
    /// timeout and internal errors are failures (1).
    init(controlAPI error: ControlAPIError, dataDirectory: String?) {
        switch error.kind {
        case .daemonUnreachable:
            let directory = dataDirectory ?? DataDirectory.resolve(explicit: nil).path
            self.init(
                .unreachable, kind: error.kind.rawValue, error.message,
                hint: "is agentd running? start it with: agentd --data-dir \(directory)")
        case .remoteError:
            let usageCodes = [
                JSONRPCErrorCode.parseError, JSONRPCErrorCode.invalidRequest, JSONRPCErrorCode.methodNotFound,
                JSONRPCErrorCode.invalidParams, JSONRPCErrorCode.invalidInput,
            ]
            let status: ExitStatus = error.code.map(usageCodes.contains) == true ? .usage : .failed
            self.init(status, kind: error.wireKind, error.message)
        case .invalidParams, .invalidInput, .parseError, .invalidRequest, .methodNotFound:
            self.init(.usage, kind: error.wireKind, error.message)
        default:
            self.init(.failed, kind: error.wireKind, error.message)
        }
    }
}

extension Output {
    /// ``run(json:_:)`` for async command bodies.
    static func runAsync(json: Bool, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            let failure = CLIError(error)
            failure.report(json: json)
            throw ExitCodeError(status: failure.status)
        }
    }
}
