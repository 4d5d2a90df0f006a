#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// POSIX file operations for files that hold secrets or must be replaced atomically: the key file
/// now, the records and the database later.
public enum PrivateFile {
    /// Creates `path` and any missing parents with `mode` (0700 by default). Existing directories
    /// are left as they are.
    /// - Throws: `IdentityError.fileSystem` with the path and the system's reason.
    public static func createDirectory(_ path: String, mode: mode_t = 0o700) throws(IdentityError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                throw IdentityError(.fileSystem, "cannot create directory \(prefix): \(systemError())")
            }
            prefix += "/"
        }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw IdentityError(.fileSystem, "\(path) exists and is not a directory")
        }
    }

    /// Reads at most `limit` bytes of a regular file.
    ///
    /// - Parameter requirePrivate: when true, refuse a file that group or others may read or write:
    ///   a key file that other users can read is a leaked key.
    /// - Throws: `.notFound`, `.insecureKeyFile`, `.fileSystem` (with the path and reason).
    public static func read(_ path: String, limit: Int, requirePrivate: Bool) throws(IdentityError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { throw IdentityError(.notFound, "\(path) does not exist") }
            throw IdentityError(.fileSystem, "cannot open \(path): \(systemError())")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw IdentityError(.fileSystem, "cannot stat \(path): \(systemError())")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw IdentityError(.fileSystem, "\(path) is not a regular file")
        }
        if requirePrivate && (info.st_mode & 0o077) != 0 {
            let mode = String(info.st_mode & 0o777, radix: 8)
            throw IdentityError(
                .insecureKeyFile,
                "\(path) is readable or writable by group or others (mode 0\(mode)); fix it with: chmod 600 \(path)")
        }
        guard Int(info.st_size) <= limit else {
            throw IdentityError(.fileSystem, "\(path) is \(info.st_size) bytes, over the \(limit)-byte limit")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var total = 0
        while total < bytes.count {
            let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, $0.count - total) }
            if count < 0 {
                if errno == EINTR { continue }
                throw IdentityError(.fileSystem, "cannot read \(path): \(systemError())")
            }
            if count == 0 { break }
            total += count
        }
        bytes.removeLast(bytes.count - total)
        return bytes
    }

    /// Writes `bytes` to `path` atomically with `mode` (0600 by default): the data goes to a new
    /// temporary file beside `path`, is synced, and is then renamed over `path` (`overwrite`) or
    /// hard-linked to it, which fails if `path` exists. A crash never leaves a half-written file.
    /// - Throws: `.alreadyExists` when `path` exists and `overwrite` is false; `.fileSystem`.
    public static func write(
        _ bytes: [UInt8], to path: String, mode: mode_t = 0o600, overwrite: Bool
    ) throws(IdentityError) {
        let suffix = Sodium.randomBytes(6).map { String($0, radix: 16) }.joined()
        let temporary = "\(path).tmp-\(suffix)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else {
            throw IdentityError(.fileSystem, "cannot create \(temporary): \(systemError())")
        }
        var cleanup = true
        defer {
            if cleanup { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            // The umask may have cleared bits of `mode`; set exactly what was asked.
            guard fchmod(fd, mode) == 0 else {
                throw IdentityError(.fileSystem, "cannot set mode on \(temporary): \(systemError())")
            }
            var written = 0
            while written < bytes.count {
                let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
                if count < 0 {
                    if errno == EINTR { continue }
                    throw IdentityError(.fileSystem, "cannot write \(temporary): \(systemError())")
                }
                written += count
            }
            guard fsync(fd) == 0 else {
                throw IdentityError(.fileSystem, "cannot sync \(temporary): \(systemError())")
            }
        }
        if overwrite {
            guard rename(temporary, path) == 0 else {
                throw IdentityError(.fileSystem, "cannot replace \(path): \(systemError())")
            }
            cleanup = false
        } else {
            guard link(temporary, path) == 0 else {
                if errno == EEXIST { throw IdentityError(.alreadyExists, "\(path) already exists") }
                throw IdentityError(.fileSystem, "cannot create \(path): \(systemError())")
            }
        }
    }

    static func systemError() -> String {
        String(cString: strerror(errno))
    }
}
