// Finite-difference gradient checking: compares the gradients backward() gives with central
// differences of a random projection of the output, element by element, for every input.

public struct GradCheckResult {
    public var ok: Bool
    public var maxAbsError: Double
    public var maxRelError: Double
    /// The worst element, e.g. "input 2 element 5: analytic 0.31 numeric 0.29".
    public var worst: String
    public var checked: Int
}

extension Tensor {
    /// Checks d(sum(f(inputs) * w))/d(inputs) against central differences, w a fixed random
    /// weight. Inputs must be f32; they are perturbed in place and restored.
    public static func gradcheck(_ inputs: [Tensor], eps: Double = 1e-3, atol: Double = 1e-3,
                                 rtol: Double = 1e-2, _ f: ([Tensor]) throws -> Tensor) throws -> GradCheckResult {
        for (i, t) in inputs.enumerated() where t.dtype != .f32 {
            throw TensorError("qlora.gradcheck: input \(i + 1) is \(t.dtype.name); gradcheck needs f32 inputs")
        }
        // Analytic gradients on detached leaves.
        let leaves = try inputs.map { t -> Tensor in
            let l = try t.detach()
            l.requiresGrad = true
            return l
        }
        let y0 = try f(leaves)
        if !y0.dtype.isFloat { throw TensorError("qlora.gradcheck: the function must return a floating tensor") }
        let w = try Tensor.randn(y0.shape, seed: 1234)
        let loss = try y0.binary(.mul, w).reduceAll(.sum)
        if loss.tracksGrad { try loss.backward() }
        let analytic = try leaves.map { try $0.grad?.asF32() }

        func projected(_ ts: [Tensor]) throws -> Double {
            let y = try GradMode.withoutGrad { try f(ts).asF32() }
            if y.shape != w.shape { throw TensorError("qlora.gradcheck: the function's output shape changed between calls") }
            var s = 0.0
            for i in 0..<y.count { s += Double(y.f32[i]) * Double(w.f32[i]) }
            return s
        }

        var result = GradCheckResult(ok: true, maxAbsError: 0, maxRelError: 0, worst: "", checked: 0)
        var worstScore = -1.0
        for (ti, t) in leaves.enumerated() {
            let p = t.f32
            for i in 0..<t.count {
                let orig = p[i]
                p[i] = Float(Double(orig) + eps)
                let plus = try projected(leaves)
                p[i] = Float(Double(orig) - eps)
                let minus = try projected(leaves)
                p[i] = orig
                let numeric = (plus - minus) / (2 * eps)
                let a = analytic[ti].map { Double($0.f32[i]) } ?? 0
                let err = abs(a - numeric)
                let rel = err / max(abs(numeric), 1e-12)
                result.maxAbsError = max(result.maxAbsError, err)
                if err > atol { result.maxRelError = max(result.maxRelError, rel) }
                let score = err - (atol + rtol * abs(numeric))
                if score > worstScore {
                    worstScore = score
                    result.worst = "input \(ti + 1) element \(i + 1): analytic \(a) numeric \(numeric)"
                }
                if score > 0 { result.ok = false }
                result.checked += 1
            }
        }
        return result
    }
}
