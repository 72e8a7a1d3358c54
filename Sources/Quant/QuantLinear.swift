// The frozen 4-bit linear layer: y = x W^T (+ b) with W quantized, computed by the fused 4-bit
// kernels that dequantize tiles on the fly (never the whole weight). Backward gives dx = dy W
// (and the bias gradient when the bias requires it); W itself gets no gradient.

import CKernels
import Foundation
import Tensor

public enum ComputeType: String, CaseIterable {
    case f32, bf16
    /// bitsandbytes' CPU inference arithmetic (see BnbCompatLinear.swift), for comparing with it.
    case bnbBF16 = "bnb_bf16"

    /// The modes the fused kernels implement (what benchmarks measure).
    public static let kernelModes: [ComputeType] = [.f32, .bf16]
    public static let names = allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")

    /// The arithmetic this compute type runs on this CPU at the current ISA level. bf16 runs the
    /// bf16 kernels only where the CPU has bf16 dot products (the avx512bf16 level) or
    /// QLORA_BF16=emulate asks for them: elsewhere they can only round operands to bf16 before f32
    /// arithmetic, which costs time and buys nothing, so the f32 kernels run instead.
    public var kernels: ComputeType { self == .bf16 && !ComputeType.bf16Kernels ? .f32 : self }

    /// Whether compute = bf16 runs the bf16 kernels here (see `kernels`).
    public static var bf16Kernels: Bool { emulateBF16 || ql_isa_current() >= Int32(QL_ISA_AVX512BF16.rawValue) }

    /// QLORA_BF16=emulate: the bf16 kernels even without bf16 dot products (to compare numerics).
    nonisolated(unsafe) public static var emulateBF16 = ProcessInfo.processInfo.environment["QLORA_BF16"] == "emulate"
}

public final class QuantLinear {
    public let weight: QuantizedTensor
    public let bias: Tensor?
    public var compute: ComputeType

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    public init(weight: QuantizedTensor, bias: Tensor?, compute: ComputeType = .f32) throws {
        if weight.shape.count != 2 {
            throw QuantError("expected a 2-d quantized weight [out, in], got shape \(Shape.describe(weight.shape))")
        }
        if let b = bias, b.shape != [weight.shape[0]] || !b.dtype.isFloat {
            throw QuantError("bias must be a floating tensor of shape [\(weight.shape[0])], got \(b.dtype.name) \(Shape.describe(b.shape))")
        }
        self.weight = weight
        self.bias = bias
        self.compute = compute
    }

    /// out [m, out] = xf [m, in] W^T (+ bias) with no graph; xf and out f32 and contiguous.
    public func product(_ xf: Tensor, rows m: Int, into out: Tensor) throws {
        let b = try bias?.asF32()
        let compute = self.compute.kernels
        try weight.withWeight { w in
            if compute == .bf16 {
                ql_matmul4_bf16(w, xf.f32, Int64(m), b.map { UnsafePointer($0.f32) }, out.f32)
            } else {
                ql_matmul4_f32(w, xf.f32, Int64(m), b.map { UnsafePointer($0.f32) }, out.f32)
            }
        }
    }

    /// dx [m, in] = dy [m, out] W with no graph; both f32 and contiguous.
    public func inputGradient(_ dy: Tensor, rows m: Int, into dx: Tensor, compute: ComputeType? = nil) throws {
        let compute = (compute ?? self.compute).kernels
        try weight.withWeight { w in
            if compute == .bf16 {
                ql_matmul4_backward_bf16(w, dy.f32, Int64(m), dx.f32)
            } else {
                ql_matmul4_backward_f32(w, dy.f32, Int64(m), dx.f32)
            }
        }
    }

    /// `product` plus h [m, r] = xf A^T (A [r, in] f32, contiguous) from the same pass over xf
    /// (the fused kernel's LoRA extension; bf16 compute rounds A and xf for h too).
    public func productLoRA(_ xf: Tensor, rows m: Int, into out: Tensor, a: Tensor, rank r: Int,
                            h: Tensor) throws {
        let b = try bias?.asF32()
        let compute = self.compute.kernels
        try weight.withWeight { w in
            if compute == .bf16 {
                ql_matmul4_lora_bf16(w, xf.f32, Int64(m), b.map { UnsafePointer($0.f32) }, out.f32,
                                     a.f32, Int64(r), h.f32)
            } else {
                ql_matmul4_lora_f32(w, xf.f32, Int64(m), b.map { UnsafePointer($0.f32) }, out.f32,
                                    a.f32, Int64(r), h.f32)
            }
        }
    }

    /// dx [m, in] = dy W + dh A in one kernel pass (dh [m, r], A [r, in]; all f32, contiguous).
    public func inputGradientLoRA(_ dy: Tensor, dh: Tensor, a: Tensor, rank r: Int, rows m: Int,
                                  into dx: Tensor, compute: ComputeType? = nil) throws {
        let compute = (compute ?? self.compute).kernels
        try weight.withWeight { w in
            if compute == .bf16 {
                ql_matmul4_lora_backward_bf16(w, dy.f32, dh.f32, a.f32, Int64(r), Int64(m), dx.f32)
            } else {
                ql_matmul4_lora_backward_f32(w, dy.f32, dh.f32, a.f32, Int64(r), Int64(m), dx.f32)
            }
        }
    }

    /// x [..., in] -> [..., out], differentiable with respect to x (and the bias).
    public func forward(_ x: Tensor) throws -> Tensor {
        guard let k = x.shape.last, x.ndim >= 1 else {
            throw QuantError("expected an input with a last dim of \(inFeatures), got a 0-d tensor")
        }
        if k != inFeatures {
            throw QuantError("input's last dim is \(k), the layer expects \(inFeatures) (input shape \(Shape.describe(x.shape)))")
        }
        let m = x.count / max(k, 1)
        if compute == .bnbBF16 { return try forwardBnbCompat(x, rows: m) }
        let n = outFeatures
        let xf = try x.asF32()
        let out = try Tensor(shape: Array(x.shape.dropLast()) + [n], dtype: .f32, zeroed: false)
        try product(xf, rows: m, into: out)
        let compute = self.compute
        return recordLinear(out, input: x, rows: m, op: "quant_linear") { gf, dx in
            try self.inputGradient(gf, rows: m, into: dx, compute: compute)
        }
    }

    /// Records `out` = (product of x) + bias for autograd: backward fills dx [x's shape] with
    /// `inputGradient(dy, dx)` and sums dy over rows for the bias. Shared by every compute mode.
    func recordLinear(_ out: Tensor, input x: Tensor, rows m: Int, op: String,
                      inputGradient: @escaping (_ dy: Tensor, _ dx: Tensor) throws -> Void) -> Tensor {
        let bias = self.bias
        let n = outFeatures
        var inputs = [x]
        if let bias = bias { inputs.append(bias) }
        let inputShape = x.shape
        return out.recorded(op, inputs) { g in
            let gf = try g.asF32()
            var grads: [Tensor?] = []
            if x.tracksGrad {
                let dx = try Tensor(shape: inputShape, dtype: .f32, zeroed: false)
                try inputGradient(gf, dx)
                grads.append(dx)
            } else { grads.append(nil) }
            if let bias = bias {
                grads.append(bias.tracksGrad ? try gf.reshape([m, n]).reduceDim(.sum, 0, keepDim: false) : nil)
            }
            return grads
        }
    }
}
