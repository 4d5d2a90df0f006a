import CSodium

/// Entry point to libsodium. Every use of a libsodium primitive in this module goes through a type
/// that first touches `Sodium.ready`, so `sodium_init` runs exactly once before any primitive.
public enum Sodium {
    /// `sodium_init()` result: 0 on first success, 1 when already initialised, -1 on failure.
    /// Swift initialises globals and static lets once, thread-safely.
    private static let initResult: Int32 = sodium_init()

    /// Ensures libsodium is initialised; traps if it cannot be, since no crypto is possible then.
    @inline(__always)
    public static func ensureInitialized() {
        precondition(initResult >= 0, "libsodium failed to initialise (sodium_init returned \(initResult))")
    }

    /// The libsodium version string, for diagnostics.
    public static var version: String {
        ensureInitialized()
        return String(cString: sodium_version_string())
    }

    /// `count` bytes from libsodium's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        ensureInitialized()
        var bytes = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return bytes }
        withMutableBytePointer(&bytes) { randombytes_buf($0, count) }
        return bytes
    }

    /// Overwrites `bytes` with zeros in a way the compiler may not elide.
    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { sodium_memzero(base, buffer.count) }
        }
    }
}

/// Secret bytes, zeroed when the last reference goes.
///
/// Two kinds of memory (`Protection`):
/// - `.locked`: `sodium_malloc` (guard pages, `mlock` where permitted), freed by `sodium_free`. For
///   long-lived secrets: identity keys, a host's Noise static key. Each allocation costs an `mmap`,
///   two `mprotect`s and an `mlock` (25-50 us) and three or four kernel memory mappings, so a
///   process can hold only some 16,000 of them (`vm.max_map_count` is 65530 by default).
/// - `.heap`: ordinary heap memory, overwritten with `sodium_memzero` before it is freed. For the
///   short-lived secrets of each connection (Noise ephemeral keys, DH outputs, cipher keys), of
///   which a busy node holds tens of thousands.
///
/// `@unchecked Sendable`: the memory is written only in `init` and read-only afterwards, so sharing
/// a reference across threads cannot race.
public final class SecretBytes: @unchecked Sendable {
    public enum Protection: Sendable {
        case locked
        case heap
    }

    private let pointer: UnsafeMutableRawPointer
    private let protection: Protection
    /// Number of bytes held.
    public let count: Int

    /// Allocates `count` bytes of `protection` memory and lets `initializer` fill them.
    public init(count: Int, protection: Protection = .locked, initializer: (UnsafeMutableRawBufferPointer) -> Void) {
        Sodium.ensureInitialized()
        switch protection {
        case .locked:
            guard let pointer = sodium_malloc(max(count, 1)) else {
                preconditionFailure("sodium_malloc(\(count)) failed: out of memory or memory mappings")
            }
            self.pointer = pointer
        case .heap:
            self.pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        }
        self.protection = protection
        self.count = count
        initializer(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// Copies `bytes` into `protection` memory and zeroes `bytes`.
    public convenience init(consuming bytes: inout [UInt8], protection: Protection = .locked) {
        self.init(count: bytes.count, protection: protection) { target in
            bytes.withUnsafeBytes { target.copyMemory(from: $0) }
        }
        Sodium.zero(&bytes)
    }

    deinit {
        switch protection {
        case .locked:
            sodium_free(pointer)
        case .heap:
            sodium_memzero(pointer, max(count, 1))
            pointer.deallocate()
        }
    }

    /// Gives read access to the secret for the duration of `body`.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
