import ArgumentParser
import Foundation

/// `agentctl`: drives a running agentd and works offline on keys and records.
@main
struct AgentCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentctl",
        abstract: "Control an agentd node and work with .agent identities and records.",
        discussion: """
            Exit codes: 0 ok, 1 not found or failed, 2 bad usage or invalid input, 3 daemon unreachable.
            Every command takes --json for machine-readable output; errors go to stderr.
            The data directory is --data-dir, else $AGENTD_HOME, else ~/.agentd.
            """,
        subcommands: [
            IdentityCommand.self, RecordCommand.self, BootstrapCommand.self, IDCommand.self, PeersCommand.self,
            ConnectCommand.self, PingCommand.self, PerfCommand.self, RegisterCommand.self, UnregisterCommand.self,
            NamesCommand.self, ResolveCommand.self, NATCommand.self,
            SendCommand.self, ReplyCommand.self, InboxCommand.self, AckCommand.self, ListenCommand.self, StatusCommand.self,
            DHTCommand.self, LimitsCommand.self, BlockCommand.self, UnblockCommand.self, APICommand.self,
            CardCommand.self, FindCommand.self,
        ]
    )

    /// Parses and runs, mapping every failure to the exit codes above (ArgumentParser's own usage
    /// errors would otherwise exit with 64). Commands that talk to the daemon are async.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ExitCodeError {
            Foundation.exit(error.status.rawValue)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { Output.write(message + "\n") }
                Foundation.exit(0)
            }
            Output.writeError(message + "\n")
            Foundation.exit(ExitStatus.usage.rawValue)
        }
    }
}

/// Options shared by commands that use the data directory.
struct DataDirOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (default: $AGENTD_HOME, else ~/.agentd).")
    var dataDir: String?
}

/// The `--json` flag.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON document instead of text.")
    var json = false
}
