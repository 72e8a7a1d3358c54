// The syntax tree of a parsed template: statements (text, output, if, for, set, macro, call,
// filter and generation blocks, break/continue) and expressions. Every node keeps its source
// position so a runtime error can name the line and column.

final class Expr {
    let kind: ExprKind
    let pos: SourcePos
    init(_ kind: ExprKind, _ pos: SourcePos) { self.kind = kind; self.pos = pos }
}

struct Args {
    var positional: [Expr] = []
    var keywords: [(String, Expr)] = []
}

enum ExprKind {
    case literal(Value)
    case name(String)
    case list([Expr])
    case tuple([Expr])
    case dict([(Expr, Expr)])
    case attribute(Expr, String)
    case item(Expr, Expr)
    case slice(Expr, Expr?, Expr?, Expr?)
    case call(Expr, Args)
    case filter(Expr, String, Args)
    case test(Expr, String, Args, negated: Bool)
    case not(Expr)
    case negate(Expr)
    case plus(Expr)
    case binary(String, Expr, Expr)   // + - * / // % ** ~
    case and(Expr, Expr)
    case or(Expr, Expr)
    case compare(Expr, [(String, Expr)])  // == != < <= > >= in "not in"
    case conditional(Expr, Expr, Expr?)   // test, then, else
}

/// The left side of a set or for: one name, several names, or namespace.attribute.
enum Target {
    case name(String)
    case names([String])
    case attribute(String, String)
}

final class Stmt {
    let kind: StmtKind
    let pos: SourcePos
    init(_ kind: StmtKind, _ pos: SourcePos) { self.kind = kind; self.pos = pos }
}

struct MacroDef {
    var name: String
    var params: [(String, Expr?)]
    var body: [Stmt]
}

enum StmtKind {
    case text(String)
    case output(Expr)
    case ifChain([(Expr, [Stmt])], [Stmt]?)
    case forLoop(Target, Expr, filter: Expr?, body: [Stmt], orElse: [Stmt]?, recursive: Bool)
    case set(Target, Expr)
    case setBlock(Target, filters: [(String, Args, SourcePos)], body: [Stmt])
    case macro(MacroDef)
    case callBlock(Expr, callerParams: [(String, Expr?)], body: [Stmt])
    case filterBlock([(String, Args, SourcePos)], [Stmt])
    case generation([Stmt])
    case breakLoop
    case continueLoop
}
