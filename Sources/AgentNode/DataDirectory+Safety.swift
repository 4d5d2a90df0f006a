#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension DataDirectory {
    /// Refuses a data directory or database that another user could tamper with, before the node
    /// reads or writes anything in it.
    ///
    /// - The directory (its target, if it is a symlink) must be owned by this process's user and not
    ///   writable by group or others: whoever can write it can replace `identity.key`, swap
    ///   `agentd.db` for a symlink to a file of ours, or put a socket where `agentd.sock` goes.
    /// - The database (`databasePath`) and its SQLite companions (`-wal`, `-shm`, `-journal`), when
    ///   they exist, must be regular files (not symlinks: SQLite would follow one and write wherever
    ///   it points), owned by this user, and not writable by group or others.
    ///
    /// Each refusal says what is wrong and the `chmod` or `chown` that fixes it.
    /// - Throws: `NodeError(.unsafeDataDirectory)`; `.fileSystem` when a path cannot be examined.
    public func checkSafety(databasePath: String?) throws(NodeError) {
        let user = geteuid()
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw NodeError(.fileSystem, "cannot examine the data directory \(path): \(Self.systemError())")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw NodeError(.unsafeDataDirectory, "the data directory \(path) is not a directory")
        }
        try Self.checkOwner(info, of: path, what: "the data directory", user: user)
        if (info.st_mode & 0o022) != 0 {
            throw NodeError(
                .unsafeDataDirectory,
                "the data directory \(path) is writable by group or others (mode 0\(String(info.st_mode & 0o7777, radix: 8))); "
                    + "fix it with: chmod go-w \(path)  (agentd creates it with mode 0700)")
        }
        guard let databasePath else { return }
        for file in [databasePath, databasePath + "-wal", databasePath + "-shm", databasePath + "-journal"] {
            guard lstat(file, &info) == 0 else {
                if errno == ENOENT { continue }
                throw NodeError(.fileSystem, "cannot examine \(file): \(Self.systemError())")
            }
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                let kind = (info.st_mode & S_IFMT) == S_IFLNK ? "a symbolic link" : "not a regular file"
                throw NodeError(
                    .unsafeDataDirectory,
                    "the database file \(file) is \(kind); agentd writes only a regular file of its own there. "
                        + "Move it away (mv \(file) \(file).suspect) and start again")
            }
            try Self.checkOwner(info, of: file, what: "the database file", user: user)
            if (info.st_mode & 0o022) != 0 {
                throw NodeError(
                    .unsafeDataDirectory,
                    "the database file \(file) is writable by group or others (mode 0\(String(info.st_mode & 0o7777, radix: 8))); "
                        + "fix it with: chmod 600 \(file)")
            }
        }
    }

    private static func checkOwner(_ info: stat, of path: String, what: String, user: uid_t) throws(NodeError) {
        guard info.st_uid != user else { return }
        throw NodeError(
            .unsafeDataDirectory,
            "\(what) \(path) belongs to uid \(info.st_uid), not to this user (uid \(user)); "
                + "fix it with: chown \(user) \(path)  (or run agentd as its owner)")
    }

    private static func systemError() -> String { String(cString: strerror(errno)) }
}
