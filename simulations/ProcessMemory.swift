import CAgentSystem
import Foundation

/// The process's resident memory, from /proc/self/status (Linux): what memory per node is measured
/// with. Nil where the file or the field is missing (another OS), and the figures are then left out.
enum ProcessMemory {
    /// Resident set size now, in bytes (`VmRSS`).
    static var residentBytes: Int? { field("VmRSS:") }
    /// The peak resident set size of the process so far, in bytes (`VmHWM`).
    static var peakResidentBytes: Int? { field("VmHWM:") }

    /// Returns the heap's free memory to the system (glibc's `malloc_trim`), so that a resident
    /// size read next counts memory in use, not memory freed by an earlier simulation.
    static func releaseFreeMemory() {
        _ = agentd_malloc_trim()
    }

    private static func field(_ name: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name) {
            // "VmRSS:	  123456 kB"
            let fields = line.dropFirst(name.count).split { $0 == " " || $0 == "\t" }
            guard fields.count == 2, fields[1] == "kB", let kibibytes = Int(fields[0]) else { return nil }
            return kibibytes * 1024
        }
        return nil
    }
}
