// `qlora quantize MODEL_DIR OUT_DIR`: loads a model with its decoder linears quantized on load
// (one f32 tensor at a time), writes it as a Hugging Face directory in bitsandbytes' 4-bit layout
// (what `model:save(dir, {quantized = true})` writes), and copies the tokenizer and generation
// files beside it.

import Foundation
import IO
import NN
import Quant
import Tensor

enum QuantizeCommand {
    static let help = """
    usage: qlora quantize MODEL_DIR OUT_DIR [--type nf4|fp4] [--block N]
    (MODEL_DIR may also be a .gguf file: its weights are dequantized, then quantized; its tokenizer
    is written as tokenizer.json and its chat template as chat_template.jinja; dense tensors
    default to bf16)
                          [--double-quant | --no-double-quant] [--dtype f32|bf16|f16] [--force]

    Quantizes a model's decoder linears to 4-bit while loading it (one tensor at a time) and
    writes OUT_DIR in bitsandbytes' 4-bit layout with a quantization_config that transformers
    reads: config.json, model.safetensors, and copies of tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, generation_config.json, tokenizer.model and chat_template.jinja when
    MODEL_DIR has them. Embeddings, norms and lm_head stay dense. A checkpoint that is already
    4-bit is re-saved as it is (asking for another format is an error).

    options:
      --type nf4|fp4        4-bit data type (default nf4)
      --block N             values per absmax block: a power of two from 32 to 4096 (default 64)
      --double-quant        quantize the absmax values too (the default)
      --no-double-quant     keep one f32 absmax per block
      --dtype f32|bf16|f16  dtype of the dense tensors written (default: as MODEL_DIR stores them)
      --force               write into OUT_DIR even if it is not empty (files of the same
                            names are replaced, others are left as they are)

    output: the format, the load+quantize and write times, the weight bytes before and after,
    and the files copied.

    """ + ExitStatus.helpText + """

      (2 also when OUT_DIR is not empty and --force is not given, or is MODEL_DIR itself)
    """

    static func run(_ args: [String]) throws -> Int32 {
        let spec = CommandSpec(options: ["type": .value("nf4 or fp4"), "block": .value("a power of two from 32 to 4096"),
                                         "double-quant": .flag, "no-double-quant": .flag,
                                         "dtype": .value("f32, bf16 or f16"), "force": .flag],
                               positionals: ["MODEL_DIR", "OUT_DIR"])
        let a = try CommandLineArgs(command: "quantize", args, spec)
        if a.wantsHelp { print(help); return ExitStatus.success }
        let dir = try CommandLineArgs.modelDirectory(a.positionals[0])
        let out = a.positionals[1]
        if a.has("double-quant") && a.has("no-double-quant") {
            throw UsageError("--double-quant and --no-double-quant contradict each other (give one)")
        }
        let type = QuantType(rawValue: try a.choice("type", ["nf4", "fp4"]) ?? "nf4") ?? .nf4
        let block = try a.int("block", min: 1, default: 64, what: "a power of two from 32 to 4096")
        let options: QuantOptions
        do { options = try QuantOptions(type: type, block: block, doubleQuant: !a.has("no-double-quant")) } catch {
            throw UsageError("option --block expects a power of two from 32 to 4096, got '\(block)'")
        }
        let dtype = try a.choice("dtype", ["f32", "bf16", "f16"]).flatMap { DType.parse($0) }
        try checkOutput(out, source: dir, force: a.has("force"))

        let gguf = GGUFModel.isGGUF(dir)
        let configPath = dir + "/config.json"
        if !gguf && !FileManager.default.fileExists(atPath: configPath) {
            throw CommandFailure("\(dir): no config.json (expected a Hugging Face model directory or a .gguf file)")
        }
        let stored = gguf ? nil : try ModelConfigFile.load(configPath).1
        let asked = a.string("type") != nil || a.string("block") != nil || a.has("double-quant") || a.has("no-double-quant")
        if let s = stored, asked, s.options.type != options.type || s.options.doubleQuant != options.doubleQuant || options.block != 64 {
            throw CommandFailure("\(dir) is already 4-bit (\(describe(s.options))); re-quantizing to \(describe(options)) is not supported")
        }
        let sourceFiles = gguf ? [dir] : try ModelFiles.weightFiles(in: dir)
        let before = sourceFiles.reduce(0) { $0 + fileSize($1) }
        var save = SaveOptions()
        save.dtype = try dtype ?? (gguf ? .bf16 : storedDenseDType(sourceFiles))
        save.quantized = stored?.options ?? options

        print("qlora quantize: \(dir) -> \(out)")
        print(label("format") + "\(describe(stored?.options ?? options))\(stored != nil ? " (as stored)" : ""), dense tensors \(save.dtype.name)")
        let t0 = monotonicSeconds()
        let model = try ModelLoader.load(dir, LoadOptions(quant: options))
        let t1 = monotonicSeconds()
        print(String(format: label("load+quantize") + "%.3f s", t1 - t0))
        try ModelSaver.save(model, to: out, save)
        var copied: [String] = []
        if gguf {
            // the GGUF tokenizer as tokenizer.json (and its chat template), so the directory is whole
            copied += try GGUFModel.writeTokenizerFiles(from: dir, to: out)
        }
        for name in ModelFiles.companionFiles where !gguf && FileManager.default.fileExists(atPath: dir + "/" + name) {
            let dest = out + "/" + name
            // Written like every save: only a regular file (or nothing) at dest is replaced.
            do { try AtomicFile.write(dest, bytes: try readFileBytes(path: dir + "/" + name)) } catch let e as IOError {
                throw CommandFailure("cannot copy \(name): \(e.description)")
            }
            copied.append(name)
        }
        let t2 = monotonicSeconds()
        print(String(format: label("write") + "%.3f s", t2 - t1))
        let after = fileSize(out + "/model.safetensors")
        print(label("weights before") + "\(formatBytes(before)) (\(formatCount(before)) B)")
        print(label("weights after") + "\(formatBytes(after)) (\(formatCount(after)) B), " + String(format: "%.2fx smaller", Double(before) / Double(max(after, 1))))
        print(label("copied") + "\(copied.isEmpty ? "none" : copied.joined(separator: ", "))")
        print(String(format: label("total time") + "%.3f s", t2 - t0))
        return ExitStatus.success
    }

    static func label(_ name: String) -> String { (name + ":").padding(toLength: 16, withPad: " ", startingAt: 0) }

    static func describe(_ o: QuantOptions) -> String {
        "\(o.type.rawValue), block \(o.block), \(o.doubleQuant ? "double quant" : "no double quant")"
    }

    /// OUT_DIR may not exist, or be an empty directory; a non-empty one only with --force.
    /// It may not be MODEL_DIR, by whatever path (a symlink, "MODEL_DIR/new/..").
    static func checkOutput(_ out: String, source: String, force: Bool) throws {
        if physicalPath(out) == physicalPath(source) {
            throw UsageError("OUT_DIR is MODEL_DIR; write the quantized model to another directory")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw UsageError("OUT_DIR '\(out)' exists and is not a directory") }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
        if !entries.isEmpty && !force {
            throw UsageError("OUT_DIR '\(out)' is not empty (pass --force to write into it)")
        }
    }

    /// The directory `path` names once it exists: walked one component at a time, each
    /// existing prefix with its symlinks resolved, the components not there yet taken as the
    /// plain directories that creating them makes (so "new/.." is where "new" would be made).
    static func physicalPath(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var current = "/"
        for part in absolute.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { current = (current as NSString).deletingLastPathComponent; continue }
            current = current == "/" ? "/" + part : current + "/" + part
            if FileManager.default.fileExists(atPath: current) {
                current = URL(fileURLWithPath: current).resolvingSymlinksInPath().path
            }
        }
        return current
    }

    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// The dtype the source stores its embeddings in (f32 when it is not a float dtype we write).
    static func storedDenseDType(_ files: [String]) throws -> DType {
        for path in files {
            let f = try SafetensorsFile(path: path)
            if let e = f.entry(named: "model.embed_tokens.weight") {
                switch e.dtype {
                case .bf16: return .bf16
                case .f16: return .f16
                default: return .f32
                }
            }
        }
        return .f32
    }
}
