#!/usr/bin/env python3
"""Check that qlora's LoRA adapters interoperate with Hugging Face PEFT and transformers.

qlora writes adapters with ``model:save_adapter(dir)`` in PEFT's layout (``adapter_config.json``
plus ``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` [r, in]
and ``...lora_B.weight`` [out, r], metadata ``{"format": "pt"}``) and reads PEFT adapters with
``model:load_adapter(dir)``. This script checks both directions on a small Llama directory:

  export   qlora adds a LoRA adapter (r 4, alpha 8, targets q_proj / v_proj / down_proj, seed 1),
           fills every LoRA matrix with seeded normal draws (so B is non-zero and the adapter
           changes the output), saves it and writes its logits for fixed token ids. PEFT then
           loads the adapter onto the transformers model: the config must be accepted, the file
           must hold exactly the keys, shapes and dtype PEFT expects (no missing or unexpected
           keys, no warnings about them), the loaded weights must equal the file, and the logits
           must match qlora's within 1e-4 (max abs diff).
  import   PEFT creates the same kind of adapter (random non-zero A and B) and saves it; qlora
           loads it with model:load_adapter; logits must match within 1e-4.
  export-patterns, import-patterns
           both directions with per-module ranks and alphas (rank_pattern / alpha_pattern) and
           rsLoRA scaling, to check that both sides read those config fields alike.
  export-predicate
           qlora selects the modules with a Lua function (layer 0's MLP only); the saved config
           must make PEFT build exactly those modules (no missing keys for other layers).
  export-overlap, import-overlap
           two rank_pattern / alpha_pattern keys match the same module (a short name and a full
           name); PEFT uses the first matching key in the config's order, which is sorted.
  import-regex
           PEFT's pattern keys are regular expressions matched against the end of the module
           name (re.match(r"(.*\.)?(KEY)$", name)); qlora must read them the same way.

Each check also measures how much the adapter changes the logits, and fails if that change is
not well above the tolerance (a check the adapter cannot fail would prove nothing).

Run it with a built qlora binary and a Python environment that has torch, transformers and peft
(kept outside the repository), for example:

    python3 -m venv $HOME/peer-env
    $HOME/peer-env/bin/pip install torch transformers peft
    swift build --product qlora
    $HOME/peer-env/bin/python scripts/check_peft.py --qlora .build/debug/qlora \\
        [--model Tests/fixtures/tiny-llama] [--keep DIR] [--verbose]

The model must be a float32 Llama-architecture Hugging Face directory that both qlora and
transformers can load (the default is the repository's tiny test model).

Exit status: 0 all checks passed, 1 a check failed, 2 skipped (torch / transformers / peft not
importable), 3 bad usage (e.g. the qlora binary or the model directory is missing).
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings

TOL = 1e-4
# The adapter must move the logits by at least this much, else the comparison proves nothing.
MIN_EFFECT = 100 * TOL
# Standard deviation of the random LoRA matrices (A and B) on both sides.
LORA_STD = 0.1

EXIT_OK, EXIT_FAIL, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 2, 3

LUA_SCRIPT = r'''
-- Written by scripts/check_peft.py: qlora's side of the PEFT interoperability check.
-- usage: qlora run this.lua MODE MODEL_DIR ADAPTER_DIR OUT.safetensors IDS [OPTIONS_JSON_FLAT]
--   MODE export: add a LoRA adapter, randomize it, save it to ADAPTER_DIR
--   MODE import: load the adapter in ADAPTER_DIR
--   IDS: rows of comma-separated token ids separated by ';'
--   writes {logits, base_logits} to OUT.safetensors
local q = require "qlora"
local mode, model_dir, adapter_dir, out_path, ids_arg, variant = ...
assert(mode == "export" or mode == "import", "mode must be export or import")

local ids = {}
for row in ids_arg:gmatch("[^;]+") do
  local r = {}
  for s in row:gmatch("%d+") do r[#r + 1] = tonumber(s) end
  ids[#ids + 1] = r
end

local model = q.load_model(model_dir)
local base_logits = model:forward(ids)

if mode == "export" then
  local opts = { r = 4, alpha = 8, targets = { "q_proj", "v_proj", "down_proj" }, seed = 1 }
  if variant == "patterns" then
    opts.rank_pattern = { v_proj = 2, down_proj = 6 }
    opts.alpha_pattern = { down_proj = 3 }
    opts.rslora = true
  elseif variant == "predicate" then
    -- only layer 0's MLP: the saved config must select exactly these modules
    opts.targets = function(m) return m.layer == 0 and m.name:find("%.mlp%.") ~= nil end
  elseif variant == "overlap" then
    -- two keys match layer 0's down_proj; PEFT uses the first in (sorted) order
    opts.rank_pattern = { down_proj = 2, ["model.layers.0.mlp.down_proj"] = 6 }
    opts.alpha_pattern = { down_proj = 3, ["model.layers.0.mlp.down_proj"] = 5 }
  elseif variant ~= "" and variant ~= nil then
    error("unknown variant " .. variant)
  end
  model:add_lora(opts)
  q.no_grad(function()
    for k, p in ipairs(model:parameters{ trainable = true }) do
      p.tensor:copy_(q.randn(p.tensor:shape(), { seed = k, std = LORA_STD }))
    end
  end)
  model:save_adapter(adapter_dir)
else
  model:load_adapter(adapter_dir)
end

local logits = model:forward(ids)
q.save_tensors(out_path, { logits = logits, base_logits = base_logits })
print("qlora side done: " .. mode)
'''


class Skip(Exception):
    pass


def import_peer():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import peft  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        raise Skip(str(e))


def setup_hint():
    return (
        "This check needs torch, transformers and peft. Set up an environment outside the\n"
        "repository and run the script with its Python:\n\n"
        "    python3 -m venv $HOME/peer-env\n"
        "    $HOME/peer-env/bin/pip install torch transformers peft\n"
        "    $HOME/peer-env/bin/python scripts/check_peft.py --qlora PATH_TO_qlora\n"
    )


class Capture:
    """Records Python warnings and WARNING+ log records from transformers / peft (and the root)."""

    def __init__(self):
        self.messages = []
        self._handler = None
        self._warnings = None
        self._loggers = []

    def __enter__(self):
        cap = self

        class H(logging.Handler):
            def emit(self, record):
                cap.messages.append("log %s: %s" % (record.name, record.getMessage()))

        self._handler = H(level=logging.WARNING)
        self._warnings = warnings.catch_warnings(record=True)
        self._recorded = self._warnings.__enter__()
        warnings.simplefilter("always")
        for name in ("transformers", "peft", ""):
            lg = logging.getLogger(name)
            lg.addHandler(self._handler)
            self._loggers.append(lg)
        return self

    def __exit__(self, *exc):
        for lg in self._loggers:
            lg.removeHandler(self._handler)
        for w in self._recorded:
            self.messages.append("warning %s: %s" % (w.category.__name__, w.message))
        self._warnings.__exit__(*exc)
        return False

    def key_problems(self):
        words = ("missing", "unexpected", "not initialized", "newly initialized", "unused", "ignored", "mismatch")
        return [m for m in self.messages if any(w in m.lower() for w in words)]


class Checker:
    def __init__(self, qlora, model_dir, work, verbose):
        import torch

        self.torch = torch
        self.qlora = qlora
        self.model_dir = model_dir
        self.work = work
        self.verbose = verbose
        self.results = []  # (name, ok, detail)
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        vocab = int(cfg["vocab_size"])
        g = torch.Generator().manual_seed(1234)
        self.ids = torch.randint(0, vocab, (2, 11), generator=g)
        self.ids[:, 0] = int(cfg.get("bos_token_id") or 1) % vocab
        self.lua = os.path.join(work, "check_peft.lua")
        with open(self.lua, "w") as f:
            f.write(LUA_SCRIPT.replace("LORA_STD", repr(LORA_STD)))

    # ---------------------------------------------------------------- helpers

    def log(self, *a):
        if self.verbose:
            print("   ", *a)

    def record(self, name, ok, detail):
        self.results.append((name, ok, detail))
        print("%s  %s: %s" % ("PASS" if ok else "FAIL", name, detail), flush=True)

    def run_qlora(self, mode, adapter_dir, variant=""):
        out = os.path.join(self.work, "qlora-%s-%s.safetensors" % (mode, variant or "plain"))
        ids_arg = ";".join(",".join(str(int(t)) for t in row) for row in self.ids.tolist())
        cmd = [self.qlora, "run", self.lua, mode, self.model_dir, adapter_dir, out, ids_arg, variant]
        self.log("$", " ".join(cmd))
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("qlora exited with status %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr))
        from safetensors.torch import load_file

        t = load_file(out)
        return t["logits"], t["base_logits"]

    def load_base(self):
        import transformers
        from transformers import AutoModelForCausalLM

        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        kw = {"dtype": self.torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": self.torch.float32}
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, **kw)
        model.eval()
        return model

    def logits(self, model):
        with self.torch.no_grad():
            return model(input_ids=self.ids).logits.float()

    def compare(self, name, ours, theirs, base):
        ours, theirs, base = ours.float(), theirs.float(), base.float()
        if tuple(ours.shape) != tuple(theirs.shape):
            self.record(name, False, "logits shapes differ: qlora %s, PEFT %s" % (tuple(ours.shape), tuple(theirs.shape)))
            return
        diff = (ours - theirs).abs().max().item()
        effect = (theirs - base).abs().max().item()
        ok = diff <= TOL and effect >= MIN_EFFECT
        detail = "max abs diff %.3e (tolerance %.0e); the adapter moves the logits by up to %.3e" % (diff, TOL, effect)
        if effect < MIN_EFFECT:
            detail += " -- too little for the comparison to mean anything (need >= %.0e)" % MIN_EFFECT
        self.record(name, ok, detail)

    # ---------------------------------------------------------------- checks

    def check_export(self, variant=""):
        """qlora saves an adapter; PEFT loads it."""
        import peft
        from peft import PeftModel, LoraConfig
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open

        tag = "export" + ("-" + variant if variant else "")
        adapter_dir = os.path.join(self.work, "qlora-adapter-" + (variant or "plain"))
        ours, ours_base = self.run_qlora("export", adapter_dir, variant)

        # The files as written.
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            raw_cfg = json.load(f)
        self.log("adapter_config.json:", json.dumps(raw_cfg, sort_keys=True))
        path = os.path.join(adapter_dir, "adapter_model.safetensors")
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            file_tensors = {k: f.get_tensor(k) for k in f.keys()}

        problems = []
        if meta.get("format") != "pt":
            problems.append("safetensors metadata format is %r, PEFT/transformers expect 'pt'" % meta.get("format"))
        dtypes = sorted({str(t.dtype) for t in file_tensors.values()})
        if dtypes != ["torch.float32"]:
            problems.append("tensor dtypes %s (expected float32 for a float32 model)" % dtypes)

        # The config, as PEFT parses it.
        with Capture() as cap_cfg:
            cfg = LoraConfig.from_pretrained(adapter_dir)
        expected = {"r": 4, "lora_alpha": 8}
        got = {"r": cfg.r, "lora_alpha": cfg.lora_alpha}
        if variant in ("", "patterns"):
            expected["target_modules"] = {"q_proj", "v_proj", "down_proj"}
            got["target_modules"] = set(cfg.target_modules or [])
        if variant == "patterns":
            expected.update({"rank_pattern": {"v_proj": 2, "down_proj": 6}, "alpha_pattern": {"down_proj": 3}, "use_rslora": True})
            got.update({"rank_pattern": dict(cfg.rank_pattern), "alpha_pattern": dict(cfg.alpha_pattern), "use_rslora": cfg.use_rslora})
        for k, v in expected.items():
            if got[k] != v:
                problems.append("config field %s: PEFT reads %r, expected %r" % (k, got[k], v))
        if str(getattr(cfg, "peft_type", "")) not in ("PeftType.LORA", "LORA"):
            problems.append("peft_type %r" % cfg.peft_type)
        if str(getattr(cfg, "task_type", "")) not in ("TaskType.CAUSAL_LM", "CAUSAL_LM"):
            problems.append("task_type %r" % cfg.task_type)
        for m in cap_cfg.key_problems():
            problems.append("while reading the config: " + m)

        # Loading onto the transformers model.
        base = self.load_base()
        theirs_base = self.logits(base)
        try:
            with Capture() as cap:
                model = PeftModel.from_pretrained(base, adapter_dir)
        except Exception as e:
            problems.append("PEFT cannot load the adapter: %s" % " ".join(str(e).split()))
            self.record(tag + ": adapter files accepted by PEFT", False, "; ".join(problems))
            return
        model.eval()
        for m in cap.key_problems():
            problems.append("PEFT reported: " + m)
        for m in cap.messages:
            if m not in cap.key_problems():
                self.log("note (not a failure):", m)

        # Keys and shapes: exactly what PEFT itself would save for this config.
        want = get_peft_model_state_dict(model)
        missing = sorted(set(want) - set(file_tensors))
        unexpected = sorted(set(file_tensors) - set(want))
        if missing:
            problems.append("keys PEFT expects but the file lacks: %s" % missing[:6])
        if unexpected:
            problems.append("keys in the file PEFT does not use: %s" % unexpected[:6])
        for k in sorted(set(want) & set(file_tensors)):
            if tuple(want[k].shape) != tuple(file_tensors[k].shape):
                problems.append("%s: file shape %s, PEFT shape %s" % (k, tuple(file_tensors[k].shape), tuple(want[k].shape)))
            elif not self.torch.equal(want[k].float(), file_tensors[k].float()):
                problems.append("%s: PEFT's loaded values differ from the file" % k)
        nonzero_b = all(file_tensors[k].abs().max().item() > 0 for k in file_tensors if ".lora_B." in k)
        if not nonzero_b:
            problems.append("some lora_B matrix is all zero (the Lua side did not randomize it)")

        self.record(tag + ": adapter files accepted by PEFT", not problems,
                    "%d tensors, keys/shapes/dtype/config as PEFT expects (peft %s)" % (len(file_tensors), peft.__version__)
                    if not problems else "; ".join(problems))

        base_diff = (ours_base - theirs_base).abs().max().item()
        self.record(tag + ": base logits qlora vs transformers", base_diff <= TOL,
                    "max abs diff %.3e (tolerance %.0e)" % (base_diff, TOL))
        self.compare(tag + ": logits qlora vs PEFT (qlora-saved adapter)", ours, self.logits(model), theirs_base)

    def check_import(self, variant=""):
        """PEFT saves an adapter; qlora loads it."""
        from peft import LoraConfig, get_peft_model

        tag = "import" + ("-" + variant if variant else "")
        adapter_dir = os.path.join(self.work, "peft-adapter-" + (variant or "plain"))
        self.torch.manual_seed(7)
        base = self.load_base()
        theirs_base = self.logits(base)
        kw = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
        if variant == "patterns":
            kw.update(rank_pattern={"v_proj": 2, "down_proj": 6}, alpha_pattern={"down_proj": 3}, use_rslora=True)
        elif variant == "regex":
            # PEFT matches pattern keys as regular expressions against the module name's tail
            kw.update(rank_pattern={r"layers\.0\.mlp\..*": 2}, alpha_pattern={r"layers\.0\..*_proj": 3})
        elif variant == "overlap":
            # two keys match layer 0's down_proj; PEFT uses the first in order (sorted, as it saves them)
            kw.update(alpha_pattern={"down_proj": 3, "model.layers.0.mlp.down_proj": 5})
        model = get_peft_model(base, LoraConfig(**kw))
        g = self.torch.Generator().manual_seed(11)
        with self.torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(self.torch.randn(p.shape, generator=g) * LORA_STD)
        model.eval()
        theirs = self.logits(model)
        model.save_pretrained(adapter_dir)
        self.log("PEFT adapter_config.json:", open(os.path.join(adapter_dir, "adapter_config.json")).read().replace("\n", " "))
        ours, ours_base = self.run_qlora("import", adapter_dir, variant)
        base_diff = (ours_base - theirs_base).abs().max().item()
        if base_diff > TOL:
            self.record(tag + ": base logits qlora vs transformers", False, "max abs diff %.3e" % base_diff)
        self.compare(tag + ": logits qlora vs PEFT (PEFT-saved adapter)", ours, theirs, theirs_base)

    def run_all(self):
        for fn, variant in ((self.check_export, ""), (self.check_import, ""),
                            (self.check_export, "patterns"), (self.check_import, "patterns"),
                            (self.check_export, "predicate"), (self.check_export, "overlap"),
                            (self.check_import, "regex"), (self.check_import, "overlap")):
            name = fn.__name__.replace("check_", "") + ("-" + variant if variant else "")
            try:
                fn(variant)
            except Exception as e:  # a crash is a failed check, reported with its cause
                self.record(name, False, "error: %s" % e)
                if self.verbose:
                    traceback.print_exc()


def main():
    ap = argparse.ArgumentParser(description="Check qlora's LoRA adapters against Hugging Face PEFT and transformers.")
    ap.add_argument("--qlora", required=True, help="path to the built qlora binary")
    ap.add_argument("--model", default=None, help="a float32 Llama Hugging Face directory (default: Tests/fixtures/tiny-llama)")
    ap.add_argument("--keep", default=None, help="write the adapters and logits into this directory and keep them")
    ap.add_argument("--verbose", "-v", action="store_true", help="print commands, configs and non-failing warnings")
    ap.error = lambda msg: (ap.print_usage(sys.stderr), print("check_peft.py: error: " + msg, file=sys.stderr), sys.exit(EXIT_USAGE))
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model_dir = os.path.abspath(args.model or os.path.join(root, "Tests", "fixtures", "tiny-llama"))
    qlora = os.path.abspath(args.qlora)
    if not (os.path.isfile(qlora) and os.access(qlora, os.X_OK)):
        print("check_peft.py: no executable qlora binary at %s" % qlora, file=sys.stderr)
        return EXIT_USAGE
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        print("check_peft.py: %s is not a model directory (no config.json)" % model_dir, file=sys.stderr)
        return EXIT_USAGE

    try:
        import_peer()
    except Skip as e:
        print("SKIPPED: %s\n\n%s" % (e, setup_hint()))
        return EXIT_SKIPPED

    import torch
    import transformers
    import peft

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print("qlora %s | model %s | torch %s, transformers %s, peft %s" % (
        qlora, model_dir, torch.__version__, transformers.__version__, peft.__version__), flush=True)

    if args.keep:
        work = os.path.abspath(args.keep)
        os.makedirs(work, exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="qlora-check-peft-")
    try:
        checker = Checker(qlora, model_dir, work, args.verbose)
        checker.run_all()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    failed = [r for r in checker.results if not r[1]]
    print("\nSUMMARY: %d checks, %d passed, %d failed" % (len(checker.results), len(checker.results) - len(failed), len(failed)))
    for name, ok, _ in checker.results:
        print("  %s  %s" % ("PASS" if ok else "FAIL", name))
    return EXIT_FAIL if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
