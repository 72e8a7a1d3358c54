// `qlora info MODEL_DIR [--json]`: a model directory's architecture, stored weights, parameter
// counts by kind and the memory its weights need dense and in 4-bit, from config.json and the
// safetensors headers only (no weight is read, so it is instant for any model size).

import Foundation
import IO
import NN
import Quant

enum InfoCommand {
    static let help = """
    usage: qlora info MODEL_DIR [--json]
           qlora info FILE.gguf [--json]

    Describes a Hugging Face model directory from its config.json and safetensors headers
    (no weights are read). MODEL_DIR holds config.json and model.safetensors (or shards named
    by model.safetensors.index.json).

    options:
      --json   print one JSON object instead of text

    output:
      architecture: model type, hidden size, layers, heads / kv heads / head_dim, intermediate
        size, vocab, RoPE, tied embeddings; the stored weights (files, tensors, bytes, dtype) and
        the quantization_config of a bitsandbytes 4-bit checkpoint; whether a tokenizer is there
      parameters: embeddings, attention, mlp, norms, lm_head and total
      memory for the weights at f32, bf16, nf4 and nf4 + double quantization. The 4-bit rows
        quantize decoder linears only (block 64: an f32 absmax per block, +0.5 bits/param; with
        double quantization a u8 code per block plus an f32 per 256 blocks); embeddings, norms
        and lm_head stay dense in bf16, as bitsandbytes keeps them. The last row is what qlora
        itself holds after loading with nf4 + double quantization (its dense parts are f32).

    """ + ExitStatus.helpText

    /// Dense bytes per parameter assumed for the parts 4-bit leaves dense (bf16).
    static let denseBytesFor4bit = 2

    static func run(_ args: [String]) throws -> Int32 {
        let a = try CommandLineArgs(command: "info", args, CommandSpec(options: ["json": .flag], positionals: ["MODEL_DIR"]))
        if a.wantsHelp { print(help); return ExitStatus.success }
        let dir = try CommandLineArgs.modelDirectory(a.positionals[0])
        if GGUFModel.isGGUF(dir) {
            print(try GGUFInfo.report(dir, json: a.has("json")))
            return ExitStatus.success
        }
        let report = try Report(dir)
        print(a.has("json") ? report.json() : report.text())
        return ExitStatus.success
    }

    struct Report {
        let dir: String
        let config: ModelConfig
        let quant: CheckpointQuantization?
        let rawQuantConfig: JSONObject?
        let files: [String]
        let fileBytes: Int
        let tensorCount: Int
        /// Floating dtypes of the dense tensors (not 4-bit parts), with their element counts.
        let denseDTypes: [(dtype: String, elements: Int)]
        let hasTokenizer: Bool

        init(_ dir: String) throws {
            self.dir = dir
            let configPath = dir + "/config.json"
            guard FileManager.default.fileExists(atPath: configPath) else {
                throw CommandFailure("\(dir): no config.json (expected a Hugging Face model directory)")
            }
            (config, quant) = try ModelConfigFile.load(configPath)
            rawQuantConfig = try JSONValue.load(path: configPath)["quantization_config"]?.objectValue
            files = try ModelFiles.weightFiles(in: dir)
            var bytes = 0, tensors = 0
            var dtypes: [(String, Int)] = []
            for path in files {
                let f = try SafetensorsFile(path: path)
                bytes += f.fileSize
                tensors += f.entries.count
                for e in f.entries where [.f32, .bf16, .f16, .f64].contains(e.dtype) {
                    if ["absmax", "quant_map", "nested_"].contains(where: { e.name.contains($0) }) { continue }
                    if let i = dtypes.firstIndex(where: { $0.0 == e.dtype.rawValue }) { dtypes[i].1 += e.elementCount } else {
                        dtypes.append((e.dtype.rawValue, e.elementCount))
                    }
                }
            }
            fileBytes = bytes
            tensorCount = tensors
            denseDTypes = dtypes.sorted { $0.1 > $1.1 }.map { (dtype: $0.0, elements: $0.1) }
            hasTokenizer = FileManager.default.fileExists(atPath: dir + "/tokenizer.json")
        }

        var ropeText: String {
            let theta = String(format: "%g", config.ropeTheta)
            switch config.ropeScaling {
            case .none: return "theta \(theta), no scaling"
            case .linear(let f): return "theta \(theta), linear scaling x\(String(format: "%g", f))"
            case .llama3(let f, let lo, let hi, let orig):
                return "theta \(theta), llama3 scaling x\(String(format: "%g", f)) (low \(String(format: "%g", lo)), high \(String(format: "%g", hi)), original \(orig) positions)"
            }
        }

        /// 4-bit formats the memory rows use: NF4 at bitsandbytes' default block of 64.
        static let nf4 = QuantOptions.defaultBlock(.nf4, doubleQuant: false)
        static let nf4dq = QuantOptions.defaultBlock(.nf4, doubleQuant: true)

        var memory: [(key: String, label: String, bytes: Int)] {
            [("f32", "f32", config.weightBytes(denseBytes: 4, quant: nil)),
             ("bf16", "bf16", config.weightBytes(denseBytes: 2, quant: nil)),
             ("nf4", "nf4 (block 64)", config.weightBytes(denseBytes: denseBytesFor4bit, quant: Report.nf4)),
             ("nf4_double_quant", "nf4 + double quant", config.weightBytes(denseBytes: denseBytesFor4bit, quant: Report.nf4dq)),
             ("qlora_nf4_double_quant", "nf4 + double quant, dense in f32 (qlora)", config.weightBytes(denseBytes: 4, quant: Report.nf4dq))]
        }

        /// Storage bits per parameter of the decoder linears in a 4-bit format.
        func linearBits(_ q: QuantOptions) -> Double {
            let shapes = config.decoderLinearShapes
            let n = shapes.reduce(0) { $0 + $1.weightCount }
            let b = shapes.reduce(0) { $0 + q.storageBytes(count: $1.weightCount) }
            return Double(b * 8) / Double(n)
        }

        var parameterRows: [(String, Int)] {
            let p = config.parameterCounts
            return [("embeddings", p.embeddings), ("attention", p.attention), ("mlp", p.mlp),
                    ("norms", p.norms), ("lm_head", p.lmHead), ("total", p.total)]
        }

        var storedDTypeText: String {
            let dense = denseDTypes.map { $0.dtype }.joined(separator: " + ")
            if let q = quant { return "4-bit \(q.options.type.rawValue) (decoder linears, packed U8) + \(dense.isEmpty ? "?" : dense)" }
            return dense.isEmpty ? "none" : dense
        }

        var quantText: String {
            guard let q = quant else { return "none (dense checkpoint)" }
            let compute = rawQuantConfig?["bnb_4bit_compute_dtype"]?.stringValue ?? "?"
            return "bitsandbytes 4-bit: \(q.options.type.rawValue), double quant \(q.options.doubleQuant ? "yes" : "no"), compute dtype \(compute)"
        }

        /// A note when the weight files do not hold what the config implies (dense checkpoints).
        var mismatchNote: String? {
            guard quant == nil else { return nil }
            let stored = denseDTypes.reduce(0) { $0 + $1.elements }
            let expected = config.parameterCount
            return stored == expected ? nil : "the weight files hold \(formatCount(stored)) parameters; config.json implies \(formatCount(expected))"
        }

        func text() -> String {
            let c = config
            var lines: [String] = []
            func row(_ k: String, _ v: String) { lines.append(k.padding(toLength: 18, withPad: " ", startingAt: 0) + v) }
            row("model", dir)
            row("architecture", "\(c.architecture) (model_type \(c.modelType))")
            row("hidden size", "\(c.hiddenSize)")
            row("layers", "\(c.numLayers)")
            row("heads", "\(c.numHeads) (kv heads \(c.numKVHeads), head_dim \(c.headDim))")
            row("intermediate", "\(c.intermediateSize)")
            row("vocab", "\(c.vocabSize)")
            row("rope", "\(ropeText); max positions \(c.maxPositions)")
            row("tied embeddings", c.tieWordEmbeddings ? "yes" : "no")
            row("stored dtype", storedDTypeText)
            let names = files.map { ($0 as NSString).lastPathComponent }
            let location = names == ["model.safetensors"] ? names[0]
                : "\(names.count) shard\(names.count == 1 ? "" : "s") (model.safetensors.index.json)"
            row("weight files", "\(location), \(tensorCount) tensors, \(formatBytes(fileBytes))")
            row("quantization", quantText)
            row("tokenizer", hasTokenizer ? "tokenizer.json" : "none (generate needs tokenizer.json)")
            if let note = mismatchNote { row("note", note) }
            lines.append("")
            lines.append("parameters")
            for (k, n) in parameterRows {
                lines.append("  " + k.padding(toLength: 16, withPad: " ", startingAt: 0) + formatCount(n).leftPadded(16))
            }
            lines.append("")
            lines.append("memory for the weights")
            for m in memory {
                var extra = ""
                if m.key == "nf4" { extra = String(format: "  (linears %.3f bits/param)", linearBits(Report.nf4)) }
                if m.key == "nf4_double_quant" { extra = String(format: "  (linears %.3f bits/param)", linearBits(Report.nf4dq)) }
                lines.append("  " + m.label.padding(toLength: 40, withPad: " ", startingAt: 0) + formatBytes(m.bytes).leftPadded(12)
                             + "  " + formatCount(m.bytes).leftPadded(16) + " B" + extra)
            }
            lines.append("4-bit rows: decoder linears in 4-bit; embeddings, norms and lm_head dense in bf16 (as bitsandbytes keeps them),")
            lines.append("except the last row: qlora keeps those dense parts in f32 after loading.")
            return lines.joined(separator: "\n")
        }

        func json() -> String {
            let c = config
            func int(_ v: Int) -> JSONValue { .int(Int64(v)) }
            var rope: JSONObject = ["theta": .double(c.ropeTheta)]
            switch c.ropeScaling {
            case .none: rope["scaling"] = .null
            case .linear(let f): rope["scaling"] = .object(["type": "linear", "factor": .double(f)])
            case .llama3(let f, let lo, let hi, let orig):
                rope["scaling"] = .object(["type": "llama3", "factor": .double(f), "low_freq_factor": .double(lo),
                                           "high_freq_factor": .double(hi), "original_max_position_embeddings": int(orig)])
            }
            let arch: JSONObject = [
                "architecture": .string(c.architecture), "model_type": .string(c.modelType),
                "hidden_size": int(c.hiddenSize), "num_hidden_layers": int(c.numLayers),
                "num_attention_heads": int(c.numHeads), "num_key_value_heads": int(c.numKVHeads),
                "head_dim": int(c.headDim), "intermediate_size": int(c.intermediateSize), "vocab_size": int(c.vocabSize),
                "max_position_embeddings": int(c.maxPositions), "rope": .object(rope),
                "tie_word_embeddings": .bool(c.tieWordEmbeddings), "attention_bias": .bool(c.attentionBias),
            ]
            var params = JSONObject()
            for (k, n) in parameterRows { params[k] = int(n) }
            var memoryObj = JSONObject()
            for m in memory { memoryObj[m.key] = int(m.bytes) }
            let o: JSONObject = [
                "model_dir": .string(dir),
                "architecture": .object(arch),
                "weights": .object([
                    "files": .array(files.map { .string(($0 as NSString).lastPathComponent) }),
                    "bytes": int(fileBytes), "tensors": int(tensorCount),
                    "dense_dtypes": .array(denseDTypes.map { .string($0.dtype) }),
                    "quantized_4bit": .bool(quant != nil),
                ]),
                "quantization_config": rawQuantConfig.map { .object($0) } ?? .null,
                "tokenizer": .bool(hasTokenizer),
                "parameters": .object(params),
                "memory_bytes": .object(memoryObj),
                "memory_assumptions": .object([
                    "block": 64, "dense_dtype_4bit": "bf16", "dense_dtype_qlora": "f32",
                    "nf4_linear_bits_per_param": .double(linearBits(Report.nf4)),
                    "nf4_double_quant_linear_bits_per_param": .double(linearBits(Report.nf4dq)),
                ]),
            ]
            return JSONValue.object(o).serialized(pretty: true)
        }
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
