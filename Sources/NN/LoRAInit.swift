// PiSSA and LoftQ initialisation of LoRA adapters, and the truncated SVD they use (in double:
// LAPACK's dgesdd through OpenBLAS, exact, when the smaller side is at most 256; otherwise a
// randomized subspace iteration whose small projected matrix is again solved by dgesdd: the top
// singular values converge, the vectors are approximate where the spectrum is flat).
//   PiSSA: W = U S Vh; A = sqrt(S_r / s) Vh_r, B = U_r sqrt(S_r / s); base <- W - s B A
//          (re-quantized with the base's options when the base is 4-bit).
//   LoftQ: repeat: Q = quant(W - s B A) (first time: quant(W)); s B A = SVD_r(W - Q); base <- Q.

import COpenBLAS
import Foundation
import Quant
import Tensor

public enum LoRAInit {
    /// The top `rank` singular triplets of a row-major [m, n] matrix: u [m, rank] and vt [rank, n]
    /// row-major, s descending.
    public static func truncatedSVD(_ w: [Double], rows m: Int, cols n: Int, rank: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        if m < 1 || n < 1 || w.count != m * n { throw ModelError("svd: a [\(m), \(n)] matrix needs \(m * n) values, got \(w.count)") }
        if rank < 1 || rank > min(m, n) { throw ModelError("svd: rank \(rank) must be in 1...\(min(m, n)) for a [\(m), \(n)] matrix") }
        if !w.allSatisfy({ $0.isFinite }) { throw ModelError("svd: the matrix has NaN or infinite values") }
        let full = min(m, n) <= 256 ? try lapackSVD(w, rows: m, cols: n) : try randomizedSVD(w, rows: m, cols: n, rank: rank)
        let k = full.s.count
        var u = [Double](repeating: 0, count: m * rank), vt = [Double](repeating: 0, count: rank * n)
        for c in 0..<rank {
            for i in 0..<m { u[i * rank + c] = full.u[i * k + c] }
            for j in 0..<n { vt[c * n + j] = full.vt[c * n + j] }
        }
        return (u, Array(full.s[0..<rank]), vt)
    }

    /// Thin SVD by LAPACK's dgesdd (OpenBLAS): u [m, k], s [k] descending, vt [k, n], k = min(m, n),
    /// all row-major. LAPACK is column-major, so it factors the buffer as W^T [n, m] = U' S VT':
    /// then W = VT'^T S U'^T, and VT' (column-major [k, m]) is u row-major, U' (column-major
    /// [n, k]) is vt row-major: no transposes.
    static func lapackSVD(_ w: [Double], rows m: Int, cols n: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        let k = min(m, n)
        guard m >= 1, n >= 1, w.count == m * n, m <= Int(Int32.max), n <= Int(Int32.max),
              8 * k <= Int(Int32.max) else {
            throw ModelError("svd: a [\(m), \(n)] matrix is outside what LAPACK's 32-bit indices address")
        }
        var a = w
        var s = [Double](repeating: 0, count: k)
        var vt = [Double](repeating: 0, count: k * n)   // U' of W^T
        var u = [Double](repeating: 0, count: m * k)    // VT' of W^T
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var lm = Int32(n), ln = Int32(m), lda = Int32(n), ldu = Int32(n), ldvt = Int32(k)
        var info: Int32 = 0
        var query = [Double](repeating: 0, count: 1)
        var lwork: Int32 = -1
        dgesdd_("S", &lm, &ln, &a, &lda, &s, &vt, &ldu, &u, &ldvt, &query, &lwork, &iwork, &info, 1)
        if info != 0 { throw ModelError("svd: LAPACK dgesdd's workspace query failed (info \(info)) for a [\(m), \(n)] matrix") }
        guard query[0].isFinite, query[0] >= 1, query[0] <= Double(Int32.max) else {
            throw ModelError("svd: LAPACK dgesdd asks for a workspace of \(query[0]) values for a [\(m), \(n)] matrix")
        }
        lwork = Int32(query[0].rounded(.up))
        var work = [Double](repeating: 0, count: Int(lwork))
        dgesdd_("S", &lm, &ln, &a, &lda, &s, &vt, &ldu, &u, &ldvt, &work, &lwork, &iwork, &info, 1)
        if info < 0 { throw ModelError("svd: LAPACK dgesdd rejected argument \(-info) for a [\(m), \(n)] matrix") }
        if info > 0 { throw ModelError("svd: LAPACK dgesdd did not converge for a [\(m), \(n)] matrix (info \(info))") }
        return (u, s, vt)
    }

    /// Randomized subspace iteration (max(2 rank, rank + 10) columns; products in f32 through
    /// sgemm, orthonormalization in double; until the captured energy settles, at most 40
    /// rounds), then the exact SVD of the projection P = Y^T W (Rayleigh-Ritz).
    /// u [m, kk], s [kk], vt [kk, n].
    static func randomizedSVD(_ w: [Double], rows m: Int, cols n: Int, rank: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        let kk = min(max(2 * rank, rank + 10), min(m, n))
        let wf = try f32Tensor(w, [m, n])
        let wfT = try wf.transpose(0, 1)
        var y = try doubles(wf.matmul(Tensor.randn([n, kk], seed: 0x5155_4953)))
        orthonormalizeColumns(&y, m, kk)
        var previous = -1.0
        for round in 0..<40 {
            var z = try doubles(wfT.matmul(f32Tensor(y, [m, kk])))           // W^T Y: [n, kk]
            orthonormalizeColumns(&z, n, kk)
            y = try doubles(wf.matmul(f32Tensor(z, [n, kk])))                // W Z: [m, kk]
            let energy = y.reduce(0) { $0 + $1 * $1 }                        // ||W Z||_F^2
            orthonormalizeColumns(&y, m, kk)
            if round >= 3 && abs(energy - previous) <= 1e-7 * energy { break }
            previous = energy
        }
        // P = Y^T W: [kk, n]; P = Up S Vt; W ~ (Y Up) S Vt.
        var p = [Double](repeating: 0, count: kk * n)
        for i in 0..<m { for c in 0..<kk {
            let yc = y[i * kk + c]
            if yc == 0 { continue }
            for j in 0..<n { p[c * n + j] += yc * w[i * n + j] }
        } }
        let small = try lapackSVD(p, rows: kk, cols: n)
        let ks = small.s.count
        var u = [Double](repeating: 0, count: m * ks)
        for i in 0..<m { for c in 0..<ks {
            var acc = 0.0
            for t in 0..<kk { acc += y[i * kk + t] * small.u[t * ks + c] }
            u[i * ks + c] = acc
        } }
        return (u, small.s, small.vt)
    }

    /// Modified Gram-Schmidt (twice) on the k columns of a row-major [rows, k]; columns that
    /// vanish become zero.
    static func orthonormalizeColumns(_ a: inout [Double], _ rows: Int, _ k: Int) {
        for c in 0..<k {
            for _ in 0..<2 {
                for p in 0..<c {
                    var d = 0.0
                    for i in 0..<rows { d += a[i * k + p] * a[i * k + c] }
                    for i in 0..<rows { a[i * k + c] -= d * a[i * k + p] }
                }
            }
            var nrm = 0.0
            for i in 0..<rows { nrm += a[i * k + c] * a[i * k + c] }
            nrm = nrm.squareRoot()
            for i in 0..<rows { a[i * k + c] = nrm > 1e-300 ? a[i * k + c] / nrm : 0 }
        }
    }

    /// A [r, in] and B [out, r] (f32) with s B A the best rank-r approximation of `w`:
    /// A = sqrt(S / s) Vh, B = U sqrt(S / s).
    static func factors(_ w: [Double], out: Int, inp: Int, r: Int, scaling s: Double) throws -> (a: Tensor, b: Tensor) {
        let (u, sv, vt) = try truncatedSVD(w, rows: out, cols: inp, rank: r)
        let a = try Tensor(shape: [r, inp], dtype: .f32, zeroed: false)
        let b = try Tensor(shape: [out, r], dtype: .f32, zeroed: false)
        for k in 0..<r {
            let f = (sv[k] / s).squareRoot()
            for j in 0..<inp { a.f32[k * inp + j] = Float(f * vt[k * inp + j]) }
            for i in 0..<out { b.f32[i * r + k] = Float(u[i * r + k] * f) }
        }
        return (a, b)
    }

    /// w - s B A in double, from the f32 values of A and B (what forward uses).
    static func residual(_ w: [Double], out: Int, inp: Int, a: Tensor, b: Tensor, scaling s: Double) -> [Double] {
        let r = a.shape[0]
        var res = w
        for i in 0..<out { for k in 0..<r {
            let bik = s * Double(b.f32[i * r + k])
            if bik == 0 { continue }
            for j in 0..<inp { res[i * inp + j] -= bik * Double(a.f32[k * inp + j]) }
        } }
        return res
    }

    static func doubles(_ t: Tensor) throws -> [Double] {
        let f = try t.asF32()
        return (0..<f.count).map { Double(f.f32[$0]) }
    }

    static func f32Tensor(_ v: [Double], _ shape: [Int]) throws -> Tensor {
        try Tensor(v.map { Float($0) }, shape: shape)
    }

    /// PiSSA on one module: returns A, B and replaces the base by W - s B A. `source` is the
    /// full-precision weight [out, in] (for a 4-bit base: the checkpoint's, or the dequantized one).
    public static func pissa(_ m: LinearModule, r: Int, scaling s: Double, source: Tensor) throws -> (a: Tensor, b: Tensor) {
        let out = m.outFeatures, inp = m.inFeatures
        if source.shape != [out, inp] { throw ModelError("\(m.name): pissa: weight \(Shape.describe(source.shape)) is not [\(out), \(inp)]") }
        let w = try doubles(source)
        let (a, b) = try factors(w, out: out, inp: inp, r: r, scaling: s)
        let res = try f32Tensor(residual(w, out: out, inp: inp, a: a, b: b, scaling: s), [out, inp])
        switch m.base {
        case .dense(let old, let bias):
            m.base = .dense(weight: old.dtype == .f32 ? res : try res.converted(to: old.dtype), bias: bias)
        case .quantized(let q):
            m.base = .quantized(try QuantLinear(weight: QuantizedTensor.quantize(res, q.weight.options), bias: q.bias, compute: q.compute))
        }
        return (a, b)
    }

    /// LoftQ on one 4-bit module: `iterations` rounds of Q = quant(W - s B A), s B A = SVD_r(W - Q);
    /// returns A, B and replaces the base by the last Q (the base's quantization options).
    public static func loftq(_ m: LinearModule, r: Int, scaling s: Double, iterations: Int, source: Tensor) throws -> (a: Tensor, b: Tensor) {
        guard case .quantized(let ql) = m.base else { throw ModelError("\(m.name): loftq needs a 4-bit base (load the model with quant = {...})") }
        let out = m.outFeatures, inp = m.inFeatures
        if source.shape != [out, inp] { throw ModelError("\(m.name): loftq: weight \(Shape.describe(source.shape)) is not [\(out), \(inp)]") }
        if iterations < 1 { throw ModelError("loftq_iter must be >= 1, got \(iterations)") }
        let w = try doubles(source)
        var target = try source.asF32()
        var result: (q: QuantizedTensor, a: Tensor, b: Tensor)? = nil
        for _ in 0..<iterations {
            let q = try QuantizedTensor.quantize(target, ql.weight.options)
            let qd = try doubles(q.dequantize())
            var err = w
            for i in 0..<err.count { err[i] -= qd[i] }
            let (a, b) = try factors(err, out: out, inp: inp, r: r, scaling: s)
            target = try f32Tensor(residual(w, out: out, inp: inp, a: a, b: b, scaling: s), [out, inp])
            result = (q, a, b)
        }
        guard let (q, a, b) = result else { throw ModelError("loftq_iter must be >= 1") }
        m.base = .quantized(try QuantLinear(weight: q, bias: ql.bias, compute: ql.compute))
        return (a, b)
    }

    /// True when two quantized tensors hold the same bytes (same weight, same options).
    static func sameQuantized(_ x: QuantizedTensor, _ y: QuantizedTensor) -> Bool {
        func same(_ a: Tensor?, _ b: Tensor?) -> Bool {
            switch (a, b) {
            case (nil, nil): return true
            case let (a?, b?): return a.dtype == b.dtype && a.shape == b.shape && memcmp(a.raw, b.raw, a.byteCount) == 0
            default: return false
            }
        }
        return x.options == y.options && x.shape == y.shape && x.offset == y.offset && same(x.packed, y.packed)
            && same(x.absmax, y.absmax) && same(x.absmaxCodes, y.absmaxCodes) && same(x.nestedAbsmax, y.nestedAbsmax)
    }

    /// The weight PiSSA / LoftQ decompose: a dense base's weight; for a 4-bit base the
    /// full-precision weight `checkpoint` gives, when it quantizes to exactly the current base
    /// (so the base has not been changed since loading), else the dequantized base.
    static func sourceWeight(_ m: LinearModule, checkpoint: ((LinearModule) throws -> Tensor?)?) throws -> Tensor {
        switch m.base {
        case .dense(let w, _): return try w.asF32()
        case .quantized(let q):
            if let full = try checkpoint?(m), full.shape == [m.outFeatures, m.inFeatures], full.dtype.isFloat {
                let f = try full.asF32()
                if sameQuantized(try QuantizedTensor.quantize(f, q.weight.options), q.weight) { return f }
            }
            return try q.weight.dequantize()
        }
    }
}
