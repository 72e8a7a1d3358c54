// The Jinja parser: tokens -> statements and expressions, with Jinja's operator precedence
// (conditional < or < and < not < comparisons < + - < ~ < * / // % < ** < unary < postfix,
// filters and tests). Nesting deeper than the limit is an error, not a stack overflow.

struct Parser {
    private var tokens: [Token]
    private var i = 0
    private var depth = 0
    private let maxDepth: Int

    init(_ tokens: [Token], maxDepth: Int) { self.tokens = tokens; self.maxDepth = maxDepth }

    // MARK: token helpers

    private var cur: Token { tokens[min(i, tokens.count - 1)] }
    private var curPos: SourcePos { cur.pos }
    private func peek(_ n: Int = 1) -> Token { tokens[min(i + n, tokens.count - 1)] }
    private mutating func advance() { if i < tokens.count - 1 { i += 1 } }

    private func fail(_ msg: String, _ p: SourcePos? = nil) -> JinjaError {
        let q = p ?? curPos
        return JinjaError(msg, line: q.line, column: q.column)
    }

    private func describe(_ t: Token) -> String {
        switch t.kind {
        case .text: return "text"
        case .varBegin: return "'{{'"
        case .varEnd: return "end of print statement ('}}')"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block ('%}')"
        case .name(let n): return "'\(n)'"
        case .string: return "a string"
        case .int, .float: return "a number"
        case .op(let o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }

    private func isOp(_ o: String) -> Bool { if case .op(o) = cur.kind { return true }; return false }
    private func isName(_ n: String) -> Bool { if case .name(n) = cur.kind { return true }; return false }

    private mutating func skipOp(_ o: String) -> Bool { if isOp(o) { advance(); return true }; return false }
    private mutating func skipName(_ n: String) -> Bool { if isName(n) { advance(); return true }; return false }

    private mutating func expectOp(_ o: String) throws {
        guard skipOp(o) else { throw fail("expected '\(o)', got \(describe(cur))") }
    }

    private mutating func expectBlockEnd() throws {
        guard case .blockEnd = cur.kind else { throw fail("expected end of statement block ('%}'), got \(describe(cur))") }
        advance()
    }

    private mutating func identifier(_ what: String) throws -> String {
        guard case .name(let n) = cur.kind else { throw fail("expected \(what), got \(describe(cur))") }
        advance()
        return n
    }

    private mutating func enter() throws {
        depth += 1
        if depth > maxDepth { throw fail("template nesting is deeper than \(maxDepth)") }
    }

    // MARK: statements

    mutating func parseTemplate() throws -> [Stmt] {
        let (body, _) = try parseStatements(until: [])
        return body
    }

    /// Statements up to a block tag whose name is in `ends` (consumed, with its name returned) or eof.
    private mutating func parseStatements(until ends: Set<String>, opener: (String, SourcePos)? = nil) throws -> ([Stmt], String?) {
        try enter(); defer { depth -= 1 }
        var out: [Stmt] = []
        while true {
            let t = cur
            switch t.kind {
            case .text(let s):
                out.append(Stmt(.text(s), t.pos)); advance()
            case .varBegin:
                advance()
                let e = try parseTuple()
                guard case .varEnd = cur.kind else { throw fail("expected end of print statement ('}}'), got \(describe(cur))") }
                advance()
                out.append(Stmt(.output(e), t.pos))
            case .blockBegin:
                advance()
                guard case .name(let n) = cur.kind else { throw fail("expected a statement name, got \(describe(cur))") }
                if ends.contains(n) { advance(); return (out, n) }
                out.append(try parseStatement(n, t.pos))
            case .eof:
                if let (what, p) = opener {
                    throw fail("unexpected end of template: '\(what)' opened at line \(p.line) is never closed (expected \(ends.sorted().map { "'\($0)'" }.joined(separator: " or ")))", t.pos)
                }
                return (out, nil)
            default:
                throw fail("unexpected \(describe(t))")
            }
        }
    }

    private mutating func parseStatement(_ name: String, _ pos: SourcePos) throws -> Stmt {
        advance()  // the statement name
        switch name {
        case "if": return try parseIf(pos)
        case "for": return try parseFor(pos)
        case "set": return try parseSet(pos)
        case "macro": return try parseMacro(pos)
        case "call": return try parseCall(pos)
        case "filter":
            let filters = try parseFilterChain()
            try expectBlockEnd()
            let (body, _) = try parseStatements(until: ["endfilter"], opener: ("filter", pos))
            try expectBlockEnd()
            return Stmt(.filterBlock(filters, body), pos)
        case "generation":
            try expectBlockEnd()
            let (body, _) = try parseStatements(until: ["endgeneration"], opener: ("generation", pos))
            try expectBlockEnd()
            return Stmt(.generation(body), pos)
        case "break": try expectBlockEnd(); return Stmt(.breakLoop, pos)
        case "continue": try expectBlockEnd(); return Stmt(.continueLoop, pos)
        default:
            throw fail("unknown or unsupported statement '\(name)'", pos)
        }
    }

    private mutating func parseIf(_ pos: SourcePos) throws -> Stmt {
        var branches: [(Expr, [Stmt])] = []
        var cond = try parseTuple()
        while true {
            try expectBlockEnd()
            let (body, end) = try parseStatements(until: ["elif", "else", "endif"], opener: ("if", pos))
            branches.append((cond, body))
            if end == "elif" { cond = try parseTuple(); continue }
            if end == "else" {
                try expectBlockEnd()
                let (elseBody, _) = try parseStatements(until: ["endif"], opener: ("if", pos))
                try expectBlockEnd()
                return Stmt(.ifChain(branches, elseBody), pos)
            }
            try expectBlockEnd()
            return Stmt(.ifChain(branches, nil), pos)
        }
    }

    private mutating func parseTarget() throws -> Target {
        let paren = skipOp("(")
        var names = [try identifier("a variable name")]
        if !paren, isOp(".") {
            advance()
            return .attribute(names[0], try identifier("an attribute name"))
        }
        var many = false
        while skipOp(",") {
            many = true
            if case .name(let n) = cur.kind, n != "in" { advance(); names.append(n) } else { break }
        }
        if paren { try expectOp(")") }
        return many || paren && names.count > 1 ? .names(names) : .name(names[0])
    }

    private mutating func parseFor(_ pos: SourcePos) throws -> Stmt {
        let target = try parseTarget()
        guard skipName("in") else { throw fail("expected 'in' in for loop, got \(describe(cur))") }
        let iter = try parseTuple(condexpr: false)
        var filter: Expr? = nil
        if skipName("if") { filter = try parseExpression() }
        let recursive = skipName("recursive")
        try expectBlockEnd()
        let (body, end) = try parseStatements(until: ["else", "endfor"], opener: ("for", pos))
        var orElse: [Stmt]? = nil
        if end == "else" {
            try expectBlockEnd()
            orElse = try parseStatements(until: ["endfor"], opener: ("for", pos)).0
        }
        try expectBlockEnd()
        return Stmt(.forLoop(target, iter, filter: filter, body: body, orElse: orElse, recursive: recursive), pos)
    }

    private mutating func parseSet(_ pos: SourcePos) throws -> Stmt {
        let target = try parseTarget()
        if skipOp("=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return Stmt(.set(target, value), pos)
        }
        var filters: [(String, Args, SourcePos)] = []
        if isOp("|") { advance(); filters = try parseFilterChain() }
        try expectBlockEnd()
        let (body, _) = try parseStatements(until: ["endset"], opener: ("set", pos))
        try expectBlockEnd()
        return Stmt(.setBlock(target, filters: filters, body: body), pos)
    }

    private mutating func parseParams() throws -> [(String, Expr?)] {
        var params: [(String, Expr?)] = []
        try expectOp("(")
        while !isOp(")") {
            if !params.isEmpty { try expectOp(","); if isOp(")") { break } }
            let n = try identifier("a parameter name")
            params.append((n, skipOp("=") ? try parseExpression() : nil))
        }
        advance()
        return params
    }

    private mutating func parseMacro(_ pos: SourcePos) throws -> Stmt {
        let name = try identifier("a macro name")
        let params = try parseParams()
        try expectBlockEnd()
        let (body, _) = try parseStatements(until: ["endmacro"], opener: ("macro", pos))
        if case .name = cur.kind { advance() }  // {% endmacro name %}
        try expectBlockEnd()
        return Stmt(.macro(MacroDef(name: name, params: params, body: body)), pos)
    }

    private mutating func parseCall(_ pos: SourcePos) throws -> Stmt {
        var callerParams: [(String, Expr?)] = []
        if isOp("(") { callerParams = try parseParams() }
        let call = try parseExpression()
        guard case .call = call.kind else { throw fail("expected a call in {% call %}", pos) }
        try expectBlockEnd()
        let (body, _) = try parseStatements(until: ["endcall"], opener: ("call", pos))
        try expectBlockEnd()
        return Stmt(.callBlock(call, callerParams: callerParams, body: body), pos)
    }

    private mutating func parseFilterChain() throws -> [(String, Args, SourcePos)] {
        var out: [(String, Args, SourcePos)] = []
        repeat {
            let p = curPos
            let name = try dottedName("a filter name")
            out.append((name, isOp("(") ? try parseArgs() : Args(), p))
        } while skipOp("|")
        return out
    }

    private mutating func dottedName(_ what: String) throws -> String {
        var n = try identifier(what)
        while isOp("."), case .name(let m) = peek().kind { advance(); advance(); n += "." + m }
        return n
    }

    // MARK: expressions

    /// An expression, or several separated by commas (a tuple), as in {{ a, b }} or for-loop heads.
    mutating func parseTuple(condexpr: Bool = true) throws -> Expr {
        let p = curPos
        let first = condexpr ? try parseExpression() : try parseOr()
        guard isOp(",") else { return first }
        var items = [first]
        while skipOp(",") {
            if case .blockEnd = cur.kind { break }
            if case .varEnd = cur.kind { break }
            if isOp(")") || isName("if") { break }
            items.append(condexpr ? try parseExpression() : try parseOr())
        }
        return Expr(.tuple(items), p)
    }

    mutating func parseExpression() throws -> Expr {
        try enter(); defer { depth -= 1 }
        var e = try parseOr()
        while isName("if") {
            let p = curPos
            advance()
            let cond = try parseOr()
            var other: Expr? = nil
            if skipName("else") { other = try parseExpression() }
            e = Expr(.conditional(cond, e, other), p)
        }
        return e
    }

    private mutating func parseOr() throws -> Expr {
        var e = try parseAnd()
        while isName("or") { let p = curPos; advance(); e = Expr(.or(e, try parseAnd()), p) }
        return e
    }

    private mutating func parseAnd() throws -> Expr {
        var e = try parseNot()
        while isName("and") { let p = curPos; advance(); e = Expr(.and(e, try parseNot()), p) }
        return e
    }

    private mutating func parseNot() throws -> Expr {
        if isName("not") {
            let p = curPos
            advance()
            try enter(); defer { depth -= 1 }
            return Expr(.not(try parseNot()), p)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expr {
        let p = curPos
        let first = try parseMath1()
        var ops: [(String, Expr)] = []
        while true {
            if case .op(let o) = cur.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                advance(); ops.append((o, try parseMath1()))
            } else if isName("in") {
                advance(); ops.append(("in", try parseMath1()))
            } else if isName("not"), case .name("in") = peek().kind {
                advance(); advance(); ops.append(("not in", try parseMath1()))
            } else { break }
        }
        return ops.isEmpty ? first : Expr(.compare(first, ops), p)
    }

    private mutating func parseMath1() throws -> Expr {
        var e = try parseConcat()
        while case .op(let o) = cur.kind, o == "+" || o == "-" {
            let p = curPos; advance(); e = Expr(.binary(o, e, try parseConcat()), p)
        }
        return e
    }

    private mutating func parseConcat() throws -> Expr {
        var e = try parseMath2()
        while isOp("~") { let p = curPos; advance(); e = Expr(.binary("~", e, try parseMath2()), p) }
        return e
    }

    private mutating func parseMath2() throws -> Expr {
        var e = try parsePow()
        while case .op(let o) = cur.kind, ["*", "/", "//", "%"].contains(o) {
            let p = curPos; advance(); e = Expr(.binary(o, e, try parsePow()), p)
        }
        return e
    }

    private mutating func parsePow() throws -> Expr {
        var e = try parseUnary()
        while isOp("**") { let p = curPos; advance(); e = Expr(.binary("**", e, try parseUnary()), p) }
        return e
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> Expr {
        try enter(); defer { depth -= 1 }
        let p = curPos
        var e: Expr
        if isOp("-") { advance(); e = Expr(.negate(try parseUnary(withFilter: false)), p) }
        else if isOp("+") { advance(); e = Expr(.plus(try parseUnary(withFilter: false)), p) }
        else { e = try parsePrimary() }
        e = try parsePostfix(e)
        if withFilter { e = try parseFilterExpr(e) }
        return e
    }

    private mutating func parsePrimary() throws -> Expr {
        let t = cur
        switch t.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return Expr(.literal(.bool(true)), t.pos)
            case "false", "False": return Expr(.literal(.bool(false)), t.pos)
            case "none", "None": return Expr(.literal(.none), t.pos)
            default: return Expr(.name(n), t.pos)
            }
        case .string(var s):
            advance()
            while case .string(let more) = cur.kind { s += more; advance() }
            return Expr(.literal(.string(s)), t.pos)
        case .int(let n): advance(); return Expr(.literal(.int(n)), t.pos)
        case .float(let d): advance(); return Expr(.literal(.double(d)), t.pos)
        case .op("("):
            advance()
            if skipOp(")") { return Expr(.tuple([]), t.pos) }
            let first = try parseExpression()
            if skipOp(")") { return first }
            var items = [first]
            while skipOp(",") {
                if isOp(")") { break }
                items.append(try parseExpression())
            }
            try expectOp(")")
            return Expr(.tuple(items), t.pos)
        case .op("["):
            advance()
            var items: [Expr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(","); if isOp("]") { break } }
                items.append(try parseExpression())
            }
            advance()
            return Expr(.list(items), t.pos)
        case .op("{"):
            advance()
            var pairs: [(Expr, Expr)] = []
            while !isOp("}") {
                if !pairs.isEmpty { try expectOp(","); if isOp("}") { break } }
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
            }
            advance()
            return Expr(.dict(pairs), t.pos)
        default:
            throw fail("unexpected \(describe(t))")
        }
    }

    private mutating func parsePostfix(_ start: Expr) throws -> Expr {
        var e = start
        while true {
            let p = curPos
            if isOp(".") {
                advance()
                switch cur.kind {
                case .name(let n): advance(); e = Expr(.attribute(e, n), p)
                case .int(let n): advance(); e = Expr(.item(e, Expr(.literal(.int(n)), p)), p)
                default: throw fail("expected an attribute name after '.', got \(describe(cur))")
                }
            } else if isOp("[") {
                advance()
                e = try parseSubscript(e, p)
            } else if isOp("(") {
                e = Expr(.call(e, try parseArgs()), p)
            } else {
                return e
            }
        }
    }

    private mutating func parseSubscript(_ target: Expr, _ p: SourcePos) throws -> Expr {
        var parts: [Expr?] = [nil]
        var isSlice = false
        while !isOp("]") {
            if skipOp(":") {
                isSlice = true
                parts.append(nil)
                if parts.count > 3 { throw fail("too many ':' in a slice") }
                continue
            }
            guard parts[parts.count - 1] == nil else { throw fail("expected ']' or ':', got \(describe(cur))") }
            parts[parts.count - 1] = try parseExpression()
        }
        advance()
        if !isSlice {
            guard let index = parts[0] else { throw fail("empty subscript", p) }
            return Expr(.item(target, index), p)
        }
        while parts.count < 3 { parts.append(nil) }
        return Expr(.slice(target, parts[0], parts[1], parts[2]), p)
    }

    private mutating func parseArgs() throws -> Args {
        try expectOp("(")
        var args = Args()
        while !isOp(")") {
            if !(args.positional.isEmpty && args.keywords.isEmpty) { try expectOp(","); if isOp(")") { break } }
            if case .name(let n) = cur.kind, case .op("=") = peek().kind {
                advance(); advance()
                args.keywords.append((n, try parseExpression()))
            } else {
                guard args.keywords.isEmpty else { throw fail("positional argument after keyword argument") }
                args.positional.append(try parseExpression())
            }
        }
        advance()
        return args
    }

    private mutating func parseFilterExpr(_ start: Expr) throws -> Expr {
        var e = start
        while true {
            let p = curPos
            if isOp("|") {
                advance()
                let name = try dottedName("a filter name")
                e = Expr(.filter(e, name, isOp("(") ? try parseArgs() : Args()), p)
            } else if isName("is") {
                advance()
                let negated = skipName("not")
                let name = try dottedName("a test name")
                var args = Args()
                if isOp("(") {
                    args = try parseArgs()
                } else {
                    var startsArg = false
                    switch cur.kind {
                    case .name(let n): startsArg = !["else", "or", "and", "if", "is", "in", "not"].contains(n)
                    case .string, .int, .float, .op("["), .op("{"): startsArg = true
                    default: break
                    }
                    if startsArg {
                        // `is divisibleby 3`, `is sameas false`: one argument without parentheses
                        args.positional = [try parsePostfix(try parsePrimary())]
                    }
                }
                e = Expr(.test(e, name, args, negated: negated), p)
            } else if isOp("(") {
                e = Expr(.call(e, try parseArgs()), p)
            } else {
                return e
            }
        }
    }
}
