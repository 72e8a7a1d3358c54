// model:summary(): the architecture, and per kind of weight its parameter count, storage bytes
// and bits per parameter (4-bit layers count packed nibbles plus absmax storage).

import Foundation
import NN
import Quant
import Tensor

enum ModelSummary {
    static func text(_ m: LlamaModel) -> String {
        let c = m.config
        var rows: [(String, Int, Int)] = []   // kind, params, bytes
        func add(_ kind: String, _ params: Int, _ bytes: Int) {
            if let i = rows.firstIndex(where: { $0.0 == kind }) {
                rows[i].1 += params; rows[i].2 += bytes
            } else { rows.append((kind, params, bytes)) }
        }
        add("embed_tokens", m.embedding.count, m.embedding.byteCount)
        for l in m.linears {
            let params = l.inFeatures * l.outFeatures
            switch l.base {
            case .dense(let w, let b): add(l.kind, params + (b?.count ?? 0), w.byteCount + (b?.byteCount ?? 0))
            case .quantized(let q): add(l.kind, params + (q.bias?.count ?? 0), q.weight.byteCount + (q.bias?.byteCount ?? 0))
            }
            for (_, ad) in l.adapters {
                let m = ad.magnitude
                add("lora", ad.a.count + ad.b.count + (m?.count ?? 0), ad.a.byteCount + ad.b.byteCount + (m?.byteCount ?? 0))
            }
        }
        let norms = m.layers.reduce(0) {
            $0 + $1.inputNorm.count + $1.postAttentionNorm.count + ($1.qNorm?.count ?? 0) + ($1.kNorm?.count ?? 0)
                + ($1.preFeedforwardNorm?.count ?? 0) + ($1.postFeedforwardNorm?.count ?? 0)
        } + m.norm.count
        add("norms", norms, norms * 4)
        var out = "\(c.architecture): \(c.numLayers) layers, hidden \(c.hiddenSize), intermediate \(c.intermediateSize), "
        out += "heads \(c.numHeads) (kv \(c.numKVHeads), head_dim \(c.headDim)), vocab \(c.vocabSize)\n"
        if let note = m.sourceNote { out += note + "\n" }
        let computes = m.linears.compactMap { l -> ComputeType? in
            if case .quantized(let q) = l.base { return q.compute } else { return nil }
        } + [m.headCompute]
        if computes.contains(.bf16) && !ComputeType.bf16Kernels {
            out += "compute bf16 runs the f32 kernels: this CPU (level \(Runtime.isaName)) has no bf16 dot products, where "
            out += "bf16 would only round operands and run slower (QLORA_BF16=emulate runs the bf16 rounding anyway)\n"
        }
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        func row(_ k: String, _ p: Int, _ b: Int) -> String {
            pad(k, 14) + String(format: " %14ld %14ld %10.3f", p, b, p > 0 ? Double(b * 8) / Double(p) : 0)
        }
        out += pad("kind", 14) + "     parameters          bytes bits/param\n"
        var tp = 0, tb = 0
        for (k, p, b) in rows {
            out += row(k, p, b) + "\n"
            tp += p; tb += b
        }
        return out + row("total", tp, tb)
    }
}
