// The files of a Hugging Face model directory: which safetensors files hold the weights (one
// model.safetensors, or the shards a model.safetensors.index.json names) and which files beside
// them describe the tokenizer and generation defaults.

import Foundation

public enum ModelFiles {
    /// Files besides config.json and the weights that travel with a model (copied when a model
    /// is re-saved in another layout).
    public static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "generation_config.json", "tokenizer.model", "chat_template.jinja"]

    /// Paths of the weight files of `dir`, in a stable order; errors name the missing file.
    public static func weightFiles(in dir: String) throws -> [String] {
        let single = dir + "/model.safetensors"
        let index = dir + "/model.safetensors.index.json"
        if FileManager.default.fileExists(atPath: single) { return [single] }
        guard FileManager.default.fileExists(atPath: index) else {
            throw IOError(path: dir, reason: "no model.safetensors or model.safetensors.index.json (qlora reads safetensors weights only)")
        }
        let json = try JSONValue.load(path: index)
        guard let map = json["weight_map"]?.objectValue else {
            throw IOError(path: index, reason: "missing \"weight_map\" object")
        }
        var names: [String] = []
        var seen = Set<String>()
        for (tensor, v) in map {
            guard let f = v.stringValue, !f.contains("/"), !f.isEmpty else {
                throw IOError(path: index, reason: "weight_map entry \"\(tensor)\" must name a file in the directory")
            }
            if seen.insert(f).inserted {
                names.append(f)
                if !FileManager.default.fileExists(atPath: dir + "/" + f) {
                    throw IOError(path: index, reason: "shard \"\(f)\" named in weight_map does not exist")
                }
            }
        }
        return names.map { dir + "/" + $0 }
    }
}
