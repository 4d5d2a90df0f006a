#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The file-system side of the control API socket: what is at the path, a private place to bind
/// it, and removing only our own socket.
///
/// Why bind elsewhere and rename: a socket file takes its mode from the process umask at bind
/// time, and `chmod` can only follow. Changing the umask is process-wide (it would race with any
/// other thread creating files), so the socket is bound inside a fresh directory of mode 0700, made
/// 0600 there, and renamed into place: nobody else can reach it before it is 0600, and the rename
/// atomically replaces a stale socket file.
enum UnixSocketFile {
    /// What occupies a path.
    enum Occupant: Equatable {
        case nothing
        case socket(Identity)
        case otherFile
    }

    /// A file's device and inode: tells our socket from one that replaced it.
    struct Identity: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    static func occupant(of path: String) throws(ControlAPIError) -> Occupant {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT { return .nothing }
            throw failure("cannot inspect \(path)", errno: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else { return .otherFile }
        return .socket(Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)))
    }

    /// Creates a directory of mode 0700 beside `path` (same file system, so a rename works) and
    /// returns it. The name is short: the socket bound in it must fit in `sun_path` too.
    static func makePrivateDirectory(besides path: String) throws(ControlAPIError) -> String {
        let parent = directory(of: path)
        var template = Array((parent + "/.agentd-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
        guard let made else { throw failure("cannot create a private directory in \(parent)", errno: errno) }
        return made
    }

    static func setOwnerOnly(_ path: String) throws(ControlAPIError) {
        guard chmod(path, 0o600) == 0 else { throw failure("cannot make \(path) mode 0600", errno: errno) }
    }

    static func move(_ from: String, to: String) throws(ControlAPIError) {
        guard rename(from, to) == 0 else { throw failure("cannot move the socket to \(to)", errno: errno) }
    }

    /// Removes `path` if it is still the socket with `identity` (not a successor's).
    @discardableResult
    static func remove(_ path: String, ifIdentity identity: Identity) -> Bool {
        guard case .socket(let current)? = try? occupant(of: path), current == identity else { return false }
        return unlink(path) == 0
    }

    static func removeQuietly(file: String?, directory: String?) {
        if let file { unlink(file) }
        if let directory { rmdir(directory) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func failure(_ what: String, errno code: Int32) -> ControlAPIError {
        ControlAPIError(.socketFailure, "\(what): \(String(cString: strerror(code)))")
    }
}
