/// The flow-control credit of one direction of one stream: how many more bytes of data frames the
/// sender may send.
///
/// yamux spec, "Flow Control": "Both sides should track the number of bytes sent in Data frames only,
/// as only they are tracked as part of the window size." The window travels as a 32-bit delta and no
/// implementation can track more: credit beyond 2^32-1 is a peer error, as is data beyond the credit.
struct YamuxWindow: Hashable, Sendable {
    private(set) var size: UInt32

    init(size: UInt32) { self.size = size }

    /// Adds credit the peer granted in a window update.
    ///
    /// - Throws: `.flowControlViolation` when the window would exceed 2^32-1 (a peer that grants
    ///   credit without bound; it must not wrap around to a small window).
    mutating func increase(by delta: UInt32) throws(SessionError) {
        let (sum, overflow) = size.addingReportingOverflow(delta)
        guard !overflow else {
            throw SessionError(
                .flowControlViolation, "a window update of \(delta) bytes overflows the window of \(size) bytes")
        }
        size = sum
    }

    /// Takes `count` bytes of data the peer sent out of the credit we granted.
    ///
    /// - Throws: `.flowControlViolation` when the peer sent more than the window allows.
    mutating func consume(_ count: UInt32) throws(SessionError) {
        let (rest, overflow) = size.subtractingReportingOverflow(count)
        guard !overflow else {
            throw SessionError(
                .flowControlViolation, "the peer sent \(count) bytes of data but its window allows \(size)")
        }
        size = rest
    }

    /// Takes `count` bytes we send out of the credit the peer granted. Sending beyond it is our bug.
    mutating func spend(_ count: UInt32) {
        precondition(count <= size, "yamux sender spent \(count) bytes of a \(size)-byte window")
        size -= count
    }

    /// Grants `count` bytes of credit we computed ourselves. Beyond 2^32-1 is our bug.
    mutating func grant(_ count: UInt32) {
        let (sum, overflow) = size.addingReportingOverflow(count)
        precondition(!overflow, "yamux receiver granted \(count) bytes over a \(size)-byte window")
        size = sum
    }
}
