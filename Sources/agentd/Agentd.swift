import AgentNode
import ArgumentParser
import Foundation
import Identity

/// `agentd`: the node daemon of the .agent network.
///
/// This build prepares the node's identity and checks its bootstrap list. Listening, the control
/// socket and the DHT arrive with the Session and Resolution work (issues #3 and #4); until then the
/// daemon says so and exits 1 rather than pretend to serve.
@main
struct Agentd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentd",
        abstract: "Run an agent node of the .agent network.",
        discussion: """
            agentd holds this host's Ed25519 identity (DATA_DIR/identity.key, created on first start),
            joins the network through the peers in bootstrap-nodes.json, publishes a signed record for
            NAME.agent in the Kademlia DHT and keeps it fresh, resolves other names, and opens
            encrypted, multiplexed libp2p connections (Noise, yamux) to other agents, directly,
            hole-punched or relayed. Local agents and agentctl talk to it over a JSON-RPC socket
            (DATA_DIR/agentd.sock, mode 0600). When ready it prints one JSON line on stdout:
            {"event":"ready","peer_id":"…","addrs":["…"],"api":"…"}; logs go to stderr.

            This build implements the identity and record layers only: it creates or loads the
            identity, validates the bootstrap file, prints the node's peer id, and exits with status 1
            because networking (listen, DHT, control API) is not built yet.
            """
    )

    @Option(name: .customLong("data-dir"), help: "Data directory (default: $AGENTD_HOME, else ~/.agentd).")
    var dataDir: String?

    @Option(help: "Bootstrap file (default: DATA_DIR/bootstrap-nodes.json when present).")
    var bootstrap: String?

    /// Reads the key file, creating it with a new key when it does not exist yet.
    static func loadOrCreateIdentity(at path: String) throws(IdentityError) -> Ed25519.PrivateKey {
        if FileManager.default.fileExists(atPath: path) {
            return try KeyFile.read(from: path)
        }
        let key = Ed25519.PrivateKey()
        try KeyFile.write(key, to: path, overwrite: false)
        FileHandle.standardError.write(Data("agentd: created identity \(path)\n".utf8))
        return key
    }

    func run() throws {
        let directory = DataDirectory.resolve(explicit: dataDir)
        do {
            try PrivateFile.createDirectory(directory.path)
            let key = try Self.loadOrCreateIdentity(at: directory.identityKeyPath)
            let bootstrapPath = bootstrap ?? directory.bootstrapPath
            if bootstrap != nil || FileManager.default.fileExists(atPath: bootstrapPath) {
                let list = try BootstrapList.load(path: bootstrapPath)
                FileHandle.standardError.write(Data("agentd: bootstrap list \(bootstrapPath): \(list.peers.count) peers\n".utf8))
            }
            FileHandle.standardError.write(
                Data(
                    "agentd: peer id \(PeerID(publicKey: key.publicKey)); networking is not built yet (issue #3), exiting\n"
                        .utf8))
            throw ExitCode(1)
        } catch let error as IdentityError {
            FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
            throw ExitCode(1)
        } catch let error as NodeError {
            FileHandle.standardError.write(Data("agentd: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
    }
}
