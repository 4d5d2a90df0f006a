import Foundation
import GRDB

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One SQLite database of the application's stores (the message, mailbox and card stores):
/// opened the same way (a file private to its owner, WAL, optionally every commit fsync'd, the
/// store's migrations), its failures described the same way ("mailbox store PATH: cannot ACTION:
/// REASON"), each store throwing its own error type.
struct StoreDatabase: Sendable {
    /// What the store is called in errors ("mailbox store").
    let name: String
    /// The database file, or nil for a private in-memory database.
    let path: String?
    let queue: DatabaseQueue

    /// Opens (creating with mode 0600) the database at `path`, or an in-memory one for nil, and
    /// migrates it. With `durable`, every commit is fsync'd (`synchronous = FULL`) before it returns.
    init<E: Error>(
        path: String?, name: String, label: String, durable: Bool, migrator: DatabaseMigrator, error makeError: (String) -> E
    ) throws(E) {
        self.name = name
        self.path = path
        do {
            var options = GRDB.Configuration()
            options.label = label
            if let path {
                if let failure = Self.createPrivateFile(at: path) {
                    throw makeError("cannot create the \(name) \(path): \(failure)")
                }
                options.journalMode = .wal
                if durable {
                    options.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
                }
                queue = try DatabaseQueue(path: path, configuration: options)
            } else {
                queue = try DatabaseQueue(configuration: options)
            }
            try migrator.migrate(queue)
        } catch let error as E {
            throw error
        } catch {
            throw makeError("\(name) \(path ?? "(in memory)"): cannot open: \(Self.reason(error))")
        }
    }

    /// Runs `body` on the database (in a write transaction with `transaction`). An error of the
    /// store's own type thrown by `body` passes through; any other becomes `makeError` of a
    /// description naming the store, the action and the reason.
    func run<T, E: Error>(
        _ action: @autoclosure () -> String, transaction: Bool = false, error makeError: (String) -> E,
        _ body: (Database) throws -> T
    ) throws(E) -> T {
        do {
            return transaction ? try queue.write(body) : try queue.inDatabase(body)
        } catch let error as E {
            throw error
        } catch {
            throw makeError("\(name) \(path ?? "(in memory)"): cannot \(action()): \(Self.reason(error))")
        }
    }

    /// SQLite's message for its errors, else the error's description.
    static func reason(_ error: any Error) -> String {
        (error as? DatabaseError).map { $0.message ?? "\($0.resultCode)" } ?? "\(error)"
    }

    /// Creates the file with mode 0600 if it does not exist (as the record store does); returns
    /// why it could not, or nil.
    static func createPrivateFile(at path: String) -> String? {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST { return nil }
            return String(cString: strerror(errno))
        }
        defer { close(fd) }
        guard fchmod(fd, 0o600) == 0 else { return "cannot set mode 0600: \(String(cString: strerror(errno)))" }
        return nil
    }
}
