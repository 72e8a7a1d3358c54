// The Jinja lexer: template source -> tokens. Text between tags becomes text tokens after the
// whitespace rules are applied as transformers configures Jinja (trim_blocks: the first newline
// after a block or comment tag is dropped; lstrip_blocks: spaces and tabs before a block or
// comment tag at the start of a line are dropped; "-" beside a tag delimiter strips all
// whitespace on that side, "+" turns the trim/lstrip rule off). Newlines are normalized to "\n"
// and one trailing newline of the source is dropped (keep_trailing_newline off). Inside tags:
// names, numbers, string literals (Python escapes) and operators.

enum TokenKind: Equatable {
    case text(String)
    case varBegin, varEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case int(Int)
    case float(Double)
    case op(String)
    case eof
}

struct Token {
    var kind: TokenKind
    var pos: SourcePos
}

struct Lexer {
    private var src: [Unicode.Scalar]
    private var lineStarts: [Int] = [0]
    var trimBlocks = true
    var lstripBlocks = true

    init(_ source: String) {
        var s: [Unicode.Scalar] = []
        s.reserveCapacity(source.unicodeScalars.count)
        var it = source.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        while let c = pending ?? it.next() {
            pending = nil
            if c == "\r" {
                s.append("\n")
                if let n = it.next(), n != "\n" { pending = n }
            } else {
                s.append(c)
            }
        }
        if s.last == "\n" { s.removeLast() }
        src = s
        for (i, c) in src.enumerated() where c == "\n" { lineStarts.append(i + 1) }
    }

    func pos(_ i: Int) -> SourcePos {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return SourcePos(line: lo + 1, column: i - lineStarts[lo] + 1)
    }

    private enum TagKind { case variable, block, comment }

    private struct Piece {
        var text: String? = nil          // a text piece
        var kind: TagKind = .block       // else a tag
        var leftStrip = false, leftPlus = false, rightStrip = false, rightPlus = false
        var tokens: [Token] = []
        var pos = SourcePos(line: 1, column: 1)
    }

    private func at(_ i: Int, _ s: String) -> Bool {
        var k = i
        for c in s.unicodeScalars {
            guard k < src.count, src[k] == c else { return false }
            k += 1
        }
        return true
    }

    private func string(_ r: Range<Int>) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: src[r])
        return String(s)
    }

    /// The index of the next "{{", "{%" or "{#" at or after i, or src.count.
    private func nextTag(_ i: Int) -> Int {
        var k = i
        while k + 1 < src.count {
            if src[k] == "{", src[k + 1] == "{" || src[k + 1] == "%" || src[k + 1] == "#" { return k }
            k += 1
        }
        return src.count
    }

    func tokenize() throws -> [Token] {
        var pieces: [Piece] = []
        var i = 0
        while i < src.count {
            let j = nextTag(i)
            pieces.append(Piece(text: string(i..<j), pos: pos(i)))
            if j >= src.count { break }
            var p = Piece(pos: pos(j))
            let c = src[j + 1]
            p.kind = c == "{" ? .variable : c == "%" ? .block : .comment
            var k = j + 2
            if k < src.count, src[k] == "-" { p.leftStrip = true; k += 1 }
            else if k < src.count, src[k] == "+", p.kind != .variable { p.leftPlus = true; k += 1 }
            if p.kind == .comment {
                var e = k
                while e + 1 < src.count, !(src[e] == "#" && src[e + 1] == "}") { e += 1 }
                guard e + 1 < src.count else { throw JinjaError("unterminated comment", line: p.pos.line, column: p.pos.column) }
                if e > k, src[e - 1] == "-" { p.rightStrip = true }
                i = e + 2
                pieces.append(p)
                continue
            }
            k = try lexTag(&p, from: k)
            // {% raw %} ... {% endraw %}: the text between is output as it stands.
            if p.kind == .block, p.tokens.count == 1, p.tokens[0].kind == .name("raw") {
                p.tokens = []
                pieces.append(p)
                var e = k
                var found = false
                while e < src.count {
                    let t = nextTag(e)
                    guard t < src.count else { break }
                    if src[t + 1] == "%" {
                        var q = Piece(pos: pos(t))
                        var m = t + 2
                        if m < src.count, src[m] == "-" { q.leftStrip = true; m += 1 }
                        else if m < src.count, src[m] == "+" { q.leftPlus = true; m += 1 }
                        while m < src.count, src[m] == " " || src[m] == "\t" || src[m] == "\n" { m += 1 }
                        if at(m, "endraw") {
                            let end = try lexTag(&q, from: m)
                            q.tokens = []
                            pieces.append(Piece(text: string(k..<t), pos: pos(k)))
                            pieces.append(q)
                            i = end
                            found = true
                            break
                        }
                    }
                    e = t + 2
                }
                guard found else { throw JinjaError("missing {% endraw %}", line: p.pos.line, column: p.pos.column) }
                continue
            }
            pieces.append(p)
            i = k
        }
        return emit(applyWhitespace(pieces))
    }

    /// Lexes the inside of a {{ }} or {% %} tag from k; returns the index after its end delimiter.
    private func lexTag(_ p: inout Piece, from start: Int) throws -> Int {
        var k = start
        var brackets: [Unicode.Scalar] = []
        let close: Unicode.Scalar = p.kind == .variable ? "}" : "%"
        while true {
            while k < src.count, src[k].properties.isWhitespace { k += 1 }
            guard k < src.count else {
                throw JinjaError("unexpected end of template inside a tag (missing \(p.kind == .variable ? "}}" : "%}"))",
                                 line: p.pos.line, column: p.pos.column)
            }
            if brackets.isEmpty {
                if src[k] == "-", at(k + 1, String(close) + "}") { p.rightStrip = true; return k + 3 }
                if src[k] == "+", p.kind == .block, at(k + 1, "%}") { p.rightPlus = true; return k + 3 }
                if src[k] == close, at(k + 1, "}") { return k + 2 }
            }
            let tpos = pos(k)
            let c = src[k]
            if c == "_" || c.properties.isAlphabetic {
                var e = k + 1
                while e < src.count, src[e] == "_" || src[e].properties.isAlphabetic || ("0"..."9").contains(src[e]) { e += 1 }
                p.tokens.append(Token(kind: .name(string(k..<e)), pos: tpos))
                k = e
            } else if ("0"..."9").contains(c) {
                k = try lexNumber(&p, k, tpos)
            } else if c == "'" || c == "\"" {
                k = try lexString(&p, k, tpos)
            } else {
                let two = k + 1 < src.count ? string(k..<k + 2) : ""
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    p.tokens.append(Token(kind: .op(two), pos: tpos))
                    k += 2
                } else if "+-/*%~[](){}<>=.:|,;".unicodeScalars.contains(c) {
                    if c == "(" || c == "[" || c == "{" { brackets.append(c) }
                    if c == ")" || c == "]" || c == "}" {
                        let want: Unicode.Scalar = c == ")" ? "(" : c == "]" ? "[" : "{"
                        guard brackets.last == want else {
                            throw JinjaError("unexpected '\(c)'", line: tpos.line, column: tpos.column)
                        }
                        brackets.removeLast()
                    }
                    p.tokens.append(Token(kind: .op(String(c)), pos: tpos))
                    k += 1
                } else {
                    throw JinjaError("unexpected character '\(c)'", line: tpos.line, column: tpos.column)
                }
            }
        }
    }

    private func lexNumber(_ p: inout Piece, _ start: Int, _ tpos: SourcePos) throws -> Int {
        var e = start
        var text = ""
        var isFloat = false
        func digits() {
            while e < src.count, ("0"..."9").contains(src[e]) || (src[e] == "_" && e + 1 < src.count && ("0"..."9").contains(src[e + 1])) {
                if src[e] != "_" { text.unicodeScalars.append(src[e]) }
                e += 1
            }
        }
        digits()
        if e + 1 < src.count, src[e] == ".", ("0"..."9").contains(src[e + 1]) {
            isFloat = true
            text += "."; e += 1
            digits()
        }
        if e < src.count, src[e] == "e" || src[e] == "E" {
            var m = e + 1
            var exp = "e"
            if m < src.count, src[m] == "+" || src[m] == "-" { exp.unicodeScalars.append(src[m]); m += 1 }
            if m < src.count, ("0"..."9").contains(src[m]) {
                isFloat = true
                text += exp; e = m
                digits()
            }
        }
        if isFloat {
            guard let d = Double(text) else { throw JinjaError("bad number \(text)", line: tpos.line, column: tpos.column) }
            p.tokens.append(Token(kind: .float(d), pos: tpos))
        } else {
            guard let n = Int(text) else { throw JinjaError("integer \(text) is too large", line: tpos.line, column: tpos.column) }
            p.tokens.append(Token(kind: .int(n), pos: tpos))
        }
        return e
    }

    private func lexString(_ p: inout Piece, _ start: Int, _ tpos: SourcePos) throws -> Int {
        let quote = src[start]
        var e = start + 1
        var out = String.UnicodeScalarView()
        func hex(_ n: Int) -> Unicode.Scalar? {
            guard e + n < src.count else { return nil }
            var v: UInt32 = 0
            for d in src[(e + 1)...(e + n)] {
                guard let h = d.properties.numericType != nil ? UInt32(String(d), radix: 16) : UInt32(String(d), radix: 16) else { return nil }
                v = v * 16 + h
            }
            return Unicode.Scalar(v)
        }
        while true {
            guard e < src.count else { throw JinjaError("unterminated string", line: tpos.line, column: tpos.column) }
            let c = src[e]
            if c == quote { e += 1; break }
            if c == "\\", e + 1 < src.count {
                let n = src[e + 1]
                switch n {
                case "\\": out.append("\\")
                case "'": out.append("'")
                case "\"": out.append("\"")
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "v": out.append("\u{0B}")
                case "\n": break
                case "x", "u", "U":
                    let len = n == "x" ? 2 : n == "u" ? 4 : 8
                    e += 1
                    guard let s = hex(len) else {
                        throw JinjaError("bad \\\(n) escape in string", line: tpos.line, column: tpos.column)
                    }
                    out.append(s)
                    e += len + 1
                    continue
                case "0"..."7":
                    var v: UInt32 = 0
                    var m = e + 1
                    while m < src.count, m < e + 4, ("0"..."7").contains(src[m]) {
                        v = v * 8 + (src[m].value - 48); m += 1
                    }
                    out.append(Unicode.Scalar(v) ?? "?")
                    e = m
                    continue
                default:
                    out.append("\\"); out.append(n)
                }
                e += 2
                continue
            }
            out.append(c)
            e += 1
        }
        p.tokens.append(Token(kind: .string(String(out)), pos: tpos))
        return e
    }

    private static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    /// Applies "-", "+", trim_blocks and lstrip_blocks to the text pieces beside each tag.
    private func applyWhitespace(_ input: [Piece]) -> [Piece] {
        // Make text and tags alternate: text, tag, text, tag, ..., text.
        var pieces: [Piece] = []
        for p in input {
            if p.text == nil, pieces.last?.text == nil { pieces.append(Piece(text: "", pos: p.pos)) }
            pieces.append(p)
        }
        if pieces.last?.text == nil { pieces.append(Piece(text: "", pos: pieces.last?.pos ?? SourcePos(line: 1, column: 1))) }
        for k in pieces.indices {
            guard var text = pieces[k].text else { continue }
            var scalars = Array(text.unicodeScalars)
            var lineStarting = true
            if k > 0 {
                let prev = pieces[k - 1]
                if prev.rightStrip {
                    var n = 0
                    while n < scalars.count, Lexer.isSpace(scalars[n]) { n += 1 }
                    lineStarting = n > 0 && scalars[n - 1] == "\n"
                    scalars.removeFirst(n)
                } else if prev.kind != .variable, trimBlocks, !prev.rightPlus {
                    lineStarting = scalars.first == "\n"
                    if lineStarting { scalars.removeFirst() }
                } else {
                    lineStarting = false
                }
            }
            if k + 1 < pieces.count {
                let next = pieces[k + 1]
                if next.leftStrip {
                    while let l = scalars.last, Lexer.isSpace(l) { scalars.removeLast() }
                } else if next.kind != .variable, lstripBlocks, !next.leftPlus {
                    let lpos = (scalars.lastIndex(of: "\n") ?? -1) + 1
                    if lpos > 0 || lineStarting,
                       scalars[lpos...].allSatisfy({ $0 == " " || $0 == "\t" }) {
                        scalars.removeSubrange(lpos...)
                    }
                }
            }
            var v = String.UnicodeScalarView()
            v.append(contentsOf: scalars)
            text = String(v)
            pieces[k].text = text
        }
        return pieces
    }

    private func emit(_ pieces: [Piece]) -> [Token] {
        var out: [Token] = []
        for p in pieces {
            if let t = p.text {
                if !t.isEmpty { out.append(Token(kind: .text(t), pos: p.pos)) }
                continue
            }
            switch p.kind {
            case .comment: break
            case .variable:
                out.append(Token(kind: .varBegin, pos: p.pos))
                out.append(contentsOf: p.tokens)
                out.append(Token(kind: .varEnd, pos: p.pos))
            case .block:
                if p.tokens.isEmpty { continue }  // the {% raw %} / {% endraw %} markers
                out.append(Token(kind: .blockBegin, pos: p.pos))
                out.append(contentsOf: p.tokens)
                out.append(Token(kind: .blockEnd, pos: p.pos))
            }
        }
        out.append(Token(kind: .eof, pos: pos(src.count)))
        return out
    }
}
