import Application
import Network

/// The resource manager's part of the control API (spec/control-api.md): `limits`, `block`,
/// `unblock`.
extension NodeControlAPI {
    /// Changes of the deny list, one at a time: each is written to the data directory before it
    /// takes effect, so that the file and the node never disagree after a crash.
    actor DenyListStore {
        let host: Network.Host
        /// `nil`: the list is not persisted (tests without a data directory).
        let path: String?

        init(host: Network.Host, path: String?) {
            self.host = host
            self.path = path
        }

        func block(_ entry: DenyList.Entry) async throws -> Bool {
            var list = host.resources.deniedEntries
            guard try list.insert(entry) else { return false }
            if let path { try DenyListFile.save(list, to: path) }
            return try await host.block(entry)
        }

        func unblock(_ entry: DenyList.Entry) throws -> Bool {
            var list = host.resources.deniedEntries
            guard list.remove(entry) else { return false }
            if let path { try DenyListFile.save(list, to: path) }
            return host.unblock(entry)
        }
    }

    static func registerLimitsMethods(_ methods: inout ControlAPIMethods, host: Network.Host, denyListPath: String?) {
        let store = DenyListStore(host: host, path: denyListPath)

        methods.register("limits") { _ in
            let rows = host.resources.usage().map { usage -> JSONValue in
                .object([
                    "scope": .string(usage.scope), "resource": .string(usage.resource), "used": .number(usage.used),
                    "limit": .number(usage.limit), "refused": .number(usage.refused),
                ])
            }
            return .object([
                "scopes": .array(rows),
                "blocked": .array(host.resources.deniedEntries.entries.map { .string($0.description) }),
                "denied": .number(host.resources.deniedAdmissions),
            ])
        }

        methods.register("block") { params in
            let entry = try denyListEntry(params, method: "block")
            let added = try await denyListCall { try await store.block(entry) }
            return .object(["target": .string(entry.description), "added": .bool(added)])
        }

        methods.register("unblock") { params in
            let entry = try denyListEntry(params, method: "unblock")
            let removed = try await denyListCall { try await store.unblock(entry) }
            return .object(["target": .string(entry.description), "removed": .bool(removed)])
        }
    }

    private static func denyListEntry(_ params: JSONValue, method: String) throws -> DenyList.Entry {
        guard let text = params["target"]?.stringValue else {
            throw ControlAPIError.invalidParams(
                "\(method) needs \"target\": a peer id or a CIDR network such as 10.0.0.0/8")
        }
        do {
            return try DenyList.Entry(text)
        } catch {
            throw ControlAPIError.invalidInput(error.message, kind: error.kind.rawValue)
        }
    }

    private static func denyListCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as NodeError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        } catch let error as NetworkError {
            throw ControlAPIError.failed(error.message, kind: error.kind.rawValue)
        }
    }
}
