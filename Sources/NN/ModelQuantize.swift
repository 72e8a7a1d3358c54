// Quantizing a model's decoder linears in place (a model built with q.llama or loaded dense):
// each dense weight becomes a 4-bit QuantLinear; embeddings, norms and the head stay dense (the
// head takes the compute type: bf16 products for compute = "bf16").

import Quant
import Tensor

extension LlamaModel {
    /// Returns the number of layers quantized (those already 4-bit only change compute type).
    @discardableResult
    public func quantizeLinears(_ options: QuantOptions, compute: ComputeType) throws -> Int {
        var n = 0
        for l in linears where l.layer != nil {
            switch l.base {
            case .dense(let w, let b):
                l.base = .quantized(try QuantLinear(weight: try QuantizedTensor.quantize(w, options), bias: b, compute: compute))
                n += 1
            case .quantized(let q):
                q.compute = compute
            }
        }
        headCompute = compute == .bf16 ? .bf16 : .f32
        // the dense weights just replaced are gone for good: give their memory back
        if n > 0 { StoragePool.releaseAfterPeak() }
        return n
    }
}
