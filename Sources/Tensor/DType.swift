// Element types a tensor can hold, their sizes and the promotion rules of mixed arithmetic.

public enum DType: String, CaseIterable, Sendable {
    case f32, bf16, f16, i32, i64, u8

    public var byteSize: Int {
        switch self {
        case .f32, .i32: return 4
        case .bf16, .f16: return 2
        case .i64: return 8
        case .u8: return 1
        }
    }

    public var isFloat: Bool { self == .f32 || self == .bf16 || self == .f16 }

    public var name: String { rawValue }

    public static func parse(_ name: String) -> DType? { DType(rawValue: name.lowercased()) }

    /// The result type of a binary op on a and b. Floats win over integers; two different float
    /// types meet at f32; integers widen (u8 < i32 < i64).
    public static func promote(_ a: DType, _ b: DType) -> DType {
        if a == b { return a }
        switch (a.isFloat, b.isFloat) {
        case (true, false): return a
        case (false, true): return b
        case (true, true): return .f32
        case (false, false):
            if a == .i64 || b == .i64 { return .i64 }
            return .i32
        }
    }
}
