// The `bnb_bf16` compute mode: bitsandbytes' CPU inference arithmetic, reproduced so that qlora's
// logits can be compared with logits bitsandbytes computed on a CPU with AVX512-BF16. There, the
// 4-bit product rounds the input to bf16, uses the code table and the per-block absmax rounded to
// bf16 (their product is not rounded again), accumulates in f32, and rounds the output to bf16
// before adding the bias in f32. Slower than the fused kernels (the weight is dequantized per
// call); meant for checking against bitsandbytes, not for training speed.

import Tensor

extension QuantLinear {
    /// W [out, in] in f32 as bitsandbytes' CPU kernel sees it: bf16(code[q]) * bf16(absmax[block]).
    func bnbCompatWeight() throws -> Tensor {
        let absmax = try weight.blockAbsmax().converted(to: .bf16).converted(to: .f32)
        let codeBF16 = try Tensor(weight.type.code, shape: [16]).converted(to: .bf16).converted(to: .f32)
        let w = try Tensor(shape: weight.shape, dtype: .f32, zeroed: false)
        let packed = weight.packed.raw.assumingMemoryBound(to: UInt8.self)
        let code = codeBF16.f32, scale = absmax.f32, out = w.f32
        let block = weight.block
        for i in 0..<weight.count {
            let byte = packed[i >> 1]
            let nibble = (i & 1) == 0 ? byte >> 4 : byte & 0x0F
            out[i] = code[Int(nibble)] * scale[i / block]
        }
        return w
    }

    /// Forward in the `bnb_bf16` mode; backward is the f32 product with the same weight.
    func forwardBnbCompat(_ x: Tensor, rows m: Int) throws -> Tensor {
        let n = outFeatures, k = inFeatures
        let w = try bnbCompatWeight()
        let xb = try x.asF32().converted(to: .bf16).converted(to: .f32)
        let product = try Tensor(shape: Array(x.shape.dropLast()) + [n], dtype: .f32, zeroed: false)
        try Tensor.gemm(false, true, xb, w, product, 1, m, n, k)
        let out = try product.converted(to: .bf16).converted(to: .f32)
        if let b = try bias?.asF32() {
            for r in 0..<m { for j in 0..<n { out.f32[r * n + j] += b.f32[j] } }
        }
        return recordLinear(out, input: x, rows: m, op: "quant_linear_bnb_bf16") { gf, dx in
            try Tensor.gemm(false, false, gf, w, dx, 1, m, k, n)
        }
    }
}
