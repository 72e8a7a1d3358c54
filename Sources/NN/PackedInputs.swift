// Packed sequences (several examples in one row): RoPE tables gathered by per-token positions,
// and an attention mask that keeps each token inside its own example (segment) and causal.

import Tensor

enum PackedInputs {
    /// cos and sin [B, 1, T, D] for positions [B, T] (integers, 0-based).
    static func ropeTables(_ rope: RoPE, _ positions: Tensor, batch b: Int, length t: Int) throws -> (Tensor, Tensor) {
        if positions.dtype.isFloat || positions.shape != [b, t] {
            throw ModelError("position_ids must be an integer tensor of shape \(Shape.describe([b, t])), got \(positions.dtype.name) \(Shape.describe(positions.shape))")
        }
        var maxPos: Int64 = 0
        for i in 0..<positions.count {
            let p = positions.intValue(at: i)
            if p < 0 || p >= 1 << 24 { throw ModelError("position_ids must be in 0..<16777216, got \(p)") }
            maxPos = max(maxPos, p)
        }
        let (c, s) = try rope.tables(start: 0, count: Int(maxPos) + 1)
        let d = rope.headDim
        return (try c.indexSelect(0, positions).reshape([b, 1, t, d]), try s.indexSelect(0, positions).reshape([b, 1, t, d]))
    }

    /// Additive mask [B, 1, T, T]: 0 where key j is in query i's segment and j <= i, else -inf.
    /// Padding (segment 0) attends to itself only, so no row is all -inf.
    static func attentionMask(_ segments: Tensor, batch b: Int, length t: Int) throws -> Tensor {
        if segments.dtype.isFloat || segments.shape != [b, t] {
            throw ModelError("segment_ids must be an integer tensor of shape \(Shape.describe([b, t])), got \(segments.dtype.name) \(Shape.describe(segments.shape))")
        }
        let mask = try Tensor.full([b, 1, t, t], -Double.infinity)
        for r in 0..<b {
            for i in 0..<t {
                let si = segments.intValue(at: r * t + i)
                let row = (r * t + i) * t
                for j in 0...i where j == i || (si != 0 && segments.intValue(at: r * t + j) == si) {
                    mask.f32[row + j] = 0
                }
            }
        }
        return mask
    }
}
