// The public face of the Jinja interpreter: Template(source) parses once (a syntax error names
// its line and column); render(context) runs it with the variables a chat template reads
// (messages, add_generation_prompt, bos_token, tools, ...) and returns the text, and the
// output ranges of {% generation %} blocks when asked. strftime_now() reads the clock given to
// render, else QLORA_CHAT_DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC) when set, else now.

import Foundation

public final class Template {
    public let source: String
    public let limits: JinjaLimits
    let body: [Stmt]

    public init(_ source: String, limits: JinjaLimits = JinjaLimits()) throws {
        guard source.utf8.count <= limits.maxSource else {
            throw JinjaError("template is larger than \(limits.maxSource) bytes")
        }
        self.source = source
        self.limits = limits
        let tokens = try Lexer(source).tokenize()
        var p = Parser(tokens, maxDepth: limits.maxDepth)
        body = try p.parseTemplate()
    }

    /// True when the template marks assistant text with {% generation %} blocks.
    public var hasGenerationBlocks: Bool {
        func scan(_ s: [Stmt]) -> Bool {
            s.contains { st in
                switch st.kind {
                case .generation: return true
                case .ifChain(let b, let e): return b.contains { scan($0.1) } || scan(e ?? [])
                case .forLoop(_, _, _, let body, let orElse, _): return scan(body) || scan(orElse ?? [])
                case .setBlock(_, _, let body), .callBlock(_, _, let body), .filterBlock(_, let body): return scan(body)
                case .macro(let m): return scan(m.body)
                default: return false
                }
            }
        }
        return scan(body)
    }

    public func render(_ context: [String: Value], now: Date? = nil) throws -> String {
        try renderTracked(context, now: now).text
    }

    /// The text and the ranges of it each {% generation %} block wrote (in String indices).
    public func renderTracked(_ context: [String: Value], now: Date? = nil) throws -> (text: String, generation: [Range<String.Index>]) {
        let interp = Interpreter(limits: limits, now: now ?? Template.defaultNow())
        let root = Frame(parent: nil)
        root.vars = context
        _ = try interp.execute(body, root)
        let text = String(interp.out)
        let scalars = text.unicodeScalars
        let ranges = interp.generationRanges.map { r -> Range<String.Index> in
            let lo = scalars.index(scalars.startIndex, offsetBy: r.lowerBound)
            let hi = scalars.index(scalars.startIndex, offsetBy: r.upperBound)
            return lo..<hi
        }
        return (text, ranges)
    }

    static func defaultNow() -> Date {
        if let s = ProcessInfo.processInfo.environment["QLORA_CHAT_DATE"], let d = parseDate(s) { return d }
        return Date()
    }

    /// "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS", read as UTC.
    public static func parseDate(_ s: String) -> Date? {
        let parts = s.split(whereSeparator: { "-T: ".contains($0) }).map { Int($0) }
        guard parts.count == 3 || parts.count == 6, parts.allSatisfy({ $0 != nil }) else { return nil }
        var c = DateComponents()
        c.year = parts[0]; c.month = parts[1]; c.day = parts[2]
        if parts.count == 6 { c.hour = parts[3]; c.minute = parts[4]; c.second = parts[5] }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC") ?? cal.timeZone
        return cal.date(from: c)
    }
}
