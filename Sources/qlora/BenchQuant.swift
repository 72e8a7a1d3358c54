// `qlora bench quant [--json]`: the fused 4-bit matmul (NF4 + double quantization) against
// OpenBLAS on the dense f32 weight of the same shape, timed in the same run: sgemm for M > 1,
// sgemv for M = 1; ratio = ours / reference. Also quantize and dequantize throughput (GB/s of
// f32 on the dense side).
//
// M = 1 (one token of decoding) is timed twice: warm, the same weight again and again (a 2048 x
// 2048 f32 weight, 16 MB, then stays in the 32 MB L3), and cold, with the caches swept before
// each run, which is what decoding sees: by the time a layer runs again every other layer's
// weights have passed through the caches.

import CKernels
import COpenBLAS
import Foundation
import Quant
import Tensor

extension Bench {
    /// Sweeps 96 MB (three times this CPU's L3) so no earlier data stays cached.
    nonisolated(unsafe) static var sweep = [UInt8](repeating: 1, count: 96 << 20)

    static func evictCaches() {
        sweep.withUnsafeMutableBytes { b in
            guard let p = b.baseAddress else { return }
            memset(p, Int32(b[0] &+ 1), b.count)
        }
    }

    static func quantSuite(json: Bool) throws {
        if !json { print("# qlora bench quant: isa \(Runtime.isaName), \(Runtime.threads) threads") }
        let opts = try QuantOptions(type: .nf4, block: 64, doubleQuant: true)
        for nk in [2048, 4096] {
            let w = try Tensor.randn([nk, nk], seed: 7, std: 0.02)
            let qw = try QuantizedTensor.quantize(w, opts)
            for (m, cold) in [(1, false), (1, true), (16, false), (256, false), (1024, false)] {
                let x = try Tensor.randn([m, nk], seed: 8)
                let y = try Tensor(shape: [m, nk], dtype: .f32)
                let reps = m >= 256 ? 5 : 21
                let before: () -> Void = cold ? { evictCaches() } : {}
                let tRef = Runtime.withOpenBLASThreads { median(reps, before: before) {
                    if m == 1 {
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(nk), Int32(nk), 1, w.f32, Int32(nk), x.f32, 1, 0, y.f32, 1)
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(nk), Int32(nk), 1,
                                    x.f32, Int32(nk), w.f32, Int32(nk), 0, y.f32, Int32(nk))
                    }
                } }
                for compute in ComputeType.kernelModes {
                    let tOurs = try qw.withWeight { wp in
                        median(reps, before: before) {
                            if compute == .bf16 { ql_matmul4_bf16(wp, x.f32, Int64(m), nil, y.f32) } else { ql_matmul4_f32(wp, x.f32, Int64(m), nil, y.f32) }
                        }
                    }
                    var fields: [(String, Any)] = [("op", "matmul4"), ("quant", "nf4"), ("compute", compute.rawValue), ("M", m), ("N", nk), ("K", nk)]
                    if m == 1 { fields.append(("cache", cold ? "cold" : "warm")) }
                    emit(json, fields + [("ours_ms", tOurs * 1e3), ("ref_ms", tRef * 1e3), ("ratio", tOurs / tRef)])
                }
            }
        }
        let n = 16 << 20
        let x = try Tensor.randn([n], seed: 9)
        let packed = try Tensor(shape: [n / 2], dtype: .u8, zeroed: true)
        let absmax = try Tensor(shape: [n / 64], dtype: .f32, zeroed: true)
        let out = try Tensor(shape: [n], dtype: .f32, zeroed: true)
        let pp = packed.raw.assumingMemoryBound(to: UInt8.self)
        let tq = median(5) { ql_quantize_4bit(QuantType.nf4.kernelCode, x.f32, Int64(n), 64, pp, absmax.f32) }
        let td = median(5) { ql_dequantize_4bit(QuantType.nf4.kernelCode, pp, absmax.f32, Int64(n), 64, out.f32) }
        emit(json, [("op", "quantize"), ("quant", "nf4"), ("n", n), ("gbps", Double(4 * n) / tq * 1e-9)])
        emit(json, [("op", "dequantize"), ("quant", "nf4"), ("n", n), ("gbps", Double(4 * n) / td * 1e-9)])
    }
}
