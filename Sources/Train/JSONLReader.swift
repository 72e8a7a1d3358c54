// JSON Lines input: splits a file's bytes into lines (LF or CRLF; blank lines ignored; a leading
// UTF-8 byte order mark skipped), checks
// each is valid UTF-8 and parses it with our JSON parser. Problems are reported per line
// ("line is not valid UTF-8", "invalid JSON at byte N: reason") so the dataset can name them.

import IO

public struct JSONLLine {
    /// 1-based line number in the file.
    public let number: Int
    /// The parsed value, or the problem with this line.
    public let result: Result<JSONValue, DatasetLineError>
}

/// A problem with one line or row, without the file name (the dataset adds it).
public struct DatasetLineError: Error, CustomStringConvertible {
    public let problem: String
    public init(_ problem: String) { self.problem = problem }
    public var description: String { problem }
}

public enum JSONLReader {
    /// Reads `path` (throws an IOError naming it when missing or unreadable) and parses every
    /// non-blank line.
    public static func read(path: String) throws -> [JSONLLine] {
        let bytes = try readFileBytes(path: path)
        return parse(bytes)
    }

    /// Parses JSON Lines text held in `bytes`.
    public static func parse(_ bytes: [UInt8]) -> [JSONLLine] {
        var out: [JSONLLine] = []
        // A UTF-8 byte order mark (some editors write one) is not part of the first line.
        var start = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
        var number = 0
        let n = bytes.count
        while start < n {
            number += 1
            var end = start
            while end < n && bytes[end] != 0x0A { end += 1 }
            var stop = end
            if stop > start && bytes[stop - 1] == 0x0D { stop -= 1 }
            let line = bytes[start..<stop]
            if !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                out.append(JSONLLine(number: number, result: parseLine(Array(line))))
            }
            start = end + 1
        }
        return out
    }

    static func parseLine(_ line: [UInt8]) -> Result<JSONValue, DatasetLineError> {
        if let bad = firstInvalidUTF8(line) {
            return .failure(DatasetLineError("line is not valid UTF-8 (byte \(bad))"))
        }
        do {
            return .success(try JSONValue.parse(line, duplicateKeys: .lastWins))
        } catch let e as JSONParseError {
            return .failure(DatasetLineError(e.description))
        } catch {
            return .failure(DatasetLineError("\(error)"))
        }
    }

    /// Offset of the first byte that starts an invalid UTF-8 sequence, or nil if all is valid.
    static func firstInvalidUTF8(_ b: [UInt8]) -> Int? {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 { i += 1; continue }
            var need = 0
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED: need = 2; hi = 0x9F
            case 0xF0: need = 3; lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; hi = 0x8F
            default: return i
            }
            if i + need >= n { return i }
            for k in 1...need {
                let x = b[i + k]
                let (l, h) = k == 1 ? (lo, hi) : (UInt8(0x80), UInt8(0xBF))
                if x < l || x > h { return i }
            }
            i += need + 1
        }
        return nil
    }
}
