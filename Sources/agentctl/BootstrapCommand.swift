import AgentNode
import ArgumentParser
import Foundation

struct BootstrapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bootstrap",
        abstract: "Work with bootstrap-nodes.json files (format: spec/bootstrap.md).",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a bootstrap file and list its peers.")

        @Argument(help: "The bootstrap file.")
        var file: String
        @OptionGroup var output: OutputOptions

        func run() throws {
            try Output.run(json: output.json) {
                let list = try BootstrapList.load(path: file)
                if output.json {
                    let peers: [[String: Any]] = list.peers.map {
                        ["peer_id": $0.peerID.description, "addrs": $0.addresses.map(\.description)]
                    }
                    Output.write(Output.json(["version": BootstrapList.version, "peers": peers]))
                } else {
                    var text = "\(file): valid, \(list.peers.count) peer\(list.peers.count == 1 ? "" : "s")\n"
                    for peer in list.peers {
                        text += "  \(peer.peerID)\n"
                        for address in peer.addresses { text += "    \(address)\n" }
                    }
                    Output.write(text)
                }
            }
        }
    }
}
