// Errors and limits of the Jinja interpreter. Every problem -- a syntax error, an undefined name
// used where a value is needed, raise_exception(), a limit reached -- is a JinjaError carrying the
// template line and column it happened at. Limits make an untrusted template end with an error
// instead of exhausting the stack, the memory or the time.

/// A template error: what went wrong and where (1-based line and column; 0 when unknown).
public struct JinjaError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var line: Int
    public var column: Int
    /// True when the template itself called raise_exception(message).
    public var raised: Bool

    public init(_ message: String, line: Int = 0, column: Int = 0, raised: Bool = false) {
        self.message = message; self.line = line; self.column = column; self.raised = raised
    }

    public var description: String {
        line > 0 ? "line \(line), column \(column): \(message)" : message
    }

    /// The same error placed at pos unless it already has a position.
    func at(_ pos: SourcePos) -> JinjaError {
        if line > 0 { return self }
        var e = self
        e.line = pos.line; e.column = pos.column
        return e
    }
}

/// A position in the template source (1-based).
public struct SourcePos: Equatable {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) { self.line = line; self.column = column }
}

/// Bounds on what one parse or render may use.
public struct JinjaLimits {
    /// Nesting of statements and expressions (parser) and of macro calls (renderer).
    public var maxDepth = 200
    /// Characters of output (and of any one string built while rendering).
    public var maxOutput = 16 << 20
    /// Evaluation steps (expressions evaluated plus loop iterations).
    public var maxSteps = 20_000_000
    /// Template source size in bytes.
    public var maxSource = 4 << 20
    public init() {}
}
