import Resolution

/// Message timestamps: milliseconds since the Unix epoch on the wire, RFC 3339 UTC with exactly
/// three fraction digits in JSON (`2026-12-07T08:00:00.250Z`; spec/messages.md §6).
public enum MessageTime {
    /// Formats `milliseconds` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    public static func rfc3339(_ milliseconds: UInt64) -> String {
        let seconds = Timestamp.iso8601(milliseconds / 1000)  // "…T10:00:00Z"
        let fraction = milliseconds % 1000
        let digits = String(fraction)
        return seconds.dropLast() + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,3}]Z` (upper-case `T` and `Z`, UTC only, years 1970–9999)
    /// to milliseconds. Leap seconds (`:60`) are refused.
    /// - Throws: `.malformed` when the text is not of that form or names no real time.
    public static func parse(_ text: String) throws(MessageError) -> UInt64 {
        let bytes = Array(text.utf8)
        func fail() -> MessageError {
            MessageError(
                .malformed, "timestamp \"\(text.prefix(40))\" is not RFC 3339 UTC like 2026-12-07T08:00:00.250Z")
        }
        func number(_ range: Range<Int>) throws(MessageError) -> Int {
            guard range.upperBound <= bytes.count else { throw fail() }
            var value = 0
            for byte in bytes[range] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw fail() }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard bytes.count >= 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
            bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
            bytes.last == UInt8(ascii: "Z")
        else { throw fail() }
        let year = try number(0..<4)
        let month = try number(5..<7)
        let day = try number(8..<10)
        let hour = try number(11..<13)
        let minute = try number(14..<16)
        let second = try number(17..<19)
        var millisecond = 0
        if bytes.count > 20 {
            let digits = bytes.count - 21
            guard bytes[19] == UInt8(ascii: "."), (1...3).contains(digits) else { throw fail() }
            millisecond = try number(20..<(20 + digits))
            for _ in digits..<3 { millisecond *= 10 }
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let monthDays = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard year >= 1970, (1...12).contains(month), day >= 1, day <= monthDays[month - 1], hour < 24, minute < 60,
            second < 60
        else { throw fail() }
        // Howard Hinnant's days_from_civil.
        let y = month <= 2 ? year - 1 : year
        let era = y / 400
        let yearOfEra = y - era * 400
        let monthPrime = month > 2 ? month - 3 : month + 9
        let dayOfYear = (153 * monthPrime + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        let seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
        return UInt64(seconds) * 1000 + UInt64(millisecond)
    }
}
