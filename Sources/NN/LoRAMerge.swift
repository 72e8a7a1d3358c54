// Merging LoRA adapters into the base weight and back out (PEFT's merge_adapter /
// unmerge_adapter). LoRA: W <- W + s B A, unmerge W <- W - s B A. DoRA: W <- (m / n) * (W + s B A)
// with n = ||W + s B A||_row kept for unmerge: W <- W / (m / n) - s B A. A 4-bit base is
// dequantized, changed and re-quantized with its own options (this rounds; a warning goes to
// stderr once per call). A merged adapter is flagged and skipped by forward.

import Foundation
import Quant
import Tensor

extension LinearModule {
    /// Folds the adapter into the base weight. Returns true when the base is 4-bit (rounded).
    @discardableResult
    public func mergeAdapter(_ adapterName: String) throws -> Bool {
        guard let ad = adapter(named: adapterName) else { throw ModelError("\(name) has no adapter named \"\(adapterName)\"") }
        if ad.merged { throw ModelError("\(name): adapter \"\(adapterName)\" is already merged") }
        let w = try baseWeightF32()
        let delta = try scaledUpdate(ad)
        let out = try Tensor(shape: [outFeatures, inFeatures], dtype: .f32, zeroed: false)
        let n = inFeatures
        if let m = ad.magnitude {
            let mag = try m.detach().asF32()
            var norms = [Double](repeating: 0, count: outFeatures)
            for i in 0..<outFeatures {
                var acc = 0.0
                for j in 0..<n { let v = Double(w.f32[i * n + j] + delta.f32[i * n + j]); acc += v * v }
                norms[i] = Double(Float(acc.squareRoot()))         // the f32 norm forward uses
                if !(norms[i] > 0 && norms[i].isFinite) {
                    throw ModelError("\(name): cannot merge DoRA adapter \"\(adapterName)\": row \(i) of W + s B A has norm \(norms[i])")
                }
                let factor = Double(mag.f32[i]) / norms[i]
                for j in 0..<n { out.f32[i * n + j] = Float(factor * Double(w.f32[i * n + j] + delta.f32[i * n + j])) }
            }
            ad.mergedNorm = norms
        } else {
            for i in 0..<(outFeatures * n) { out.f32[i] = Float(Double(w.f32[i]) + Double(delta.f32[i])) }
        }
        let rounded = try replaceBaseWeight(out)
        ad.merged = true
        LoRAMerge.serial += 1
        ad.mergeSerial = LoRAMerge.serial
        return rounded
    }

    /// Takes a merged adapter back out of the base weight. Returns true when the base is 4-bit.
    @discardableResult
    public func unmergeAdapter(_ adapterName: String) throws -> Bool {
        guard let ad = adapter(named: adapterName) else { throw ModelError("\(name) has no adapter named \"\(adapterName)\"") }
        if !ad.merged { throw ModelError("\(name): adapter \"\(adapterName)\" is not merged") }
        let w = try baseWeightF32()
        let delta = try scaledUpdate(ad)
        let out = try Tensor(shape: [outFeatures, inFeatures], dtype: .f32, zeroed: false)
        let n = inFeatures
        if let m = ad.magnitude {
            guard let norms = ad.mergedNorm, norms.count == outFeatures else {
                throw ModelError("\(name): adapter \"\(adapterName)\" has no norms recorded at merge time")
            }
            let mag = try m.detach().asF32()
            for i in 0..<outFeatures {
                let factor = Double(mag.f32[i]) / norms[i]
                if factor == 0 || !factor.isFinite {
                    throw ModelError("\(name): cannot unmerge DoRA adapter \"\(adapterName)\": row \(i) has magnitude / norm = \(factor)")
                }
                for j in 0..<n { out.f32[i * n + j] = Float(Double(w.f32[i * n + j]) / factor - Double(delta.f32[i * n + j])) }
            }
        } else {
            for i in 0..<(outFeatures * n) { out.f32[i] = Float(Double(w.f32[i]) - Double(delta.f32[i])) }
        }
        let rounded = try replaceBaseWeight(out)
        ad.merged = false
        ad.mergedNorm = nil
        return rounded
    }

    /// s * B A as f32 [out, in], outside the graph.
    func scaledUpdate(_ ad: LoRAAdapter) throws -> Tensor {
        try GradMode.withoutGrad {
            let ba = try ad.b.detach().asF32().matmul(ad.a.detach().asF32())
            if ba.shape != [outFeatures, inFeatures] {
                throw ModelError("\(name): B A \(Shape.describe(ba.shape)) does not match the layer [\(outFeatures), \(inFeatures)]")
            }
            return try ba.binary(.mul, scalar: ad.scaling)
        }
    }

    /// New base weight (f32 [out, in]): a dense base keeps its dtype; a 4-bit base is re-quantized
    /// with its options (returns true).
    func replaceBaseWeight(_ w: Tensor) throws -> Bool {
        switch base {
        case .dense(let old, let bias):
            base = .dense(weight: old.dtype == .f32 ? w : try w.converted(to: old.dtype), bias: bias)
            return false
        case .quantized(let q):
            base = .quantized(try QuantLinear(weight: QuantizedTensor.quantize(w, q.weight.options), bias: q.bias, compute: q.compute))
            return true
        }
    }
}

public enum LoRAMerge {
    nonisolated(unsafe) static var serial = 0

    /// Adapter names in model order.
    public static func adapterNames(_ model: LlamaModel) -> [String] {
        var seen = Set<String>(), out: [String] = []
        for l in model.linears { for (n, _) in l.adapters where !seen.contains(n) { seen.insert(n); out.append(n) } }
        return out
    }

    /// Merges the named adapter (default: every active adapter not merged yet) into its modules'
    /// base weights; merging an adapter twice is an error.
    /// Returns the number of modules changed.
    @discardableResult
    public static func merge(_ model: LlamaModel, adapter: String? = nil) throws -> Int {
        let names: [String]
        if let a = adapter {
            if !model.linears.contains(where: { $0.adapter(named: a) != nil }) { throw ModelError("the model has no adapter named \"\(a)\"") }
            names = [a]
        } else {
            let active = adapterNames(model).filter { n in
                model.linears.contains { l in l.adapter(named: n) != nil && (l.activeAdapters?.contains(n) ?? true) }
            }
            if active.isEmpty { throw ModelError("the model has no active adapter to merge") }
            names = active.filter { n in model.linears.contains { $0.adapter(named: n)?.merged == false } }
            if names.isEmpty { throw ModelError("every active adapter is already merged") }
        }
        var work: [(LinearModule, String)] = []
        for n in names {
            for l in model.linears {
                guard let ad = l.adapter(named: n) else { continue }
                if ad.merged { throw ModelError("adapter \"\(n)\" is already merged (in \(l.name))") }
                work.append((l, n))
            }
        }
        var done: [(LinearModule, String)] = []
        var rounded = false
        do {
            for (l, n) in work {
                if try l.mergeAdapter(n) { rounded = true }
                done.append((l, n))
            }
        } catch {
            for (l, n) in done.reversed() { _ = try? l.unmergeAdapter(n) }
            throw error
        }
        if rounded { warn("merging \(names.map { "\"\($0)\"" }.joined(separator: ", ")) into 4-bit weights re-quantizes them; the merged model differs from base + adapter by the 4-bit rounding") }
        return work.count
    }

    /// Takes the named adapter (default: every merged adapter, newest first) back out.
    @discardableResult
    public static func unmerge(_ model: LlamaModel, adapter: String? = nil) throws -> Int {
        var work: [(LinearModule, String, Int)] = []
        if let a = adapter {
            if !model.linears.contains(where: { $0.adapter(named: a) != nil }) { throw ModelError("the model has no adapter named \"\(a)\"") }
            for l in model.linears {
                guard let ad = l.adapter(named: a) else { continue }
                if !ad.merged { throw ModelError("adapter \"\(a)\" is not merged (in \(l.name))") }
                work.append((l, a, ad.mergeSerial))
            }
        } else {
            for l in model.linears { for (n, ad) in l.adapters where ad.merged { work.append((l, n, ad.mergeSerial)) } }
            if work.isEmpty { throw ModelError("no adapter is merged") }
        }
        work.sort { $0.2 > $1.2 }
        var rounded = false
        for (l, n, _) in work {
            if try l.unmergeAdapter(n) { rounded = true }
        }
        if rounded { warn("unmerging from 4-bit weights re-quantizes them; the result differs from the weights before merging by the 4-bit rounding") }
        return work.count
    }

    static func warn(_ message: String) {
        FileHandle.standardError.write(Data(("qlora: warning: " + message + "\n").utf8))
    }
}
