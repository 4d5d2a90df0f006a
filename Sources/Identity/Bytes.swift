/// Runs `body` with a pointer to the contiguous bytes of `bytes` and their count, copying only when
/// the collection has no contiguous storage of its own. The pointer is never null, even for an empty
/// collection, since libsodium declares its buffer arguments `nonnull`.
@inlinable
public func withBytePointer<Bytes: Collection<UInt8>, Result>(
    _ bytes: Bytes, _ body: (UnsafePointer<UInt8>, Int) -> Result
) -> Result {
    func call(_ buffer: UnsafeBufferPointer<UInt8>) -> Result {
        if let base = buffer.baseAddress, buffer.count > 0 {
            return body(base, buffer.count)
        }
        var empty: UInt8 = 0
        return withUnsafePointer(to: &empty) { body($0, 0) }
    }
    if let result = bytes.withContiguousStorageIfAvailable(call) {
        return result
    }
    return Array(bytes).withUnsafeBufferPointer(call)
}

/// `body` with a non-null mutable pointer to `array`'s storage; `array` must not be empty.
@inlinable
public func withMutableBytePointer<Result>(_ array: inout [UInt8], _ body: (UnsafeMutablePointer<UInt8>) -> Result) -> Result {
    precondition(!array.isEmpty, "output buffer must not be empty")
    return array.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

extension UnsafeRawBufferPointer {
    /// The bytes as a non-null `UInt8` pointer; the buffer must not be empty.
    @inlinable
    public var bytePointer: UnsafePointer<UInt8> {
        precondition(count > 0, "buffer must not be empty")
        return baseAddress!.assumingMemoryBound(to: UInt8.self)
    }
}

extension UnsafeMutableRawBufferPointer {
    /// The bytes as a non-null mutable `UInt8` pointer; the buffer must not be empty.
    @inlinable
    public var bytePointer: UnsafeMutablePointer<UInt8> {
        precondition(count > 0, "buffer must not be empty")
        return baseAddress!.assumingMemoryBound(to: UInt8.self)
    }
}
