// `qlora info FILE.gguf [--json]`: a GGUF file's header (version, alignment, tensor count and
// bytes per tensor type), the model config qlora reads from its metadata, the tokenizer
// (kind, pre-tokenizer, vocabulary, bos / eos, chat template) and the parameter counts. Only
// the header is read; no tensor is decoded.

import Foundation
import IO
import NN

enum GGUFInfo {
    static func report(_ path: String, json: Bool) throws -> String {
        let f = try GGUFFile(path: path)
        let c = try GGUFModel.config(f)
        var byType: [(String, Int, Int)] = [] // type, tensors, bytes
        for t in f.tensors {
            let name = t.type.description
            if let i = byType.firstIndex(where: { $0.0 == name }) { byType[i].1 += 1; byType[i].2 += t.byteCount } else {
                byType.append((name, 1, t.byteCount))
            }
        }
        byType.sort { $0.2 > $1.2 }
        let kind = (try? f.string("tokenizer.ggml.model")) ?? nil
        let pre = (try? f.string("tokenizer.ggml.pre")) ?? nil
        let vocab = (try? f.array("tokenizer.ggml.tokens"))??.count
        let template = (try? f.string("tokenizer.chat_template")) ?? nil
        let params = c.parameterCounts
        if json {
            func int(_ v: Int) -> JSONValue { .int(Int64(v)) }
            let obj = JSONObject([
                ("path", .string(path)), ("format", "gguf"), ("version", int(f.version)), ("file_bytes", int(f.fileSize)),
                ("architecture", .string((try? f.string("general.architecture")) ?? nil ?? "")),
                ("name", ((try? f.string("general.name")) ?? nil).map { .string($0) } ?? .null),
                ("hidden_size", int(c.hiddenSize)), ("num_hidden_layers", int(c.numLayers)),
                ("num_attention_heads", int(c.numHeads)), ("num_key_value_heads", int(c.numKVHeads)), ("head_dim", int(c.headDim)),
                ("intermediate_size", int(c.intermediateSize)), ("vocab_size", int(c.vocabSize)),
                ("rope_theta", .double(c.ropeTheta)), ("rms_norm_eps", .double(c.rmsNormEps)),
                ("max_position_embeddings", int(c.maxPositions)), ("tie_word_embeddings", .bool(c.tieWordEmbeddings)),
                ("tensors", int(f.tensors.count)),
                ("tensor_types", .object(JSONObject(byType.map { ($0.0, .object(JSONObject([("tensors", int($0.1)), ("bytes", int($0.2))]))) }))),
                ("tokenizer", kind.map { .string($0) } ?? .null), ("pre_tokenizer", pre.map { .string($0) } ?? .null),
                ("tokenizer_vocab", vocab.map { int($0) } ?? .null), ("chat_template", .bool(template != nil)),
                ("parameters", int(params.total)),
            ])
            return JSONValue.object(obj).serialized(pretty: true)
        }
        func row(_ k: String, _ v: String) -> String { k.padding(toLength: 20, withPad: " ", startingAt: 0) + v }
        var lines = [
            "\(path)",
            row("format", "GGUF v\(f.version), alignment \(f.alignment), \(f.tensors.count) tensors, \(formatBytes(f.fileSize))"),
            row("name", ((try? f.string("general.name")) ?? nil) ?? "-"),
            row("architecture", "\((try? f.string("general.architecture")) ?? nil ?? "") (read as \(c.architecture))"),
            row("layers", "\(c.numLayers), hidden \(c.hiddenSize), intermediate \(c.intermediateSize)"),
            row("attention", "heads \(c.numHeads), kv heads \(c.numKVHeads), head_dim \(c.headDim)\(c.attentionBias ? ", q/k/v bias" : "")"),
            row("rope", "theta \(c.ropeTheta), max positions \(c.maxPositions)"),
            row("vocab", "\(c.vocabSize), tied embeddings: \(c.tieWordEmbeddings ? "yes" : "no")"),
        ]
        for (t, n, b) in byType { lines.append(row("  " + t, "\(n) tensors, \(formatBytes(b))")) }
        lines.append(row("tokenizer", kind.map { "\($0)\(pre.map { ", pre \($0)" } ?? ""), \(vocab ?? 0) tokens, bos \(c.bosTokenId.map(String.init) ?? "-"), eos \(c.eosTokenIds.map(String.init).joined(separator: ","))" } ?? "none"))
        lines.append(row("chat template", template.map { "yes (\($0.utf8.count) bytes)" } ?? "no"))
        lines.append(row("parameters", "\(params.total)"))
        return lines.joined(separator: "\n")
    }
}
