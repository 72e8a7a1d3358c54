#!/usr/bin/env python3
"""Check qlora's GGUF exports in llama.cpp itself (through llama-cpp-python, which builds
llama.cpp from source: pip install llama-cpp-python, about 10 minutes on 2 cores; not for CI).

On SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_smollm2), qlora adds a LoRA adapter (r 8,
alpha 16, every linear, seed 1) with B filled with seeded normal draws (std 0.05) so the adapter
changes the output, then writes
  adapter.gguf   model:save_adapter(path, {format = "gguf"})
  merged.gguf    model:save(path, {type = "q8_0"})  (the adapter folded into the weights)
and its own f32 logits for a chat prompt, with and without the adapter, and its greedy text.

Checks:
  adapter (f32) qlora also exports the base without the adapter as an F32 GGUF; llama.cpp runs it
            with adapter.gguf: with f32 weights on both sides the logits must match qlora's
            base + adapter as closely as llama.cpp's base alone does (f16 KV cache: about 1.6e-2;
            ratio <= 1.5) and 50 times closer than the adapter's own effect. Measured: base
            1.59e-2, base + adapter 2.14e-2, adapter effect 6.84.
  adapter   llama.cpp loads base + adapter.gguf (Llama(lora_path=...)); its logits match
            qlora's base + adapter logits. llama.cpp multiplies Q4_1 weights with activations
            rounded to 8 bits, so its own base logits differ from qlora's f32 ones; the check is
            that base+adapter in llama.cpp is as close to qlora as llama.cpp's base is (ratio of
            max abs diffs <= 1.5), and that the change the adapter makes to the logits in
            llama.cpp correlates with the change it makes in qlora (> 0.9; llama.cpp's 8-bit activations
            and f16 KV cache leave max abs logits differences of about 1.3 on the base alone).
            Measured (all-linear, std 0.05): base diff 1.275, base+adapter 1.031, correlation 0.948.
  merged    llama.cpp loads merged.gguf and generates (greedy, 24 tokens) the same token ids as
            qlora's greedy generation from the merged model it exported.

Usage: /root/peer-env/bin/python scripts/check_gguf_llamacpp.py [--gguf PATH] [--qlora BIN]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_GGUF = os.path.join(os.environ.get("QLORA_MODELS", os.path.expanduser("~/.cache/qlora/models")),
                            "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

LUA = r'''
local q = require("qlora")
local src, out = arg[1], arg[2]
local m = q.load_model(src)
local tok = m:tokenizer()
local ids = tok:encode(PROMPT)
local f = io.open(out .. "/ids.txt", "w"); f:write(table.concat(ids, " ")); f:close()
local x = q.tensor({ ids }, { dtype = "i64" })
local base = m:forward(x)
m:save(out .. "/base-f32.gguf", { type = "f32" })
local targets = arg[3] == "all-linear" and "all-linear" or {}
if type(targets) == "table" then for t in arg[3]:gmatch("[^,]+") do targets[#targets + 1] = t end end
m:add_lora({ r = 8, alpha = 16, targets = targets, seed = 1 })
for i, p in ipairs(m:parameters({ trainable = true })) do
  local t = p.tensor or p[2]
  if p.name and p.name:find("lora_B", 1, true) or (p[1] and p[1]:find("lora_B", 1, true)) then
    t:copy_(q.randn(t:shape(), { seed = 100 + i, std = 0.05 }))
  end
end
local adapted = m:forward(x)
m:save_adapter(out .. "/adapter.gguf", { format = "gguf" })
m:save(out .. "/merged.gguf", { type = "q8_0" })
local merged = q.load_model(out .. "/merged.gguf")
local gen = merged:generate(ids, { max_tokens = 24 })
f = io.open(out .. "/gen.txt", "w"); f:write(table.concat(gen, " ")); f:close()
q.save_tensors(out .. "/logits.safetensors", { base = base, adapted = adapted })
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--qlora", default=os.path.join(ROOT, ".build", "release", "qlora"))
    ap.add_argument("--targets", default="all-linear", help="LoRA targets: all-linear or a comma list (q_proj,v_proj)")
    args = ap.parse_args()
    from llama_cpp import Llama
    from safetensors.numpy import load_file

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "run.lua")
        open(script, "w").write("PROMPT = " + repr(PROMPT).replace("'", '"') + "\n" + LUA)
        p = subprocess.run([args.qlora, "run", script, args.gguf, tmp, args.targets], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"qlora failed:\n{p.stdout}\n{p.stderr}")
        ids = [int(t) for t in open(os.path.join(tmp, "ids.txt")).read().split()]
        ours = load_file(os.path.join(tmp, "logits.safetensors"))
        q_base, q_adapted = ours["base"][0], ours["adapted"][0]

        def logits(model=args.gguf, **kw):
            llm = Llama(model_path=model, n_ctx=256, logits_all=True, verbose=False, n_threads=2, **kw)
            llm.eval(ids)
            return np.array(llm.scores[:len(ids)])

        l_base = logits()
        l_adapted = logits(lora_path=os.path.join(tmp, "adapter.gguf"))
        d_base = float(np.abs(l_base - q_base).max())
        d_adapted = float(np.abs(l_adapted - q_adapted).max())
        effect = float(np.abs(q_adapted - q_base).max())
        # the same adapter on an F32 base (qlora's own dense export of the dequantized base): here
        # llama.cpp's arithmetic is f32 too, so it must agree with qlora closely
        base32 = os.path.join(tmp, "base-f32.gguf")
        f_base = logits(model=base32)
        f_adapted = logits(model=base32, lora_path=os.path.join(tmp, "adapter.gguf"))
        e_base = float(np.abs(f_base - q_base).max())
        e_adapted = float(np.abs(f_adapted - q_adapted).max())
        ok32 = e_adapted <= 1.5 * e_base + 1e-3 and e_adapted < effect / 50
        failures += not ok32
        print(f"adapter {'ok  ' if ok32 else 'FAIL'} on an F32 base in llama.cpp: max abs logits diff vs qlora: base {e_base:.2e}, "
              f"base+adapter {e_adapted:.2e} (the adapter moves the logits by up to {effect:.3f})")
        # what the adapter adds, in each: llama.cpp's rounding of the base largely cancels
        delta_l, delta_q = l_adapted - l_base, q_adapted - q_base
        d_delta = float(np.abs(delta_l - delta_q).max())
        corr = float(np.corrcoef(delta_l.ravel(), delta_q.ravel())[0, 1])
        ok = d_adapted <= 1.5 * d_base + 1e-3 and corr > 0.9
        failures += not ok
        print(f"adapter {'ok  ' if ok else 'FAIL'} llama.cpp vs qlora max abs logits diff: base {d_base:.4f}, "
              f"base+adapter {d_adapted:.4f}; the adapter changes qlora's logits by up to {effect:.3f}; "
              f"the adapter's change in llama.cpp vs qlora: max abs diff {d_delta:.4f}, correlation {corr:.5f}")

        llm = Llama(model_path=os.path.join(tmp, "merged.gguf"), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
        toks = list(ids)
        out = []
        llm.reset()
        llm.eval(toks)
        eos = llm.token_eos()
        for _ in range(24):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if nxt == eos:
                break
            out.append(nxt)
            llm.eval([nxt])
        mine = [int(t) for t in open(os.path.join(tmp, "gen.txt")).read().split()]
        if eos in mine:
            mine = mine[:mine.index(eos)]
        ok = mine == out
        failures += not ok
        text = llm.detokenize(out).decode("utf-8", "replace")
        print(f"merged  {'ok  ' if ok else 'FAIL'} q8_0 export, greedy in llama.cpp: {text!r}")
        if not ok:
            print(f"   qlora     {mine}\n   llama.cpp {out}")
    print(f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
