// q.plot{files, x, y, out, group, title, labels, x_label, y_label, log_y, width, height}: an
// SVG line chart of JSONL files (trainer logs, sweep results). Each file is a series, or, with
// `group`, each distinct value of that field is one. Fields may be dotted paths into nested
// objects ("metrics.eval_loss"). Lines without a numeric x or y are skipped.
// The drawing itself is IO/SVGLineChart.swift.

import CLua
import Foundation
import IO

enum PlotBindings {
    static func functions() -> [(String, LuaFunction)] {
        [("plot", { a in try plot(a) })]
    }

    static func plot(_ a: LuaArgs) throws -> Int32 {
        let L = a.L
        if a.isNil(1) { throw a.fail("expected a table of options {files =, x =, y =, out =}") }
        let t = try a.options(1, allowed: ["files", "x", "y", "out", "group", "title", "labels", "x_label",
                                           "y_label", "log_y", "width", "height"])
        var files: [String] = []
        if let t = t, let ty = a.optField(t, "files") {
            defer { luaPop(L, 1) }
            if ty == LUA_TSTRING { files = [luaString(L, -1) ?? ""] } else if ty == LUA_TTABLE {
                files = try stringList(a, -1, "files")
            } else { throw a.fail("option 'files' must be a path or a list of paths, got \(luaTypeName(L, -1))") }
        }
        if files.isEmpty { throw a.fail("option 'files' must name at least one JSONL file") }
        guard let out = try a.optionString(t, "out") else { throw a.fail("missing option 'out' (the SVG file to write)") }
        let xField = try a.optionString(t, "x") ?? "step"
        let yField = try a.optionString(t, "y") ?? "loss"
        let group = try a.optionString(t, "group")
        var labels: [String] = []
        if let t = t, a.optField(t, "labels") != nil {
            defer { luaPop(L, 1) }
            labels = try stringList(a, -1, "labels")
            if labels.count != files.count {
                throw a.fail("option 'labels' has \(labels.count) names for \(files.count) files")
            }
        }
        var o = LineChartOptions()
        o.title = try a.optionString(t, "title")
        o.xLabel = try a.optionString(t, "x_label") ?? xField
        o.yLabel = try a.optionString(t, "y_label") ?? yField
        o.logY = try a.optionBool(t, "log_y") ?? false
        o.width = try a.optionInteger(t, "width") ?? o.width
        o.height = try a.optionInteger(t, "height") ?? o.height
        if !(200...10000).contains(o.width) || !(150...10000).contains(o.height) {
            throw a.fail("width must be 200..10000 and height 150..10000, got \(o.width) x \(o.height)")
        }

        let names = labels.isEmpty ? seriesNames(files) : labels
        var series: [ChartSeries] = []
        for (i, file) in files.enumerated() {
            let rows = try readRows(a, file)
            if let g = group {
                series += grouped(rows, file: file, x: xField, y: yField, group: g,
                                  prefix: files.count > 1 ? names[i] + " " : "")
            } else {
                series.append(ChartSeries(name: names[i], points: sortedPoints(rows.compactMap { point($0, xField, yField) })))
            }
        }
        if series.allSatisfy({ $0.points.isEmpty }) {
            throw a.fail("no line of \(files.joined(separator: ", ")) has numeric \"\(xField)\" and \"\(yField)\"" +
                         (group.map { " and a \"\($0)\" field" } ?? ""))
        }
        let svg: String
        do { svg = try SVGLineChart.render(series, o) } catch let e as ChartError { throw a.fail(e.description) }
        let dir = (out as NSString).deletingLastPathComponent
        if !dir.isEmpty { do { try AtomicFile.makeDirectory(dir) } catch let e as IOError { throw a.fail(e.description) } }
        do { try writeFileAtomically(out, Array(svg.utf8)) } catch let e as IOError { throw a.fail(e.description) }
        luaPushString(L, out)
        lua_pushinteger(L, lua_Integer(series.filter { !$0.points.isEmpty }.count))
        return 2
    }

    static func stringList(_ a: LuaArgs, _ i: Int32, _ what: String) throws -> [String] {
        let L = a.L
        let idx = luaAbs(L, i)
        guard lua_type(L, idx) == LUA_TTABLE else { throw a.fail("option '\(what)' must be a list of strings") }
        var out: [String] = []
        let n = luaRawLen(L, idx)
        for k in 0..<n {
            lua_rawgeti(L, idx, lua_Integer(k + 1))
            defer { luaPop(L, 1) }
            guard lua_type(L, -1) == LUA_TSTRING, let s = luaString(L, -1) else {
                throw a.fail("option '\(what)' entry \(k + 1) must be a string, got \(luaTypeName(L, -1))")
            }
            out.append(s)
        }
        return out
    }

    /// The JSON objects of a JSONL file. A last line cut short (no newline, invalid JSON: a log
    /// still being written) is skipped; any other invalid line is an error naming the line.
    static func readRows(_ a: LuaArgs, _ file: String) throws -> [JSONObject] {
        let bytes: [UInt8]
        do { bytes = try readFileBytes(path: file) } catch let e as IOError { throw a.fail(e.description) }
        var rows: [JSONObject] = []
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false)
        for (n, line) in lines.enumerated() {
            if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            let value: JSONValue
            do { value = try JSONValue.parse(Array(line)) } catch {
                if n == lines.count - 1 { continue }
                throw a.fail("\(file):\(n + 1): invalid JSON (\(error))")
            }
            guard let obj = value.objectValue else { throw a.fail("\(file):\(n + 1): expected a JSON object per line") }
            rows.append(obj)
        }
        return rows
    }

    /// A field of a row: the key itself, else a dotted path into nested objects
    /// ("metrics.eval_loss", "config.r" in sweep results).
    static func field(_ row: JSONObject, _ name: String) -> JSONValue? {
        if let v = row[name] { return v }
        guard name.contains(".") else { return nil }
        var current: JSONValue = .object(row)
        for part in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard let o = current.objectValue, let next = o[String(part)] else { return nil }
            current = next
        }
        return current
    }

    static func point(_ row: JSONObject, _ x: String, _ y: String) -> (x: Double, y: Double)? {
        guard let xv = field(row, x)?.doubleValue, let yv = field(row, y)?.doubleValue, xv.isFinite, yv.isFinite else { return nil }
        return (xv, yv)
    }

    /// Points in order of x (stable: equal x keep the file's order).
    static func sortedPoints(_ p: [(x: Double, y: Double)]) -> [(x: Double, y: Double)] {
        p.enumerated().sorted { $0.element.x != $1.element.x ? $0.element.x < $1.element.x : $0.offset < $1.offset }.map(\.element)
    }

    /// One series per value of the group field ("r=16", also for group = "config.r"), in numeric order when every value is a
    /// number, else in order of first appearance. Rows without the field are skipped.
    static func grouped(_ rows: [JSONObject], file: String, x: String, y: String, group: String, prefix: String) -> [ChartSeries] {
        var order: [String] = []
        var numeric: [String: Double] = [:]
        var points: [String: [(x: Double, y: Double)]] = [:]
        for r in rows {
            guard let g = field(r, group), let key = groupKey(g) else { continue }
            if points[key] == nil { order.append(key); points[key] = []; numeric[key] = g.doubleValue }
            if let p = point(r, x, y) { points[key]!.append(p) }
        }
        if order.allSatisfy({ numeric[$0] != nil }) { order.sort { numeric[$0]! < numeric[$1]! } }
        // "config.r" is shown as "r=4"
        let shown = group.split(separator: ".").last.map(String.init) ?? group
        return order.map { ChartSeries(name: "\(prefix)\(shown)=\($0)", points: sortedPoints(points[$0] ?? [])) }
    }

    static func groupKey(_ v: JSONValue) -> String? {
        switch v {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(format: "%g", d)
        case .bool(let b): return b ? "true" : "false"
        default: return nil
        }
    }

    /// A name per file: its base name without .jsonl / .json; when several files share one
    /// (runs/a/metrics.jsonl, runs/b/metrics.jsonl), the name of the directory holding each.
    static func seriesNames(_ files: [String]) -> [String] {
        func stem(_ f: String) -> String {
            var b = (f as NSString).lastPathComponent
            for ext in [".jsonl", ".json"] where b.hasSuffix(ext) { b = String(b.dropLast(ext.count)) }
            return b
        }
        let stems = files.map(stem)
        if Set(stems).count == stems.count { return stems }
        let dirs = files.map { (($0 as NSString).deletingLastPathComponent as NSString).lastPathComponent }
        if Set(dirs).count == dirs.count && !dirs.contains("") { return dirs }
        return files
    }
}
