// An SVG line chart: named series of (x, y) points drawn on linear (or log-y) axes with "nice"
// ticks (1, 2, 2.5, 5 x 10^k), readable tick numbers, axis labels, a title and a legend to the
// right of the plot. Pure text output; q.plot (LuaBridge/PlotBindings.swift) feeds it JSONL data.
// Elements carry classes (series, marker, legend, tick, x-label, y-label, title) so tests and
// tools can read the chart back.

import Foundation

public struct ChartSeries {
    public var name: String
    public var points: [(x: Double, y: Double)]
    public init(name: String, points: [(x: Double, y: Double)]) { self.name = name; self.points = points }
}

public struct LineChartOptions {
    public var title: String?
    public var xLabel = "x"
    public var yLabel = "y"
    public var logY = false
    public var width = 720
    public var height = 440
    public init() {}
}

public enum SVGLineChart {
    /// Distinct colours that stay apart for the first ten series (then repeat, dashed).
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                          "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]

    static let gridColor = "#e6e6e6", tickColor = "#333333", frameColor = "#555555", textColor = "#111111"

    /// The chart as SVG text. Series must hold finite points (and y > 0 with logY); empty series
    /// are left out. Throws a message (no file name) when nothing can be drawn.
    public static func render(_ allSeries: [ChartSeries], _ o: LineChartOptions) throws -> String {
        let series = allSeries.filter { !$0.points.isEmpty }
        guard !series.isEmpty else { throw ChartError("no points to draw") }
        let xs = series.flatMap { $0.points.map(\.x) }, ys = series.flatMap { $0.points.map(\.y) }
        if o.logY, let bad = ys.first(where: { $0 <= 0 }) {
            throw ChartError("log_y needs y > 0, got \(formatNumber(bad, step: 0))")
        }
        let xAxis = Axis.linear(xs.min()!, xs.max()!)
        let yAxis = o.logY ? Axis.log(ys.min()!, ys.max()!) : Axis.linear(ys.min()!, ys.max()!)

        // Layout: the legend takes the right margin, sized to the longest name.
        let longest = series.map { $0.name.count }.max() ?? 0
        let legendWidth = min(Double(max(longest, 4)) * 7.2 + 40, Double(o.width) * 0.4)
        let left = 72.0, right = legendWidth + 16, top = o.title == nil ? 20.0 : 44.0, bottom = 56.0
        let pw = Double(o.width) - left - right, ph = Double(o.height) - top - bottom
        guard pw > 40, ph > 40 else { throw ChartError("width and height are too small for a chart") }
        func px(_ x: Double) -> Double { left + xAxis.fraction(x) * pw }
        func py(_ y: Double) -> Double { top + (1 - yAxis.fraction(y)) * ph }

        var s = ""
        func line(_ text: String) { s += text + "\n" }
        line(#"<svg xmlns="http://www.w3.org/2000/svg" width="\#(o.width)" height="\#(o.height)" viewBox="0 0 \#(o.width) \#(o.height)" font-family="Helvetica, Arial, sans-serif" font-size="12">"#)
        line(#"<rect width="100%" height="100%" fill="white"/>"#)
        if let t = o.title {
            line(#"<text class="title" x="\#(f(left + pw / 2))" y="26" text-anchor="middle" font-size="15" font-weight="bold">\#(escape(t))</text>"#)
        }
        // Grid lines and tick labels.
        for v in xAxis.ticks {
            let x = px(v)
            line(#"<line x1="\#(f(x))" y1="\#(f(top))" x2="\#(f(x))" y2="\#(f(top + ph))" stroke="\#(gridColor)"/>"#)
            line(#"<text class="tick x-tick" x="\#(f(x))" y="\#(f(top + ph + 17))" text-anchor="middle" fill="\#(tickColor)">\#(escape(xAxis.label(v)))</text>"#)
        }
        for v in yAxis.ticks {
            let y = py(v)
            line(#"<line x1="\#(f(left))" y1="\#(f(y))" x2="\#(f(left + pw))" y2="\#(f(y))" stroke="\#(gridColor)"/>"#)
            line(#"<text class="tick y-tick" x="\#(f(left - 7))" y="\#(f(y + 4))" text-anchor="end" fill="\#(tickColor)">\#(escape(yAxis.label(v)))</text>"#)
        }
        line(#"<rect x="\#(f(left))" y="\#(f(top))" width="\#(f(pw))" height="\#(f(ph))" fill="none" stroke="\#(frameColor)"/>"#)
        line(#"<text class="x-label" x="\#(f(left + pw / 2))" y="\#(f(Double(o.height) - 14))" text-anchor="middle" fill="\#(textColor)">\#(escape(o.xLabel))</text>"#)
        let ly = top + ph / 2
        line(#"<text class="y-label" x="18" y="\#(f(ly))" text-anchor="middle" fill="\#(textColor)" transform="rotate(-90 18 \#(f(ly)))">\#(escape(o.yLabel))</text>"#)

        // Series, clipped to the plot area; markers when a series has few points.
        line(#"<defs><clipPath id="plot-area"><rect x="\#(f(left))" y="\#(f(top))" width="\#(f(pw))" height="\#(f(ph))"/></clipPath></defs>"#)
        line(#"<g clip-path="url(#plot-area)" fill="none" stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round">"#)
        for (i, ser) in series.enumerated() {
            let color = palette[i % palette.count]
            let dash = i >= palette.count ? #" stroke-dasharray="6 3""# : ""
            let d = ser.points.enumerated().map { j, p in "\(j == 0 ? "M" : "L")\(f(px(p.x))),\(f(py(p.y)))" }.joined(separator: " ")
            line(#"<path class="series" data-name="\#(escape(ser.name))" data-points="\#(ser.points.count)" d="\#(d)" stroke="\#(color)"\#(dash)/>"#)
            if ser.points.count <= 40 {
                for p in ser.points {
                    line(#"<circle class="marker" cx="\#(f(px(p.x)))" cy="\#(f(py(p.y)))" r="2.8" fill="\#(color)" stroke="none"/>"#)
                }
            }
        }
        line("</g>")

        // Legend: a swatch and the name per series, to the right of the plot.
        let lx = left + pw + 14
        for (i, ser) in series.enumerated() {
            let y = top + 8 + Double(i) * 18
            let color = palette[i % palette.count]
            let dash = i >= palette.count ? #" stroke-dasharray="6 3""# : ""
            line(#"<line x1="\#(f(lx))" y1="\#(f(y))" x2="\#(f(lx + 22))" y2="\#(f(y))" stroke="\#(color)" stroke-width="2.5"\#(dash)/>"#)
            line(#"<text class="legend" x="\#(f(lx + 28))" y="\#(f(y + 4))" fill="\#(textColor)">\#(escape(ser.name))</text>"#)
        }
        line("</svg>")
        return s
    }

    /// Coordinates with at most two decimals.
    static func f(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(format: "%.2f", r).replacingOccurrences(of: #"0$"#, with: "", options: .regularExpression)
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    /// A tick value as text: as many decimals as the tick step needs, thousands as k / M, and
    /// scientific notation for very large or very small magnitudes.
    public static func formatNumber(_ v: Double, step: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e9 || a < 1e-4 { return String(format: "%.3g", v).replacingOccurrences(of: "e-0", with: "e-").replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(of: "e+", with: "e") }
        let st = step > 0 ? step : a
        if a >= 1e4 && st >= 100 {
            let (div, unit) = a >= 1e6 ? (1e6, "M") : (1e3, "k")
            return trimmed(v / div, decimals: decimals(st / div)) + unit
        }
        return trimmed(v, decimals: decimals(st))
    }

    /// Decimals needed to show multiples of `step` exactly (up to 6).
    static func decimals(_ step: Double) -> Int {
        var d = 0
        var s = step
        while d < 6 && abs(s - s.rounded()) > 1e-6 * max(1, abs(s)) { s *= 10; d += 1 }
        return d
    }

    static func trimmed(_ v: Double, decimals d: Int) -> String {
        let s = String(format: "%.\(d)f", v)
        return s == "-0" ? "0" : s
    }
}

public struct ChartError: Error, CustomStringConvertible {
    public let description: String
    init(_ m: String) { description = m }
}

/// One axis: its drawn range, tick positions and how to place and label a value.
struct Axis {
    var lo: Double, hi: Double
    var ticks: [Double]
    var step: Double
    var isLog: Bool

    func fraction(_ v: Double) -> Double {
        if isLog { return (log10(v) - log10(lo)) / (log10(hi) - log10(lo)) }
        return (v - lo) / (hi - lo)
    }

    func label(_ v: Double) -> String { SVGLineChart.formatNumber(v, step: isLog ? v : step) }

    /// A linear axis covering [min, max], extended to whole ticks (about 5 to 8 of them).
    static func linear(_ minV: Double, _ maxV: Double) -> Axis {
        var a = minV, b = maxV
        if a == b {
            let pad = a == 0 ? 1 : abs(a) * 0.1
            a -= pad; b += pad
        }
        let step = niceStep((b - a) / 6)
        let lo = (a / step).rounded(.down) * step, hi = (b / step).rounded(.up) * step
        var ticks: [Double] = []
        var k = 0
        while true {
            let v = lo + Double(k) * step
            if v > hi + step * 1e-9 { break }
            ticks.append(abs(v) < step * 1e-9 ? 0 : v)
            k += 1
        }
        return Axis(lo: lo, hi: hi, ticks: ticks, step: step, isLog: false)
    }

    /// A log10 axis from the power of ten below min to the one above max; ticks at powers of
    /// ten, and at 2 and 5 times them when the range spans at most two decades.
    static func log(_ minV: Double, _ maxV: Double) -> Axis {
        var e0 = Foundation.floor(log10(minV)), e1 = Foundation.ceil(log10(maxV))
        if e1 <= e0 { e1 = e0 + 1 }
        if e1 - e0 > 40 { e0 = e1 - 40 }
        var ticks: [Double] = []
        let multiples: [Double] = e1 - e0 <= 2 ? [1, 2, 5] : [1]
        var e = e0
        while e <= e1 {
            for m in multiples {
                let v = m * Foundation.pow(10, e)
                if v <= Foundation.pow(10, e1) * (1 + 1e-9) { ticks.append(v) }
            }
            e += 1
        }
        return Axis(lo: Foundation.pow(10, e0), hi: Foundation.pow(10, e1), ticks: ticks, step: 0, isLog: true)
    }

    /// The step among 1, 2, 2.5, 5 x 10^k closest above `raw`.
    static func niceStep(_ raw: Double) -> Double {
        let p = Foundation.pow(10, Foundation.floor(log10(raw)))
        for m in [1.0, 2, 2.5, 5, 10] where m * p >= raw * (1 - 1e-9) { return m * p }
        return 10 * p
    }
}
