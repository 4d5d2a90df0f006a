import Foundation
import Identity
import Network

/// The deny list in the data directory (`DATA_DIR/denylist`): one entry per line, a peer id or a
/// CIDR network, written atomically with mode 0600 on every change, read on start.
public enum DenyListFile {
    /// Larger files are refused: the list holds at most `DenyList.maximumEntries` of each kind.
    public static let maximumSize = 2 * DenyList.maximumEntries * 128

    /// Reads the list; an absent file is an empty list.
    /// - Throws: `NodeError.invalidConfiguration` naming the line that is not an entry; `.fileSystem`.
    public static func load(_ path: String) throws(NodeError) -> DenyList {
        let bytes: [UInt8]
        do {
            bytes = try PrivateFile.read(path, limit: maximumSize, requirePrivate: true)
        } catch {
            if error.kind == .notFound { return DenyList() }
            throw NodeError(.fileSystem, "cannot read the deny list: \(error.message)")
        }
        var list = DenyList()
        for (index, line) in String(decoding: bytes, as: UTF8.self).split(
            separator: "\n", omittingEmptySubsequences: false
        ).enumerated() {
            let text = line.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { continue }
            do {
                try list.insert(try DenyList.Entry(text))
            } catch {
                throw NodeError(.invalidConfiguration, "deny list \(path), line \(index + 1): \(error.message)")
            }
        }
        return list
    }

    /// Writes `list` atomically (a new file renamed over the old), mode 0600.
    /// - Throws: `NodeError.fileSystem`.
    public static func save(_ list: DenyList, to path: String) throws(NodeError) {
        let text = list.entries.map { "\($0)\n" }.joined()
        do {
            try PrivateFile.write(Array(text.utf8), to: path, mode: 0o600, overwrite: true)
        } catch {
            throw NodeError(.fileSystem, "cannot write the deny list: \(error.message)")
        }
    }
}

extension DataDirectory {
    /// The deny list (`agentctl block`).
    public var denyListPath: String { path + "/denylist" }
}
