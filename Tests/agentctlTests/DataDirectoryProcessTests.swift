import AgentTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue #10 finding 11, end to end: the daemon checks its data directory before using it.
@Suite("agentd data directory checks (process)", .timeLimit(.minutes(1)))
struct DataDirectoryProcessTests {
    @Test("agentd refuses to start in a directory others can write, and says how to fix it")
    func daemonRefusesUnsafeDirectory() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("agentd-safety-\(UUID().uuidString)").path
        #expect(mkdir(path, 0o700) == 0)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(chmod(path, 0o777) == 0)
        let result = try await ProcessRunner.run(
            ProcessRunner.executable("agentd"), ["--data-dir", path, "--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "error"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("chmod go-w \(path)"), "\(result.stderr)")
        // Nothing was created in it.
        #expect(!FileManager.default.fileExists(atPath: path + "/identity.key"))
    }
}
