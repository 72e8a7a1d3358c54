#!/usr/bin/env python3
# Checks `qlora generate MODEL_DIR --chat QUESTION [--system TEXT]` against transformers: the
# same chat-templated prompt ids (apply_chat_template with a generation prompt) and the same
# greedy text from `generate`. Not a CI test (it needs torch, transformers and a real model).
#   python scripts/check_chat_generate.py MODEL_DIR [--max-tokens N] [--qlora PATH]
import argparse, subprocess, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("model_dir")
p.add_argument("--max-tokens", type=int, default=48)
p.add_argument("--qlora", default=".build/release/qlora")
args = p.parse_args()

QUESTIONS = [
    (None, "What is the capital of France?"),
    ("You are a concise assistant.", "Name three primary colours."),
    (None, "Write a haiku about autumn leaves."),
    ("Answer with a single number.", "How many legs does a spider have?"),
]

tok = AutoTokenizer.from_pretrained(args.model_dir)
model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
model.eval()
same = 0
for system, question in QUESTIONS:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_tokens, do_sample=False)
    want = tok.decode(out[0][len(ids):], skip_special_tokens=True)
    cmd = [args.qlora, "generate", args.model_dir, "--chat", question, "--max-tokens", str(args.max_tokens)]
    if system:
        cmd += ["--system", system]
    got = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if got.endswith("\n"):
        got = got[:-1]
    ok = got == want
    same += ok
    print("%s  %r\n   transformers: %r\n   qlora:        %r" % ("SAME" if ok else "DIFF", question, want, got))
print("%d of %d answers identical" % (same, len(QUESTIONS)))
sys.exit(0 if same == len(QUESTIONS) else 1)
