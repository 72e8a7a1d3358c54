// `qlora generate MODEL_DIR --prompt TEXT` (or `--chat TEXT [--system TEXT]`): loads a model (4-bit
// as stored, or quantized on load), optionally a PEFT LoRA adapter, and streams the generated text
// to stdout token by token. --chat renders the question with the model's own chat template and
// stops at the end of the assistant's turn.

import Foundation
import IO
import Jinja
import NN
import Quant

enum GenerateCommand {
    static let help = """
    usage: qlora generate MODEL_DIR (--prompt TEXT | --chat TEXT [--system TEXT])
                          [--adapter DIR] [--quant nf4|fp4|none]
                          [--compute f32|bf16|bnb_bf16] [--max-tokens N] [--stop TEXT]
                          [--temperature T] [--top-k K] [--top-p P] [--seed S]

    Loads the model in MODEL_DIR (a directory holding tokenizer.json, or a .gguf file with its
    tokenizer in the metadata; GGUF weights are dequantized to f32), encodes TEXT with its
    tokenizer and streams the generated text to stdout as each token arrives. Stops at an eos
    token, at the stop text, or after --max-tokens.

    With --chat, TEXT is a user message: the model's chat template (chat_template.jinja, or
    tokenizer_config.json's chat_template) renders it with a generation prompt, as transformers'
    apply_chat_template does, and generation stops at the template's end-of-turn token.

    options:
      --prompt TEXT       the prompt, continued as it stands
      --chat TEXT         a question for an instruct model, in its own chat template
      --system TEXT       a system message before the --chat question
      --adapter DIR       a PEFT LoRA adapter directory (adapter_config.json,
                          adapter_model.safetensors) applied on top of the model
      --quant nf4|fp4|none  decoder linears: quantize on load to nf4 / fp4 (block 64, double
                          quantization), or none (dense). Default: as stored (a bitsandbytes 4-bit
                          checkpoint stays 4-bit, a dense one stays dense)
      --compute C         arithmetic of the 4-bit layers: f32 (the default), bf16, or bnb_bf16
                          (bitsandbytes' CPU inference numbers, to compare with them)
      --max-tokens N      most new tokens (an integer >= 0, default 64)
      --stop TEXT         stop when the generated text contains TEXT (TEXT is not printed)
      --temperature T     0 is greedy (the default); > 0 samples
      --top-k K           sample among the K most likely tokens (0 = all, the default)
      --top-p P           sample within top-p probability mass, in (0, 1] (default 1)
      --seed S            sampling seed (an integer >= 0, default 0)

    output: stdout gets the generated text only (the prompt is not repeated), then a newline;
    stderr gets one line with the token count and tokens per second.

    """ + ExitStatus.helpText + """

      (1 also when MODEL_DIR has no tokenizer.json, or the adapter does not fit the model)
    """

    static func run(_ args: [String]) throws -> Int32 {
        let spec = CommandSpec(options: ["prompt": .value("the prompt text"), "adapter": .value("an adapter directory"),
                                         "quant": .value("nf4, fp4 or none"), "max-tokens": .value("an integer >= 0"),
                                         "temperature": .value("a number >= 0"), "top-k": .value("an integer >= 0"),
                                         "top-p": .value("a number in (0, 1]"), "seed": .value("an integer >= 0"),
                                         "compute": .value("f32, bf16 or bnb_bf16"), "stop": .value("the stop text"),
                                         "chat": .value("a user message"), "system": .value("a system message")],
                               positionals: ["MODEL_DIR"])
        let a = try CommandLineArgs(command: "generate", args, spec)
        if a.wantsHelp { print(help); return ExitStatus.success }
        let dir = try CommandLineArgs.modelDirectory(a.positionals[0])
        let gguf = GGUFModel.isGGUF(dir)
        let chat = a.string("chat")
        let system = a.string("system")
        if chat != nil && a.string("prompt") != nil { throw UsageError("give --prompt TEXT or --chat TEXT, not both") }
        if system != nil && chat == nil { throw UsageError("--system needs --chat TEXT") }
        guard let prompt = a.string("prompt") ?? chat else {
            throw UsageError("missing --prompt TEXT (the text to continue) or --chat TEXT (a question)")
        }
        let adapter = try a.string("adapter").map { try CommandLineArgs.existingDirectory($0, "--adapter DIR") }
        let quant = try a.choice("quant", ["nf4", "fp4", "none"])
        let compute = try a.choice("compute", ComputeType.allCases.map { $0.rawValue }).flatMap { ComputeType(rawValue: $0) }
        var o = GenerationOptions()
        o.maxTokens = try a.int("max-tokens", min: 0, default: 64)
        o.temperature = try a.double("temperature", 0...Double.greatestFiniteMagnitude, what: "a number >= 0", default: 0)
        o.topK = try a.int("top-k", min: 0, default: 0)
        o.topP = try a.double("top-p", Double.leastNonzeroMagnitude...1, what: "a number in (0, 1]", default: 1)
        o.seed = UInt64(try a.int("seed", min: 0, default: 0))
        let stop = a.string("stop")
        if stop == "" { throw UsageError("--stop expects a non-empty text") }

        // Check the cheap things before reading any weight.
        let configPath = dir + "/config.json"
        var stored: CheckpointQuantization? = nil
        var ggufTokenizer: Tokenizer? = nil
        if gguf {
            guard let t = try GGUFModel.tokenizer(dir) else {
                throw CommandFailure("\(dir): the GGUF file has no tokenizer (generate encodes the prompt with the model's tokenizer)")
            }
            ggufTokenizer = t
        } else {
            guard FileManager.default.fileExists(atPath: configPath) else {
                throw CommandFailure("\(dir): no config.json (expected a Hugging Face model directory or a .gguf file)")
            }
            guard FileManager.default.fileExists(atPath: dir + "/tokenizer.json") else {
                throw CommandFailure("\(dir): no tokenizer.json (generate encodes the prompt with the model's tokenizer)")
            }
            stored = try ModelConfigFile.load(configPath).1
        }
        var load = LoadOptions()
        if let c = compute { load.compute = c }
        if let q = quant, q != "none" {
            let options = try QuantOptions(type: QuantType(rawValue: q) ?? .nf4, block: 64, doubleQuant: true)
            if let s = stored, s.options.type != options.type {
                throw CommandFailure("\(dir) is stored in 4-bit \(s.options.type.rawValue); it cannot be loaded as \(q)")
            }
            load.quant = options
        } else if quant == "none", let s = stored {
            throw CommandFailure("\(dir) is stored in 4-bit \(s.options.type.rawValue); --quant none cannot restore dense weights")
        }
        let tokenizer = try ggufTokenizer ?? Tokenizer(path: dir)
        var chatPrompt: (ids: [Int], stopIds: [Int], text: String)? = nil
        if let chat {
            guard try tokenizer.chatTemplateSource() != nil else {
                throw CommandFailure("\(dir): no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json); use --prompt")
            }
            var msgs: [Value] = []
            if let system { msgs.append(.dict(OrderedDict([("role", .string("system")), ("content", .string(system))]))) }
            msgs.append(.dict(OrderedDict([("role", .string("user")), ("content", .string(chat))])))
            chatPrompt = try tokenizer.chatPrompt(msgs)
        }
        let model = try ModelLoader.load(dir, load)
        if let ad = adapter { try PEFTAdapter.load(model, from: ad, as: "default") }
        o.stopIds = model.config.eosTokenIds + (chatPrompt?.stopIds ?? tokenizer.eosIds)

        let ids = try chatPrompt?.ids ?? tokenizer.encode(prompt)
        if ids.isEmpty { throw UsageError("--prompt '\(prompt)' encodes to no tokens (give some text)") }
        if let id = ids.first(where: { $0 >= model.config.vocabSize }) {
            throw CommandFailure("the prompt has token id \(id), but the model's vocab_size is \(model.config.vocabSize) (tokenizer.json does not fit this model)")
        }
        var stream = TextStream(tokenizer, stop: stop)
        let t0 = monotonicSeconds()
        let out = try model.generate(ids, o) { id in
            try stream.append(id)
            return !stream.stopped
        }
        try stream.finish()
        let seconds = monotonicSeconds() - t0
        let full = ids.count + out.count >= model.config.maxPositions && out.count < o.maxTokens
        let note = full ? "; reached max_position_embeddings \(model.config.maxPositions)" : ""
        printError(String(format: "[%d tokens in %.2f s, %.1f tokens/s", out.count, seconds, Double(out.count) / max(seconds, 1e-9)) + note + "]")
        return ExitStatus.success
    }
}

/// Writes the text of a growing list of token ids to stdout as it grows: each step decodes all
/// ids (special tokens left out) and writes the bytes past what was written. A decode ending in
/// U+FFFD waits for the next token (a character split across byte-level tokens). With a stop
/// text, the text is cut where it first appears (`stopped` is then true), and the last
/// `stop.count - 1` bytes wait until they cannot be the start of it.
struct TextStream {
    let tokenizer: Tokenizer
    let stop: [UInt8]
    var ids: [Int] = []
    var written: [UInt8] = []
    private(set) var stopped = false
    init(_ tokenizer: Tokenizer, stop: String? = nil) {
        self.tokenizer = tokenizer
        self.stop = Array((stop ?? "").utf8)
    }

    mutating func append(_ id: Int) throws {
        ids.append(id)
        try flush(final: false)
    }

    mutating func finish() throws {
        try flush(final: true)
        emit([10])
    }

    private mutating func flush(final: Bool) throws {
        if stopped { return }
        var text = Array(try tokenizer.decode(ids, skipSpecialTokens: true).utf8)
        if let at = firstIndex(of: stop, in: text) {
            text = Array(text[..<at])
            stopped = true
        } else if !final && !stop.isEmpty {
            text = Array(text.dropLast(stop.count - 1))
        }
        if !final && !stopped && text.count >= 3 && Array(text.suffix(3)) == [0xEF, 0xBF, 0xBD] { return }
        // The shared prefix with what is out already (a decoder may rewrite a leading space).
        var same = 0
        while same < written.count && same < text.count && written[same] == text[same] { same += 1 }
        if same < text.count { emit(Array(text[same...])) }
        written = text
    }

    private func firstIndex(of needle: [UInt8], in hay: [UInt8]) -> Int? {
        if needle.isEmpty || hay.count < needle.count { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }

    private func emit(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { _ = fwrite($0.baseAddress, 1, $0.count, stdout) }
        fflush(stdout)
    }
}
