import Identity

/// A point in the 256-bit Kademlia keyspace.
///
/// libp2p kad-dht spec, "Distance": "the distance between two keys is `XOR(sha256(key1),
/// sha256(key2))`". Peers sit at the SHA-256 of their peer id bytes (the multihash), records at the
/// SHA-256 of their record key. The key is held as four big-endian 64-bit words so distance,
/// comparison and prefix arithmetic never allocate.
public struct KademliaKey: Hashable, Sendable, CustomStringConvertible {
    /// Bits in a key: the SHA-256 output size.
    public static let bitCount = 256
    /// Bytes in a key.
    public static let byteCount = 32

    // Word 0 holds bytes 0..<8 (the most significant), word 3 bytes 24..<32.
    @usableFromInline let w0: UInt64
    @usableFromInline let w1: UInt64
    @usableFromInline let w2: UInt64
    @usableFromInline let w3: UInt64

    @inlinable init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        self.w0 = w0
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// Wraps 32 bytes that already are a key (a SHA-256 digest); `nil` for any other length.
    public init?<Bytes: Collection<UInt8>>(bytes: Bytes) {
        guard bytes.count == Self.byteCount else { return nil }
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for (offset, byte) in bytes.enumerated() {
            let shift = UInt64(56 - 8 * (offset % 8))
            let value = UInt64(byte) << shift
            switch offset / 8 {
            case 0: words.0 |= value
            case 1: words.1 |= value
            case 2: words.2 |= value
            default: words.3 |= value
            }
        }
        self.init(words.0, words.1, words.2, words.3)
    }

    /// The key of arbitrary bytes: their SHA-256. A record's DHT key is `KademliaKey(hashing:
    /// recordKey)`.
    public init<Bytes: Collection<UInt8>>(hashing bytes: Bytes) {
        self.init(bytes: SHA256.hash(bytes))!
    }

    /// The key of a peer: SHA-256 of its peer id bytes (the multihash), as every libp2p DHT computes it.
    public init(peer: PeerID) {
        self.init(hashing: peer.bytes)
    }

    /// The 32 bytes, most significant first.
    public var bytes: [UInt8] {
        var result = [UInt8]()
        result.reserveCapacity(Self.byteCount)
        for word in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) {
                result.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return result
    }

    /// Lowercase hex of the 32 bytes.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(2 * Self.byteCount)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// XOR distance to `other`; symmetric, zero only for the same key.
    @inlinable
    public func distance(to other: KademliaKey) -> KademliaDistance {
        KademliaDistance(w0 ^ other.w0, w1 ^ other.w1, w2 ^ other.w2, w3 ^ other.w3)
    }

    /// How many leading bits the two keys share: 256 for equal keys, 0 when the first bit differs.
    @inlinable
    public func commonPrefixLength(with other: KademliaKey) -> Int {
        distance(to: other).leadingZeroBitCount
    }

    /// Whether `a` is strictly closer to this key than `b` is. Ties only happen for `a == b`.
    @inlinable
    public func isCloser(_ a: KademliaKey, than b: KademliaKey) -> Bool {
        distance(to: a) < distance(to: b)
    }

    /// The key at `distance` from this one (`self XOR distance`).
    @inlinable
    public func moved(by distance: KademliaDistance) -> KademliaKey {
        KademliaKey(w0 ^ distance.w0, w1 ^ distance.w1, w2 ^ distance.w2, w3 ^ distance.w3)
    }

    /// A uniformly random key from `generator`.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> KademliaKey {
        KademliaKey(generator.next(), generator.next(), generator.next(), generator.next())
    }

    /// A uniformly random key whose distance from `origin` falls in bucket `bucket`
    /// (`KademliaDistance.bucketIndex`), that is a distance in `[2^bucket, 2^(bucket+1))`: the
    /// leading `255 - bucket` bits equal `origin`'s, the next one differs, the rest are random.
    public static func random<G: RandomNumberGenerator>(
        inBucket bucket: Int, from origin: KademliaKey, using generator: inout G
    ) -> KademliaKey {
        precondition((0..<bitCount).contains(bucket), "bucket index \(bucket) outside 0..<256")
        let wordIndex = 3 - bucket / 64
        let bit = UInt64(bucket % 64)
        let lowMask: UInt64 = bit == 0 ? 0 : (UInt64.max >> (64 - bit))
        // Words above the bucket's bit are zero, its word has the bit set and random bits below it,
        // words below are random.
        func word(_ index: Int) -> UInt64 {
            if index < wordIndex { return 0 }
            if index == wordIndex { return (generator.next() & lowMask) | (1 << bit) }
            return generator.next()
        }
        return origin.moved(by: KademliaDistance(word(0), word(1), word(2), word(3)))
    }
}

/// The XOR distance between two keys, ordered as a 256-bit unsigned integer.
public struct KademliaDistance: Hashable, Comparable, Sendable, CustomStringConvertible {
    @usableFromInline let w0: UInt64
    @usableFromInline let w1: UInt64
    @usableFromInline let w2: UInt64
    @usableFromInline let w3: UInt64

    @inlinable init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        self.w0 = w0
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// The distance of a key to itself.
    public static let zero = KademliaDistance(0, 0, 0, 0)

    /// Leading zero bits, 256 for `zero`. Equals the common prefix length of the two keys.
    @inlinable
    public var leadingZeroBitCount: Int {
        if w0 != 0 { return w0.leadingZeroBitCount }
        if w1 != 0 { return 64 + w1.leadingZeroBitCount }
        if w2 != 0 { return 128 + w2.leadingZeroBitCount }
        return 192 + w3.leadingZeroBitCount
    }

    /// `floor(log2(distance))`: the k-bucket a key at this distance from the local key belongs to
    /// (bucket `i` holds distances in `[2^i, 2^(i+1))`, so bucket 255 is the far half of the
    /// keyspace). `nil` for `zero`, which is the local key itself and belongs in no bucket.
    @inlinable
    public var bucketIndex: Int? {
        let zeros = leadingZeroBitCount
        return zeros == KademliaKey.bitCount ? nil : KademliaKey.bitCount - 1 - zeros
    }

    /// Bit `index` of the distance, 0 being the least significant.
    @inlinable
    public func bit(_ index: Int) -> Bool {
        let word: UInt64
        switch index >> 6 {
        case 0: word = w3
        case 1: word = w2
        case 2: word = w1
        default: word = w0
        }
        return (word >> UInt64(index & 63)) & 1 == 1
    }

    @inlinable
    public static func < (lhs: KademliaDistance, rhs: KademliaDistance) -> Bool {
        if lhs.w0 != rhs.w0 { return lhs.w0 < rhs.w0 }
        if lhs.w1 != rhs.w1 { return lhs.w1 < rhs.w1 }
        if lhs.w2 != rhs.w2 { return lhs.w2 < rhs.w2 }
        return lhs.w3 < rhs.w3
    }

    /// Lowercase hex of the 32 bytes, most significant first.
    public var description: String {
        KademliaKey(w0, w1, w2, w3).description
    }
}
