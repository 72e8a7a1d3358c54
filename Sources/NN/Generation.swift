// Text generation with a KV cache: the prompt runs once, then one token per step; greedy
// (temperature 0) or sampling with temperature, top-k and top-p from a seeded stream, stopping on
// an eos id, after max_tokens, when the sequence fills max_position_embeddings, or when the
// callback says so.

import Foundation
import Tensor

public struct GenerationOptions {
    public var maxTokens = 32
    public var temperature = 0.0
    public var topK = 0
    public var topP = 1.0
    public var seed: UInt64 = 0
    public var stopIds: [Int] = []
    public init() {}
}

extension LlamaModel {
    /// Generates after `prompt` (token ids); `onToken(id)` returns false to stop. Returns the new ids.
    public func generate(_ prompt: [Int], _ o: GenerationOptions, onToken: (Int) throws -> Bool = { _ in true }) throws -> [Int] {
        if prompt.isEmpty { throw ModelError("generate: the prompt has no tokens") }
        if o.maxTokens < 0 { throw ModelError("generate: max_tokens must be >= 0") }
        if o.temperature < 0 || !o.temperature.isFinite { throw ModelError("generate: temperature must be >= 0") }
        if !(o.topP > 0 && o.topP <= 1) { throw ModelError("generate: top_p must be in (0, 1]") }
        if o.topK < 0 { throw ModelError("generate: top_k must be >= 0") }
        // The sequence ends at max_position_embeddings: past it the KV cache would grow without
        // bound (max_tokens = 10^9 ran until memory ran out).
        let room = config.maxPositions - prompt.count
        if room <= 0 && o.maxTokens > 0 {
            throw ModelError("generate: the prompt has \(prompt.count) tokens, as many as max_position_embeddings (\(config.maxPositions)): no room for new tokens")
        }
        let wasTraining = training
        training = false
        defer { training = wasTraining }
        return try GradMode.withoutGrad {
            let cache = KVCache(layers: layers.count)
            var out: [Int] = []
            var next = prompt
            for step in 0..<min(o.maxTokens, max(room, 0)) {
                let ids = try Tensor(shape: [1, next.count], dtype: .i64, zeroed: false)
                for (i, t) in next.enumerated() { ids.storeInteger(Int64(t), at: i) }
                let logits = try forward(ids, cache: cache)
                let v = config.vocabSize
                let last = try logits.slice(1, next.count - 1, next.count).reshape([v])
                let token = try pick(last, o, step: step)
                out.append(token)
                if o.stopIds.contains(token) { break }
                if try !onToken(token) { break }
                next = [token]
            }
            return out
        }
    }

    private func pick(_ logits: Tensor, _ o: GenerationOptions, step: Int) throws -> Int {
        let v = logits.count
        if o.temperature == 0 {
            return Int(try logits.argReduce(true, 0, keepDim: false).intValue(at: 0))
        }
        var scored = (0..<v).map { (id: $0, logit: logits.value(at: $0) / o.temperature) }
        scored.sort { $0.logit > $1.logit }
        if o.topK > 0 && o.topK < v { scored.removeLast(v - o.topK) }
        let top = scored[0].logit
        var probs = scored.map { exp($0.logit - top) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        if o.topP < 1 {
            var acc = 0.0, keep = 0
            while keep < probs.count { acc += probs[keep]; keep += 1; if acc >= o.topP { break } }
            probs.removeLast(probs.count - keep)
            let s = probs.reduce(0, +)
            probs = probs.map { $0 / s }
        }
        let u = try Tensor.rand([1], seed: o.seed &* 7_919 &+ UInt64(step)).value(at: 0)
        var acc = 0.0
        for (i, p) in probs.enumerated() {
            acc += p
            if u < acc { return scored[i].id }
        }
        return scored[probs.count - 1].id
    }
}
