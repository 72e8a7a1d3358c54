// A small JSON reader for the golden files that keeps object key order (a template's tojson
// output depends on it) and turns JSON straight into template values.

import Foundation
@testable import Jinja

struct OrderedJSON {
    private let u: [UInt8]
    private var i = 0

    static func parse(_ data: Data) throws -> Value {
        var p = OrderedJSON(u: [UInt8](data))
        let v = try p.value()
        return v
    }

    private init(u: [UInt8]) { self.u = u }

    private struct Bad: Error { let at: Int }

    private mutating func ws() { while i < u.count, [0x20, 0x0a, 0x0d, 0x09].contains(u[i]) { i += 1 } }

    private mutating func value() throws -> Value {
        ws()
        guard i < u.count else { throw Bad(at: i) }
        switch u[i] {
        case UInt8(ascii: "{"):
            i += 1
            var d = OrderedDict()
            ws()
            if u[i] == UInt8(ascii: "}") { i += 1; return .dict(d) }
            while true {
                ws()
                guard case .string(let k) = try value() else { throw Bad(at: i) }
                ws(); guard u[i] == UInt8(ascii: ":") else { throw Bad(at: i) }; i += 1
                d[k] = try value()
                ws()
                if u[i] == UInt8(ascii: ",") { i += 1; continue }
                guard u[i] == UInt8(ascii: "}") else { throw Bad(at: i) }
                i += 1
                return .dict(d)
            }
        case UInt8(ascii: "["):
            i += 1
            var l: [Value] = []
            ws()
            if u[i] == UInt8(ascii: "]") { i += 1; return .list(l) }
            while true {
                l.append(try value())
                ws()
                if u[i] == UInt8(ascii: ",") { i += 1; continue }
                guard u[i] == UInt8(ascii: "]") else { throw Bad(at: i) }
                i += 1
                return .list(l)
            }
        case UInt8(ascii: "\""):
            i += 1
            var bytes: [UInt8] = []
            while u[i] != UInt8(ascii: "\"") {
                if u[i] == UInt8(ascii: "\\") {
                    i += 1
                    let c = u[i]
                    switch c {
                    case UInt8(ascii: "n"): bytes.append(0x0a)
                    case UInt8(ascii: "t"): bytes.append(0x09)
                    case UInt8(ascii: "r"): bytes.append(0x0d)
                    case UInt8(ascii: "b"): bytes.append(0x08)
                    case UInt8(ascii: "f"): bytes.append(0x0c)
                    case UInt8(ascii: "u"):
                        var v = UInt32(String(decoding: u[(i + 1)...(i + 4)], as: UTF8.self), radix: 16) ?? 0
                        i += 4
                        if v >= 0xD800 && v < 0xDC00, u[i + 1] == UInt8(ascii: "\\") {
                            let lo = UInt32(String(decoding: u[(i + 3)...(i + 6)], as: UTF8.self), radix: 16) ?? 0
                            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                            i += 6
                        }
                        bytes += Array(String(Character(Unicode.Scalar(v) ?? "?")).utf8)
                    default: bytes.append(c)
                    }
                    i += 1
                } else {
                    bytes.append(u[i]); i += 1
                }
            }
            i += 1
            return .string(String(decoding: bytes, as: UTF8.self))
        case UInt8(ascii: "t"): i += 4; return .bool(true)
        case UInt8(ascii: "f"): i += 5; return .bool(false)
        case UInt8(ascii: "n"): i += 4; return .none
        default:
            let start = i
            while i < u.count, "+-0123456789.eE".utf8.contains(u[i]) { i += 1 }
            let text = String(decoding: u[start..<i], as: UTF8.self)
            if let n = Int(text) { return .int(n) }
            guard let d = Double(text) else { throw Bad(at: start) }
            return .double(d)
        }
    }
}

extension Value {
    subscript(_ key: String) -> Value? {
        if case .dict(let d) = self { return d[key] }
        return nil
    }
    var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    var listValue: [Value]? { if case .list(let l) = self { return l }; return nil }
}
