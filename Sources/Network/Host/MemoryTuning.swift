import CAgentSystem

/// Process-wide allocator settings for a node that moves bulk data.
///
/// glibc hands memory above `M_MMAP_THRESHOLD` (128 KiB by default, adapting) straight to `mmap`
/// and trims freed heap above `M_TRIM_THRESHOLD` back to the kernel; for the 64–256 KiB buffers of a
/// busy connection that means every buffer is fresh memory, paid for in page faults (measured by
/// `agent-bench session`: ~400k faults per GiB transferred, 16% of the sender's time). Raising both
/// keeps such buffers in the heap for reuse. Memory stays bounded by the connection limits; only the
/// point at which freed memory returns to the kernel moves.
public enum MemoryTuning {
    /// Applies the settings; call once at process start. Returns whether the libc accepted them.
    @discardableResult
    public static func apply() -> Bool {
        agentd_tune_malloc(4 * 1024 * 1024, 64 * 1024 * 1024) == 1
    }
}
