// The global functions a chat template can call, as transformers provides them: range() (at most
// 100,000 items, as Jinja's sandbox allows), dict(), namespace(), raise_exception(message) and
// strftime_now(format) (the render's clock; tests fix it), plus cycler-free helpers.

import Foundation

extension Interpreter {
    func globalValue(_ name: String) -> Value? {
        switch name {
        case "range":
            return .callable(Callable("range") { interp, args, _ in
                let ints = try args.map { v -> Int in
                    if case .int(let n) = v { return n }
                    if case .bool(let b) = v { return b ? 1 : 0 }
                    throw JinjaError("range() arguments must be integers, got \(v.typeName)")
                }
                var start = 0, stop = 0, step = 1
                switch ints.count {
                case 1: stop = ints[0]
                case 2: start = ints[0]; stop = ints[1]
                case 3: start = ints[0]; stop = ints[1]; step = ints[2]
                default: throw JinjaError("range() takes 1 to 3 arguments")
                }
                guard step != 0 else { throw JinjaError("range() arg 3 must not be zero") }
                // (stop - start) may not fit an Int: an overflow means a span too long for any range.
                let (span, overflow) = step > 0 ? stop.subtractingReportingOverflow(start) : start.subtractingReportingOverflow(stop)
                let ascending = step > 0 ? stop > start : start > stop
                var count = 0
                if overflow { count = ascending ? Int.max : 0 } else if span > 0 {
                    count = Int((UInt(span) - 1) / step.magnitude) + 1
                }
                guard count <= 100_000 else { throw JinjaError("range too big (\(count) items, at most 100000)") }
                try interp.charge(items: count)
                return .list((0..<count).map { .int(start + $0 * step) })
            })
        case "dict":
            return .callable(Callable("dict") { interp, args, kw in
                var d = OrderedDict()
                if let first = args.first {
                    switch first {
                    case .dict(let x): d = x
                    case .list(let l), .tuple(let l):
                        for p in l {
                            guard let kv = p.items, kv.count == 2, case .string(let k) = kv[0] else {
                                throw JinjaError("dict(): expected (key, value) pairs with string keys")
                            }
                            d[k] = kv[1]
                        }
                    default: throw JinjaError("dict(): cannot convert \(first.typeName)")
                    }
                }
                for (k, v) in kw { d[k] = v }
                return .dict(d)
            })
        case "namespace":
            return .callable(Callable("namespace") { _, args, kw in
                let ns = Namespace()
                if let first = args.first {
                    guard case .dict(let d) = first else { throw JinjaError("namespace(): expected a dict, got \(first.typeName)") }
                    ns.attributes = d
                }
                for (k, v) in kw { ns.attributes[k] = v }
                if let bad = ns.attributes.keys.first(where: { $0.hasPrefix("_") }) {
                    throw JinjaError("namespace attributes cannot start with '_' (got '\(bad)')")
                }
                return .namespace(ns)
            })
        case "raise_exception":
            return .callable(Callable("raise_exception") { _, args, kw in
                let msg = (args.first ?? kw.first?.1 ?? .string("")).str
                throw JinjaError(msg, raised: true)
            })
        case "strftime_now":
            return .callable(Callable("strftime_now") { interp, args, _ in
                guard case .string(let fmt)? = args.first else { throw JinjaError("strftime_now(format): format must be a string") }
                return .string(strftime(fmt, interp.now))
            })
        default:
            return nil
        }
    }
}

/// C strftime of a date in UTC, in the C locale's English names.
func strftime(_ format: String, _ date: Date) -> String {
    var t = time_t(date.timeIntervalSince1970.rounded(.down))
    var parts = tm()
    gmtime_r(&t, &parts)
    var buf = [Int8](repeating: 0, count: 512)
    let n = format.withCString { f in Foundation.strftime(&buf, buf.count, f, &parts) }
    let bytes = buf[0..<n].map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
