import AgentNode
import ArgumentParser
import Foundation
import Identity

struct IdentityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Create and show the node's Ed25519 identity.",
        subcommands: [New.self, Show.self]
    )

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create DIR/identity.key (PKCS#8 PEM, mode 0600) with a new Ed25519 key.")

        @OptionGroup var dataDir: DataDirOptions
        @Flag(help: "Replace an existing identity. The old key is lost, and with it every name it holds.")
        var force = false
        @OptionGroup var output: OutputOptions

        func run() throws {
            try Output.run(json: output.json) {
                let directory = DataDirectory.resolve(explicit: dataDir.dataDir)
                try PrivateFile.createDirectory(directory.path)
                let key = Ed25519.PrivateKey()
                try KeyFile.write(key, to: directory.identityKeyPath, overwrite: force)
                IdentitySummary(key: key.publicKey, path: directory.identityKeyPath)
                    .print(json: output.json, heading: "created \(directory.identityKeyPath)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the identity in DIR/identity.key.")

        @OptionGroup var dataDir: DataDirOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            try Output.run(json: output.json) {
                let directory = DataDirectory.resolve(explicit: dataDir.dataDir)
                let key = try KeyFile.read(from: directory.identityKeyPath)
                IdentitySummary(key: key.publicKey, path: directory.identityKeyPath).print(json: output.json, heading: nil)
            }
        }
    }
}

/// What `identity new` and `identity show` print.
struct IdentitySummary {
    let key: Ed25519.PublicKey
    let path: String

    func print(json: Bool, heading: String?) {
        let peerID = PeerID(publicKey: key)
        let publicKey = Data(key.rawRepresentation).base64EncodedString()
        if json {
            Output.write(
                Output.json([
                    "peer_id": peerID.description,
                    "peer_id_cid": peerID.cidString(),
                    "did": DIDKey.string(for: key),
                    "public_key": publicKey,
                    "key_file": path,
                ]))
        } else {
            var text = heading.map { $0 + "\n" } ?? ""
            text += "peer id:    \(peerID)\n"
            text += "did:        \(DIDKey.string(for: key))\n"
            text += "public key: \(publicKey)\n"
            text += "key file:   \(path)\n"
            Output.write(text)
        }
    }
}
