// `qlora bench quant [--json]`: the fused 4-bit matmul (NF4 + double quantization) against
// OpenBLAS on the dense f32 weight of the same shape, timed in the same run: sgemm for M > 1,
// sgemv for M = 1; ratio = ours / reference. Also quantize and dequantize throughput (GB/s of
// f32 on the dense side).

import CKernels
import COpenBLAS
import Quant
import Tensor

extension Bench {
    static func quantSuite(json: Bool) throws {
        if !json { print("# qlora bench quant: isa \(Runtime.isaName), \(Runtime.threads) threads") }
        let opts = try QuantOptions(type: .nf4, block: 64, doubleQuant: true)
        for nk in [2048, 4096] {
            let w = try Tensor.randn([nk, nk], seed: 7, std: 0.02)
            let qw = try QuantizedTensor.quantize(w, opts)
            for m in [1, 16, 256, 1024] {
                let x = try Tensor.randn([m, nk], seed: 8)
                let y = try Tensor(shape: [m, nk], dtype: .f32)
                let reps = m >= 256 ? 5 : 21
                let tRef = median(reps) {
                    if m == 1 {
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(nk), Int32(nk), 1, w.f32, Int32(nk), x.f32, 1, 0, y.f32, 1)
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(nk), Int32(nk), 1,
                                    x.f32, Int32(nk), w.f32, Int32(nk), 0, y.f32, Int32(nk))
                    }
                }
                for compute in ComputeType.allCases {
                    let tOurs = try qw.withWeight { wp in
                        median(reps) {
                            if compute == .bf16 { ql_matmul4_bf16(wp, x.f32, Int64(m), nil, y.f32) } else { ql_matmul4_f32(wp, x.f32, Int64(m), nil, y.f32) }
                        }
                    }
                    emit(json, [("op", "matmul4"), ("quant", "nf4"), ("compute", compute.rawValue), ("M", m), ("N", nk), ("K", nk),
                                ("ours_ms", tOurs * 1e3), ("ref_ms", tRef * 1e3), ("ratio", tOurs / tRef)])
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
