// A new Llama model from a config: weights drawn from N(0, 0.02) (transformers' initializer_range)
// from a seeded stream, norms at one, so one seed always gives the same model.

import Foundation
import Tensor

extension LlamaModel {
    public static func random(_ c: ModelConfig, seed: UInt64) throws -> LlamaModel {
        try c.validate("qlora.llama")
        // All weights at once before any: tensors that each fit can still add up to more than
        // the machine has, and filling them would end in the OOM killer instead of an error.
        let need = Double(c.parameterCount) * 4, have = Double(ProcessInfo.processInfo.physicalMemory)
        if need > have {
            throw ModelError(String(format: "qlora.llama: the weights need %.1f GiB in f32, more than this machine's memory (%.1f GiB)",
                                    need / 1073741824, have / 1073741824))
        }
        var counter: UInt64 = 0
        func normal(_ shape: [Int]) throws -> Tensor {
            counter += 1
            return try Tensor.randn(shape, seed: seed &* 1_000_003 &+ counter, std: 0.02)
        }
        func linear(_ name: String, _ layer: Int?, _ out: Int, _ inp: Int, bias: Bool) throws -> LinearModule {
            let b = bias ? try Tensor(shape: [out], dtype: .f32) : nil
            return try LinearModule(name: name, layer: layer, base: .dense(weight: try normal([out, inp]), bias: b))
        }
        let qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim
        var layers: [DecoderLayer] = []
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)"
            layers.append(DecoderLayer(
                index: i,
                inputNorm: try Tensor.full([c.hiddenSize], 1), postAttentionNorm: try Tensor.full([c.hiddenSize], 1),
                q: try linear("\(p).self_attn.q_proj", i, qd, c.hiddenSize, bias: c.attentionBias),
                k: try linear("\(p).self_attn.k_proj", i, kvd, c.hiddenSize, bias: c.attentionBias),
                v: try linear("\(p).self_attn.v_proj", i, kvd, c.hiddenSize, bias: c.attentionBias),
                o: try linear("\(p).self_attn.o_proj", i, c.hiddenSize, qd, bias: false),
                gate: try linear("\(p).mlp.gate_proj", i, c.intermediateSize, c.hiddenSize, bias: false),
                up: try linear("\(p).mlp.up_proj", i, c.intermediateSize, c.hiddenSize, bias: false),
                down: try linear("\(p).mlp.down_proj", i, c.hiddenSize, c.intermediateSize, bias: false),
                qNorm: c.qkNorm ? try Tensor.full([c.headDim], 1) : nil,
                kNorm: c.qkNorm ? try Tensor.full([c.headDim], 1) : nil))
        }
        let head = c.tieWordEmbeddings ? nil : try linear("lm_head", nil, c.vocabSize, c.hiddenSize, bias: false)
        return try LlamaModel(config: c, embedding: try normal([c.vocabSize, c.hiddenSize]), layers: layers,
                              norm: try Tensor.full([c.hiddenSize], 1), lmHead: head)
    }
}
