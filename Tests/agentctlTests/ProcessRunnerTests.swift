import AgentTesting
import Foundation
import Testing

/// The test helper that runs agentctl and agentd must not hold a thread of the cooperative pool
/// while a process runs: the pool has one thread per core, and the process tests run beside the
/// socket tests, whose deadlines stall when the pool does.
@Suite("ProcessRunner: waiting for a process suspends, it holds no thread")
struct ProcessRunnerTests {
    @Test(
        "more processes than the pool has threads, each waiting for a file a task creates afterwards: all finish",
        .timeLimit(.minutes(1)))
    func waitsWithoutHoldingAThread() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("runner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let flag = directory.appendingPathComponent("go").path
        // Each process waits (at most 30 s) for the flag, which only a task of this process creates,
        // once every process runs. A runner that blocked its thread would leave that task no thread:
        // the processes would wait their 30 s out and report it.
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        let script = "for i in $(seq 600); do [ -e '\(flag)' ] && exit 0; sleep 0.05; done; exit 3"
        let statuses = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<count {
                group.addTask { try await ProcessRunner.run("/bin/sh", ["-c", script]).status }
            }
            group.addTask {
                // 1 (not 0) in the statuses if the flag could not be created.
                FileManager.default.createFile(atPath: flag, contents: nil) ? 0 : 1
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses.count == count + 1)
        #expect(statuses.allSatisfy { $0 == 0 }, "\(statuses)")
    }

    @Test("a process that cannot start is an error, not a hang")
    func missingExecutable() async {
        await #expect(throws: (any Error).self) {
            _ = try await ProcessRunner.run("/nonexistent/agentctl", [])
        }
    }

    @Test("cancelling the caller stops the process")
    func cancellationTerminates() async throws {
        let task = Task { try await ProcessRunner.run("/bin/sleep", ["60"]) }
        let clock = ContinuousClock()
        let start = clock.now
        task.cancel()
        let result = try await task.value
        // SIGKILL ended it (Foundation reports the signal's number as the status).
        #expect(result.status == SIGKILL, "status \(result.status)")
        #expect(clock.now - start < .seconds(50))
    }
}
