import Foundation
import Multiformats

/// Where agentd finds its bootstrap peers (spec/bootstrap.md, "Where agentd looks").
public enum BootstrapSources {
    /// The addresses named by `--bootstrap` arguments: each is a file (a bootstrap list) or a
    /// multiaddr ending in `/p2p/<peer id>`. With no arguments, the default file is used if one
    /// exists (see `defaultFile`). Returns the addresses and a description of where they came from.
    public static func resolve(
        arguments: [String], dataDirectory: DataDirectory, executablePath: String? = CommandLine.arguments.first
    ) throws(NodeError) -> (addresses: [Multiaddr], source: String) {
        if arguments.isEmpty {
            guard let path = defaultFile(dataDirectory: dataDirectory, executablePath: executablePath) else {
                return ([], "no bootstrap file found")
            }
            let list = try BootstrapList.load(path: path)
            return (list.peers.flatMap(\.addresses), path)
        }
        var addresses: [Multiaddr] = []
        for argument in arguments {
            if argument.hasPrefix("/") && !FileManager.default.fileExists(atPath: argument) {
                let address: Multiaddr
                do {
                    address = try Multiaddr(argument)
                } catch {
                    throw NodeError(.invalidConfiguration, "--bootstrap \(argument): not a file and not a multiaddr (\(error.message))")
                }
                guard address.peerIDMultihash != nil else {
                    throw NodeError(
                        .invalidConfiguration, "--bootstrap \(argument): a bootstrap multiaddr must end in /p2p/<peer id>")
                }
                addresses.append(address)
            } else {
                addresses.append(contentsOf: try BootstrapList.load(path: argument).peers.flatMap(\.addresses))
            }
        }
        return (addresses, arguments.joined(separator: ", "))
    }

    /// The bootstrap file used when `--bootstrap` is not given, the first that exists of:
    /// 1. `DATA_DIR/bootstrap-nodes.json`;
    /// 2. `bootstrap-nodes.json` beside the executable;
    /// 3. `../share/agentd/bootstrap-nodes.json` from the executable's directory (an installation
    ///    under a prefix such as /usr/local);
    /// 4. the source checkout the executable was built in: the first directory above it holding
    ///    both `Package.swift` and `bootstrap-nodes.json` (e.g. `.build/debug/agentd` → the repo).
    public static func defaultFile(dataDirectory: DataDirectory, executablePath: String?) -> String? {
        let manager = FileManager.default
        var candidates = [dataDirectory.bootstrapPath]
        if let executablePath {
            let executable = URL(fileURLWithPath: executablePath).resolvingSymlinksInPath()
            let directory = executable.deletingLastPathComponent()
            candidates.append(directory.appendingPathComponent("bootstrap-nodes.json").path)
            candidates.append(
                directory.deletingLastPathComponent().appendingPathComponent("share/agentd/bootstrap-nodes.json").path)
            var current = directory
            for _ in 0..<6 {
                current = current.deletingLastPathComponent()
                let file = current.appendingPathComponent("bootstrap-nodes.json").path
                if manager.fileExists(atPath: current.appendingPathComponent("Package.swift").path),
                    manager.fileExists(atPath: file)
                {
                    candidates.append(file)
                    break
                }
                if current.path == "/" { break }
            }
        }
        return candidates.first { manager.fileExists(atPath: $0) }
    }
}
