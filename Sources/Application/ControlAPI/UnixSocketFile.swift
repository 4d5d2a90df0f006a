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
/// A socket file takes its mode from the process umask at bind time, and `chmod` can only follow;
/// changing the umask is process-wide (it would race with any other thread creating files). On
/// Linux the mode is set on the socket before `bind` (``bindOwnerOnly(_:backlog:)``). Elsewhere the
/// socket is bound inside a fresh directory of mode 0700, made 0600 there, and renamed into place:
/// nobody else can reach it before it is 0600, and the rename atomically replaces a stale socket
/// file; the temporary path then has to fit `sun_path` as well.
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

    #if os(Linux)
        /// Creates a listening Unix stream socket at `path` that is mode 0600 from the moment it
        /// exists, and returns its descriptor (the caller owns it).
        ///
        /// Linux gives the file the mode of the unbound socket's inode less the umask
        /// (`unix_bind` in net/unix/af_unix.c), and `fchmod` sets that mode before `bind`. So no
        /// private directory and no temporary path are needed, and every path that fits
        /// `sun_path` (107 bytes) can be used. `path` must be free (a stale socket removed first).
        static func bindOwnerOnly(_ path: String, backlog: Int32) throws(ControlAPIError) -> CInt {
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard descriptor >= 0 else { throw failure("cannot create a Unix socket", errno: errno) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(descriptor)
                throw ControlAPIError(
                    .socketFailure, "the socket path \(path) (\(bytes.count) bytes) is too long for a Unix socket")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            guard fchmod(descriptor, 0o600) == 0 else {
                let code = errno
                close(descriptor)
                throw failure("cannot make the socket for \(path) mode 0600", errno: code)
            }
            let bound = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard bound == 0, listen(descriptor, backlog) == 0 else {
                let code = errno
                close(descriptor)
                throw failure("cannot listen on \(path)", errno: code)
            }
            return descriptor
        }
    #endif

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
