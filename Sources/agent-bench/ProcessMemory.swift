import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// This process's resident memory, for memory-per-node figures.
enum ProcessMemory {
    /// Resident set size in bytes (`VmRSS` of Linux `/proc/self/status`), or nil where unknown.
    static func residentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        // "VmRSS:    123456 kB"
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 2, let kibibytes = Int(fields[1]) else { return nil }
        return kibibytes * 1024
    }

    /// Hands free heap pages back to the kernel (glibc `malloc_trim(0)`), so that a resident-size
    /// reading taken next counts live memory, not what an earlier, torn-down network left in the
    /// allocator's free lists (`MemoryTuning` raises the trim threshold, so glibc keeps up to 64 MiB
    /// otherwise). Swift's Glibc module does not export `malloc_trim`; it is looked up by name.
    /// Does nothing where it is missing.
    static func returnFreeMemory() {
        #if os(Linux)
            typealias MallocTrim = @convention(c) (Int) -> Int32
            guard let handle = dlopen(nil, RTLD_NOW) else { return }
            defer { dlclose(handle) }
            guard let symbol = dlsym(handle, "malloc_trim") else { return }
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        #endif
    }
}
