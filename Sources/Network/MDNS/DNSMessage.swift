/// The part of the DNS wire format (RFC 1035 §4) that libp2p mDNS discovery needs (libp2p/specs
/// `discovery/mdns.md`, RFC 6762/6763): header, questions, and resource records whose PTR and TXT
/// data are decoded (any other type is kept as raw bytes). Parsing is for hostile input: every
/// length and count is checked against what is left before anything is allocated, compression
/// pointers must point strictly backwards (no loops) and a name is at most 255 bytes.
public struct DNSMessage: Hashable, Sendable {
    /// An mDNS message is at most this long (RFC 6762 §17: 9000 bytes including IP and UDP
    /// headers); longer datagrams are refused unread.
    public static let maximumSize = 9000

    public struct Question: Hashable, Sendable {
        public var name: DNSName
        public var type: UInt16
        /// The class's top bit: the querier asks for a unicast answer (RFC 6762 §5.4).
        public var unicastResponse = false

        public init(name: DNSName, type: UInt16, unicastResponse: Bool = false) {
            self.name = name
            self.type = type
            self.unicastResponse = unicastResponse
        }
    }

    public enum RecordData: Hashable, Sendable {
        case ptr(DNSName)
        /// The character strings of a TXT record.
        case txt([[UInt8]])
        case other([UInt8])
    }

    public struct Record: Hashable, Sendable {
        public var name: DNSName
        public var type: UInt16
        public var ttl: UInt32
        public var data: RecordData

        public init(name: DNSName, ttl: UInt32, data: RecordData, type: UInt16? = nil) {
            self.name = name
            self.ttl = ttl
            self.data = data
            switch data {
            case .ptr: self.type = DNSMessage.typePTR
            case .txt: self.type = DNSMessage.typeTXT
            case .other: self.type = type ?? 0
            }
        }
    }

    public static let typePTR: UInt16 = 12
    public static let typeTXT: UInt16 = 16
    static let classIN: UInt16 = 1

    public var id: UInt16 = 0
    public var isResponse = false
    public var questions: [Question] = []
    public var answers: [Record] = []
    public var additionals: [Record] = []

    public init(id: UInt16 = 0, isResponse: Bool, questions: [Question] = [], answers: [Record] = [], additionals: [Record] = []) {
        self.id = id
        self.isResponse = isResponse
        self.questions = questions
        self.answers = answers
        self.additionals = additionals
    }

    // MARK: Writing

    /// The message on the wire, names uncompressed. A response is authoritative (RFC 6762 §18.4).
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func u16(_ value: UInt16) { out += [UInt8(value >> 8), UInt8(value & 0xff)] }
        func u32(_ value: UInt32) { u16(UInt16(value >> 16)); u16(UInt16(value & 0xffff)) }
        u16(id)
        u16(isResponse ? 0x8400 : 0)
        u16(UInt16(questions.count))
        u16(UInt16(answers.count))
        u16(0)
        u16(UInt16(additionals.count))
        for question in questions {
            question.name.write(to: &out)
            u16(question.type)
            u16(Self.classIN | (question.unicastResponse ? 0x8000 : 0))
        }
        for record in answers + additionals {
            record.name.write(to: &out)
            u16(record.type)
            u16(Self.classIN)
            u32(record.ttl)
            var data: [UInt8] = []
            switch record.data {
            case .ptr(let name): name.write(to: &data)
            case .txt(let strings):
                for string in strings {
                    data.append(UInt8(min(string.count, 255)))
                    data += string.prefix(255)
                }
            case .other(let bytes): data = bytes
            }
            u16(UInt16(data.count))
            out += data
        }
        return out
    }

    // MARK: Parsing

    /// Parses a whole datagram.
    /// - Throws: `MDNSError` naming what is malformed (truncated, a bad name, a count the message
    ///   cannot hold, trailing garbage is allowed as RFC 1035 readers allow it).
    public static func parse(_ bytes: [UInt8]) throws(MDNSError) -> DNSMessage {
        guard bytes.count <= maximumSize else { throw MDNSError("message of \(bytes.count) bytes, over \(maximumSize)") }
        var reader = Reader(bytes: bytes)
        let id = try reader.u16()
        let flags = try reader.u16()
        let counts = [try reader.u16(), try reader.u16(), try reader.u16(), try reader.u16()]
        // A question takes at least 5 bytes, a record at least 11: a count the rest cannot hold
        // is refused before any array is reserved.
        let minimum = Int(counts[0]) * 5 + (Int(counts[1]) + Int(counts[2]) + Int(counts[3])) * 11
        guard minimum <= reader.remaining else {
            throw MDNSError("counts \(counts) do not fit in \(reader.remaining) bytes")
        }
        var message = DNSMessage(id: id, isResponse: flags & 0x8000 != 0)
        for _ in 0..<counts[0] {
            let name = try reader.name()
            let type = try reader.u16()
            let qclass = try reader.u16()
            message.questions.append(Question(name: name, type: type, unicastResponse: qclass & 0x8000 != 0))
        }
        for section in 1...3 {
            for _ in 0..<counts[section] {
                let record = try reader.record()
                if section == 1 { message.answers.append(record) }
                if section == 3 { message.additionals.append(record) }  // authority records are skipped
            }
        }
        return message
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var remaining: Int { bytes.count - offset }

        mutating func u8() throws(MDNSError) -> UInt8 {
            guard offset < bytes.count else { throw MDNSError("truncated at byte \(offset)") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func u16() throws(MDNSError) -> UInt16 {
            UInt16(try u8()) << 8 | UInt16(try u8())
        }

        mutating func u32() throws(MDNSError) -> UInt32 {
            UInt32(try u16()) << 16 | UInt32(try u16())
        }

        mutating func take(_ count: Int) throws(MDNSError) -> ArraySlice<UInt8> {
            guard count <= remaining else { throw MDNSError("\(count) bytes wanted at byte \(offset), \(remaining) left") }
            defer { offset += count }
            return bytes[offset..<offset + count]
        }

        /// A name at the current offset, following compression pointers; the offset moves past
        /// the name's bytes here (a pointer ends it).
        mutating func name() throws(MDNSError) -> DNSName {
            var labels: [String] = []
            var length = 0
            var position = offset
            var jumped = false
            var jumps = 0
            while true {
                guard position < bytes.count else { throw MDNSError("name truncated at byte \(position)") }
                let byte = bytes[position]
                switch byte & 0xc0 {
                case 0x00:
                    if byte == 0 {
                        if !jumped { offset = position + 1 }
                        return DNSName(labels: labels)
                    }
                    let count = Int(byte)
                    guard position + 1 + count <= bytes.count else { throw MDNSError("label truncated at byte \(position)") }
                    length += count + 1
                    guard length <= DNSName.maximumLength else { throw MDNSError("name longer than 255 bytes") }
                    labels.append(String(decoding: bytes[(position + 1)...(position + count)], as: UTF8.self))
                    position += 1 + count
                case 0xc0:
                    guard position + 1 < bytes.count else { throw MDNSError("compression pointer truncated") }
                    let target = Int(byte & 0x3f) << 8 | Int(bytes[position + 1])
                    // Strictly backwards, and before where this name started: no loops.
                    guard target < position, jumps < 32 else {
                        throw MDNSError("compression pointer at byte \(position) to \(target) does not point back")
                    }
                    jumps += 1
                    if !jumped { offset = position + 2 }
                    jumped = true
                    position = target
                default:
                    throw MDNSError("label type 0x\(String(byte, radix: 16)) at byte \(position)")
                }
            }
        }

        mutating func record() throws(MDNSError) -> Record {
            let name = try name()
            let type = try u16()
            _ = try u16()  // class (the cache-flush bit is not used here)
            let ttl = try u32()
            let length = Int(try u16())
            let end = offset + length
            guard length <= remaining else { throw MDNSError("record data of \(length) bytes, \(remaining) left") }
            let data: RecordData
            switch type {
            case DNSMessage.typePTR:
                let target = try self.name()
                guard offset == end else { throw MDNSError("PTR data length \(length) does not match its name") }
                data = .ptr(target)
            case DNSMessage.typeTXT:
                var strings: [[UInt8]] = []
                while offset < end {
                    let count = Int(try u8())
                    guard offset + count <= end else { throw MDNSError("TXT string overruns its record") }
                    strings.append(Array(try take(count)))
                }
                data = .txt(strings)
            default:
                data = .other(Array(try take(length)))
            }
            return Record(name: name, ttl: ttl, data: data, type: type)
        }
    }
}

/// A domain name as its labels, compared case-insensitively (ASCII, RFC 1035 §2.3.3).
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    public static let maximumLength = 255

    public let labels: [String]

    public init(labels: [String]) {
        self.labels = labels
    }

    /// `a.b.c` (a trailing dot is allowed).
    public init(_ text: String) {
        self.labels = text.split(separator: ".").map(String.init)
    }

    public var description: String { labels.joined(separator: ".") }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        lhs.labels.count == rhs.labels.count
            && zip(lhs.labels, rhs.labels).allSatisfy { $0.lowercased() == $1.lowercased() }
    }

    public func hash(into hasher: inout Hasher) {
        for label in labels { hasher.combine(label.lowercased()) }
    }

    func write(to out: inout [UInt8]) {
        for label in labels {
            let bytes = Array(label.utf8.prefix(63))
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
    }
}

/// A malformed mDNS message.
public struct MDNSError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { "mDNS: \(message)" }
}
