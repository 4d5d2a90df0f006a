import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Kernel counters of this process, read around a measurement to see what each operation costs in
/// system calls and thread switches (Linux; zeros elsewhere).
struct ProcessCounters {
    /// read-family system calls (`syscr` of `/proc/self/io`: socket reads and event-loop wake-up reads).
    var readCalls = 0.0
    /// write-family system calls (`syscw`: socket writes, and eventfd writes that wake an event loop).
    var writeCalls = 0.0
    /// Voluntary context switches of all threads (a thread blocked: waiting for work or a lock).
    var contextSwitches = 0.0
    /// User + system CPU seconds of this process.
    var cpuSeconds = 0.0

    static func now() -> ProcessCounters {
        var counters = ProcessCounters()
        if let io = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) {
            for line in io.split(separator: "\n") {
                let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let value = Double(parts[1]) else { continue }
                if parts[0] == "syscr" { counters.readCalls = value }
                if parts[0] == "syscw" { counters.writeCalls = value }
            }
        }
        var usage = rusage()
        #if os(Linux)
            getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        counters.contextSwitches = Double(usage.ru_nvcsw)
        counters.cpuSeconds =
            Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        return counters
    }

    /// The counters' growth since `start`, divided by `operations`.
    func perOperation(since start: ProcessCounters, operations: Int) -> ProcessCounters {
        let count = Double(max(operations, 1))
        return ProcessCounters(
            readCalls: (readCalls - start.readCalls) / count, writeCalls: (writeCalls - start.writeCalls) / count,
            contextSwitches: (contextSwitches - start.contextSwitches) / count,
            cpuSeconds: (cpuSeconds - start.cpuSeconds) / count)
    }
}
