import Application
import ArgumentParser

/// `agentctl api call METHOD [PARAMS_JSON]`: one raw control API call, for debugging and scripts.
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Talk to the daemon's control API directly (debugging, scripts).",
        discussion: "The control API is JSON-RPC 2.0 over DATA_DIR/agentd.sock; see spec/control-api.md.",
        subcommands: [Call.self]
    )

    struct Call: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Call METHOD with PARAMS_JSON (an object or array) and print the result as JSON.",
            discussion: """
                Example: agentctl api call some.method '{"key":"value"}'

                The result is printed indented, or on one line with --json. A JSON-RPC error exits with 2 when \
                the daemon refused the input (parse error, invalid request, unknown method, invalid params or \
                input), with 1 otherwise; the daemon unreachable exits with 3.
                """)

        @Argument(help: "The method name.")
        var method: String

        @Argument(help: "The params: a JSON object or array (default: none).")
        var params: String?

        @OptionGroup var daemon: DaemonOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await Output.runAsync(json: output.json) {
                let params = try parseParams()
                let method = method
                let timeout = try daemon.timeoutDuration()
                let result = try await Daemon.withClient(daemon) { client in
                    try await client.call(method, params, timeout: timeout)
                }
                Output.write((output.json ? result.jsonText : result.formatted()) + "\n")
            }
        }

        private func parseParams() throws(CLIError) -> JSONValue {
            guard let params else { return .null }
            let value: JSONValue
            do {
                value = try JSONValue(parsing: params)
            } catch {
                throw CLIError(.usage, kind: "invalid_input", "PARAMS_JSON is not valid JSON: \(error.message)")
            }
            switch value {
            case .object, .array: return value
            default:
                throw CLIError(
                    .usage, kind: "invalid_input", "PARAMS_JSON must be a JSON object or array, not \(value.typeName)")
            }
        }
    }
}
