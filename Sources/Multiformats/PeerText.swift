extension String {
    /// This text, chosen by a peer (a protocol id, a muxer name, an agent version, a record key),
    /// made safe to put in a log line, an error message or a terminal: line breaks, other control
    /// and format characters (bidi overrides, zero-width marks), line and paragraph separators and
    /// backslashes are escaped (`\n`, `\u{202E}`, `\\`), and the result is cut after
    /// `maximumLength` characters with the number left out.
    ///
    /// Without it a peer forges log records: a muxer name holding `"\n… critical … identity key
    /// file replaced"` printed a line of its own in the text log (issue #10, finding 9).
    public func escapedForLog(maximumLength: Int = 256) -> String {
        var result = ""
        var count = 0
        for scalar in unicodeScalars {
            if count == maximumLength {
                let left = unicodeScalars.count - count
                result += "…(\(left) more characters)"
                break
            }
            count += 1
            switch scalar {
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                switch scalar.properties.generalCategory {
                case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                    result += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
                default:
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result
    }
}
