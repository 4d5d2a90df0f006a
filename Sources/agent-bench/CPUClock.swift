import Foundation
import NIOCore
import Network

/// CPU time, to turn throughput into cost per byte (which another process's load barely changes)
/// and to tell how much of the machine other processes took during the run.
enum CPUClock {
    /// CPU seconds the calling thread has used.
    static func currentThread() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// CPU seconds the thread of `loop` has used (read on that thread).
    static func thread(of loop: EventLoop) async throws -> Double {
        try await loop.submit { currentThread() }.get()
    }

    /// CPU seconds this process and its reaped children (the py-libp2p peers) have used.
    static func process() -> Double {
        func seconds(_ who: Int32) -> Double {
            var usage = rusage()
            getrusage(who, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        #if os(Linux)
            return seconds(RUSAGE_SELF.rawValue) + seconds(RUSAGE_CHILDREN.rawValue)
        #else
            return seconds(RUSAGE_SELF) + seconds(RUSAGE_CHILDREN)
        #endif
    }

    /// CPU seconds all processes on the machine have used since boot (Linux `/proc/stat`), if known.
    static func machine() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        // user nice system idle iowait irq softirq steal …: all but idle and iowait are busy.
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return nil }
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// CPU time of the client's and the server's event loop threads and of the whole process, read
/// around a measurement to get its cost per byte on each side.
struct LoopCPUMeter {
    struct Reading {
        var client = 0.0
        var server = 0.0
        var process = 0.0

        static func - (lhs: Reading, rhs: Reading) -> Reading {
            Reading(
                client: lhs.client - rhs.client, server: lhs.server - rhs.server, process: lhs.process - rhs.process)
        }

        static func += (lhs: inout Reading, rhs: Reading) {
            lhs.client += rhs.client
            lhs.server += rhs.server
            lhs.process += rhs.process
        }
    }

    let client: EventLoop
    let server: EventLoop

    func read() async throws -> Reading {
        Reading(
            client: try await CPUClock.thread(of: client), server: try await CPUClock.thread(of: server),
            process: CPUClock.process())
    }

    /// Runs `body` and adds the CPU time each side used to `total`.
    func measure<Result>(into total: inout Reading, _ body: () async throws -> Result) async throws -> Result {
        let before = try await read()
        let result = try await body()
        total += try await read() - before
        return result
    }
}

/// How much CPU other processes used while the benchmark ran, in cores on average.
struct ForeignLoad {
    private let machineStart: Double?
    private let processStart = CPUClock.process()
    private let wallStart = ContinuousClock.now

    init() {
        machineStart = CPUClock.machine()
    }

    /// Average cores used by other processes since `init`, if the machine's CPU time is readable.
    func cores() -> Double? {
        guard let machineStart, let machineEnd = CPUClock.machine() else { return nil }
        let wall = (ContinuousClock.now - wallStart).seconds
        let ours = CPUClock.process() - processStart
        return max(0, (machineEnd - machineStart - ours) / wall)
    }
}
