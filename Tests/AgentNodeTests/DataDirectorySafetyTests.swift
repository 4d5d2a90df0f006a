import AgentNode
import AgentTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue #10 finding 11: a data directory or database another user could tamper with is refused,
/// with the command that fixes it.
@Suite("data directory safety")
struct DataDirectorySafetyTests {
    /// A fresh directory made as agentd makes it (mode 0700), removed afterwards by the caller.
    static func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-safety-\(UUID().uuidString)").path
        #expect(mkdir(path, 0o700) == 0)
        return path
    }

    static func refusal(_ directory: DataDirectory) -> NodeError? {
        do {
            try directory.checkSafety(databasePath: directory.databasePath)
            return nil
        } catch {
            return error
        }
    }

    @Test("a private directory, with or without a database of ours, is accepted")
    func privateDirectoryAccepted() throws {
        let path = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let directory = DataDirectory(path: path)
        #expect(Self.refusal(directory) == nil)
        #expect(FileManager.default.createFile(atPath: directory.databasePath, contents: Data(), attributes: [.posixPermissions: 0o600]))
        #expect(Self.refusal(directory) == nil)
        // Group- or world-readable is a privacy matter, not tampering: accepted.
        #expect(chmod(path, 0o755) == 0)
        #expect(Self.refusal(directory) == nil)
    }

    @Test("a directory writable by others is refused with the chmod that fixes it")
    func writableDirectoryRefused() throws {
        let path = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        for mode: mode_t in [0o777, 0o770, 0o702, 0o1777] {
            #expect(chmod(path, mode) == 0)
            let error = try #require(Self.refusal(DataDirectory(path: path)))
            #expect(error.kind == .unsafeDataDirectory)
            #expect(error.message.contains("chmod go-w \(path)"), "\(error.message)")
        }
    }

    @Test("a database that is a symlink, a directory or writable by others is refused")
    func unsafeDatabaseRefused() throws {
        let path = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let directory = DataDirectory(path: path)
        let target = path + "/elsewhere.db"
        #expect(FileManager.default.createFile(atPath: target, contents: Data(), attributes: [.posixPermissions: 0o600]))

        #expect(symlink(target, directory.databasePath) == 0)
        var error = try #require(Self.refusal(directory))
        #expect(error.kind == .unsafeDataDirectory && error.message.contains("symbolic link"), "\(error.message)")
        #expect(unlink(directory.databasePath) == 0)

        // The write-ahead log is followed by SQLite as well.
        #expect(symlink(target, directory.databasePath + "-wal") == 0)
        error = try #require(Self.refusal(directory))
        #expect(error.message.contains("agentd.db-wal") && error.message.contains("symbolic link"), "\(error.message)")
        #expect(unlink(directory.databasePath + "-wal") == 0)

        #expect(mkdir(directory.databasePath, 0o700) == 0)
        error = try #require(Self.refusal(directory))
        #expect(error.message.contains("not a regular file"), "\(error.message)")
        #expect(rmdir(directory.databasePath) == 0)

        #expect(FileManager.default.createFile(atPath: directory.databasePath, contents: Data(), attributes: [.posixPermissions: 0o666]))
        error = try #require(Self.refusal(directory))
        #expect(error.message.contains("chmod 600 \(directory.databasePath)"), "\(error.message)")
    }

    @Test("a directory or database owned by another user is refused with the chown that fixes it")
    func foreignOwnerRefused() throws {
        guard geteuid() == 0 else {
            // Not root: a directory we cannot chown away, owned by root, stands in.
            let error = try #require(Self.refusal(DataDirectory(path: "/")))
            #expect(error.message.contains("chown \(geteuid()) /"), "\(error.message)")
            return
        }
        let path = try Self.makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let directory = DataDirectory(path: path)
        #expect(FileManager.default.createFile(atPath: directory.databasePath, contents: Data(), attributes: [.posixPermissions: 0o600]))
        #expect(chown(directory.databasePath, 65534, 65534) == 0)
        var error = try #require(Self.refusal(directory))
        #expect(error.message.contains("uid 65534") && error.message.contains("chown 0 \(directory.databasePath)"), "\(error.message)")
        #expect(chown(directory.databasePath, 0, 0) == 0)
        #expect(Self.refusal(directory) == nil)

        #expect(chown(path, 65534, 65534) == 0)
        error = try #require(Self.refusal(directory))
        #expect(error.message.contains("the data directory \(path) belongs to uid 65534"), "\(error.message)")
    }
}
