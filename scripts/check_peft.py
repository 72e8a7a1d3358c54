#!/usr/bin/env python3
"""Check that qlora's LoRA adapters interoperate with Hugging Face PEFT and transformers.

qlora writes adapters with ``model:save_adapter(dir)`` in PEFT's layout (``adapter_config.json``
plus ``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` [r, in]
and ``...lora_B.weight`` [out, r], metadata ``{"format": "pt"}``) and reads PEFT adapters with
``model:load_adapter(dir)``. This script checks both directions on a small Llama directory, and
that models saved with ``model:save(dir, {dtype =, quantized =})`` load in transformers (and
bitsandbytes):

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

  export-dora, import-dora
           DoRA (add_lora{dora = true} / use_dora=True): random non-zero A and B and a magnitude
           vector perturbed from its initial row norms (times 1 + N(0, 0.1)), both directions;
           the file must hold PEFT's lora_magnitude_vector keys and "use_dora": true.

Each adapter check also measures how much the adapter changes the logits, and fails if that
change is not well above the tolerance (a check the adapter cannot fail would prove nothing).

qlora's model:save is checked on the --model directory ("model") and on a model qlora builds with
q.llama{vocab=128, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, seed=1} ("qllama"):

  save-*-f32   transformers' from_pretrained loads the saved directory with no missing,
               unexpected or mismatched keys, every tensor it holds equals the file, and its
               logits match qlora's (before saving, and qlora reading the saved directory) within
               1e-4.
  save-*-bf16  the same with dtype = "bf16": transformers builds bf16 parameters from it; its
               logits (computed in float32) match the f32 model within 5e-2 and qlora reading the
               same bf16 directory within 1e-4.
  save-qllama-nf4, save-qllama128-nf4
               model:save{quantized = true} (NF4, block 64, double quantization) of the q.llama
               model, and of the same model with intermediate 128 (every in_features a multiple
               of the block, so bitsandbytes runs every layer). transformers + bitsandbytes load
               the 4-bit directory on the CPU without key problems, and the file holds exactly
               what they would save for the loaded model (keys, dtypes, shapes, values, the
               quant_state JSON). Weights: qlora's dequantized weight (model:base_weight of the
               reloaded directory) must equal, exactly, the file dequantized by definition in
               Python and bitsandbytes' dequantize_4bit (the latter only where in_features is a
               multiple of the block: bitsandbytes' CPU dequantize indexes absmax by row, which is
               wrong when blocks cross rows). Logits: qlora's 4-bit model vs bitsandbytes within
               2e-2 (bitsandbytes computes in bf16 on AVX512-BF16 CPUs whatever the compute dtype),
               and vs transformers in f32 holding the dequantized weights within 1e-4. bitsandbytes'
               CPU kernel cannot run a layer whose in_features is not a multiple of the block (it
               raises, also for weights it quantized itself), so those layers (the intermediate-96
               model's down_proj) run as dense f32 layers with the file's dequantized weights.
               These checks need bitsandbytes in the environment (pip install bitsandbytes); without
               it they fail (with that hint) rather than pass unseen.

Run it with a built qlora binary and a Python environment that has torch, transformers and peft
(kept outside the repository), for example:

    python3 -m venv $HOME/peer-env
    $HOME/peer-env/bin/pip install torch transformers peft bitsandbytes
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
# DoRA magnitudes are the row norms they start from times (1 + N(0, MAG_STD)).
MAG_STD = 0.1
# model:save with dtype = "bf16" rounds every weight: logits vs the f32 model within this.
BF16_TOL = 5e-2
# bitsandbytes' 4-bit CPU layers compute in bf16 on AVX512-BF16 CPUs whatever the compute dtype
# says: logits vs qlora's (f32) 4-bit model within this. The weights themselves must be exact.
NF4_TOL = 2e-2
# The model q.llama builds for the model:save checks (arguments of q.llama).
QLLAMA = (("vocab", 128), ("hidden", 64), ("layers", 2), ("heads", 4), ("kv_heads", 2), ("intermediate", 96), ("seed", 1))

EXIT_OK, EXIT_FAIL, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 2, 3

LUA_SCRIPT = r'''
-- Written by scripts/check_peft.py: qlora's side of the PEFT interoperability check.
-- usage: qlora run this.lua MODE MODEL OUT_DIR OUT.safetensors IDS [VARIANT]
--   MODEL: a model directory, or "@llama" for q.llama{QLLAMA} ("@llama:intermediate=128" changes a field)
--   MODE export: add a LoRA adapter, randomize it, save it to OUT_DIR (VARIANT: "", patterns,
--                predicate, overlap, dora)
--   MODE import: load the adapter in OUT_DIR
--   MODE save:   model:save(OUT_DIR, ...) with VARIANT f32, bf16 or nf4, then reload OUT_DIR
--   IDS: rows of comma-separated token ids separated by ';'
--   writes {logits, base_logits [, reload_logits, w.<module> ...]} to OUT.safetensors
local q = require "qlora"
local mode, model_dir, adapter_dir, out_path, ids_arg, variant = ...
assert(mode == "export" or mode == "import" or mode == "save", "mode must be export, import or save")

local ids = {}
for row in ids_arg:gmatch("[^;]+") do
  local r = {}
  for s in row:gmatch("%d+") do r[#r + 1] = tonumber(s) end
  ids[#ids + 1] = r
end

local model
if model_dir:sub(1, 6) == "@llama" then
  local spec = { QLLAMA }
  for k, v in model_dir:sub(7):gmatch("([%w_]+)=(%d+)") do spec[k] = tonumber(v) end
  model = q.llama(spec)
else
  model = q.load_model(model_dir)
end
local base_logits = model:forward(ids)

if mode == "save" then
  local out = { base_logits = base_logits }
  if variant == "f32" then
    model:save(adapter_dir)
  elseif variant == "bf16" then
    model:save(adapter_dir, { dtype = "bf16" })
  elseif variant == "nf4" then
    model:save(adapter_dir, { quantized = true })
  else
    error("unknown save variant " .. tostring(variant))
  end
  -- qlora reads its own directory back (for nf4: the 4-bit model, as it is)
  local reloaded = q.load_model(adapter_dir)
  out.reload_logits = reloaded:forward(ids)
  out.logits = (variant == "nf4") and out.reload_logits or base_logits
  for _, m in ipairs(reloaded:modules()) do
    if m.quantized then out["w." .. m.name] = reloaded:base_weight(m.name) end
  end
  q.save_tensors(out_path, out)
  print("qlora side done: save " .. variant)
  return
end

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
  elseif variant == "dora" then
    opts.dora = true
  elseif variant ~= "" and variant ~= nil then
    error("unknown variant " .. variant)
  end
  model:add_lora(opts)
  q.no_grad(function()
    for k, p in ipairs(model:parameters{ trainable = true }) do
      if p.name:find("lora_magnitude_vector", 1, true) then
        -- DoRA magnitude: perturb the row norms it starts from by a few percent
        p.tensor:copy_(p.tensor * (q.randn(p.tensor:shape(), { seed = 1000 + k, std = MAG_STD }) + 1))
      else
        p.tensor:copy_(q.randn(p.tensor:shape(), { seed = k, std = LORA_STD }))
      end
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
        "    $HOME/peer-env/bin/pip install torch transformers peft bitsandbytes\n"
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
        g = torch.Generator().manual_seed(4321)
        self.llama_ids = torch.randint(0, dict(QLLAMA)["vocab"], (2, 11), generator=g)
        self.lua = os.path.join(work, "check_peft.lua")
        qllama = ", ".join("%s = %d" % kv for kv in QLLAMA)
        with open(self.lua, "w") as f:
            f.write(LUA_SCRIPT.replace("LORA_STD", repr(LORA_STD)).replace("MAG_STD", repr(MAG_STD)).replace("QLLAMA", qllama))

    # ---------------------------------------------------------------- helpers

    def log(self, *a):
        if self.verbose:
            print("   ", *a)

    def record(self, name, ok, detail):
        self.results.append((name, ok, detail))
        print("%s  %s: %s" % ("PASS" if ok else "FAIL", name, detail), flush=True)

    def run_qlora(self, mode, adapter_dir, variant="", model=None, ids=None, tag=None):
        """Runs the Lua side; returns (logits, base_logits), or for mode save every tensor it wrote."""
        out = os.path.join(self.work, "qlora-%s-%s.safetensors" % (mode, tag or variant or "plain"))
        ids = self.ids if ids is None else ids
        ids_arg = ";".join(",".join(str(int(t)) for t in row) for row in ids.tolist())
        cmd = [self.qlora, "run", self.lua, mode, model or self.model_dir, adapter_dir, out, ids_arg, variant]
        self.log("$", " ".join(cmd))
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("qlora exited with status %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr))
        if p.stderr.strip():
            self.log("qlora stderr:", p.stderr.strip())
        from safetensors.torch import load_file

        t = load_file(out)
        if mode == "save":
            return t
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
        if variant == "patterns":
            expected["target_modules"] = {"q_proj", "v_proj", "down_proj"}
            got["target_modules"] = set(cfg.target_modules or [])
        if variant in ("", "dora"):
            expected["target_modules"] = {"q_proj", "v_proj", "down_proj"}
            got["target_modules"] = set(cfg.target_modules or [])
        if variant == "patterns":
            expected.update({"rank_pattern": {"v_proj": 2, "down_proj": 6}, "alpha_pattern": {"down_proj": 3}, "use_rslora": True})
            got.update({"rank_pattern": dict(cfg.rank_pattern), "alpha_pattern": dict(cfg.alpha_pattern), "use_rslora": cfg.use_rslora})
        expected["use_dora"] = variant == "dora"
        got["use_dora"] = bool(getattr(cfg, "use_dora", False))
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
        if variant == "dora":
            mags = [k for k in file_tensors if k.endswith(".lora_magnitude_vector")]
            if not mags:
                problems.append("no lora_magnitude_vector in the file")
            # the magnitude must not just be the norms PEFT would start from (the Lua side perturbs it)
            for k in mags:
                mod = model.get_submodule(k[:-len(".lora_magnitude_vector")])
                w = mod.get_base_layer().weight.float()
                s_ = mod.scaling["default"]
                n = (w + s_ * mod.lora_B["default"].weight.float() @ mod.lora_A["default"].weight.float()).norm(dim=1)
                if self.torch.allclose(file_tensors[k].float(), n, atol=1e-6):
                    problems.append("%s equals the row norms of W + s B A (not perturbed)" % k)

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
        elif variant == "dora":
            kw.update(use_dora=True)
        model = get_peft_model(base, LoraConfig(**kw))
        g = self.torch.Generator().manual_seed(11)
        with self.torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_magnitude_vector" in name:
                    p.mul_(1 + self.torch.randn(p.shape, generator=g) * MAG_STD)
                elif "lora_" in name:
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

    # ---------------------------------------------------------------- model:save

    def hf_load(self, path, **extra):
        """transformers' from_pretrained with its loading report; returns (model, problems, messages)."""
        import transformers
        from transformers import AutoModelForCausalLM

        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dkey = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        kw = dict(extra)
        if "dtype" in kw and dkey != "dtype":
            kw[dkey] = kw.pop("dtype")
        problems = []
        with Capture() as cap:
            model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kw)
        for field in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            v = info.get(field) if isinstance(info, dict) else None
            if v:
                problems.append("transformers reports %s: %s" % (field, sorted(str(x) for x in v)[:8]))
        for m in cap.key_problems():
            problems.append("transformers reported: " + m)
        for m in cap.messages:
            if m not in cap.key_problems():
                self.log("note (not a failure):", m)
        model.eval()
        return model, problems, cap.messages

    def file_problems(self, path, want_dtypes):
        """The safetensors file and config.json as written: metadata, dtypes."""
        from safetensors import safe_open

        problems = []
        with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
            meta = f.metadata() or {}
            dtypes = {}
            for k in f.keys():
                dtypes.setdefault(str(f.get_slice(k).get_dtype()), []).append(k)
        if meta.get("format") != "pt":
            problems.append("safetensors metadata format is %r, transformers expects 'pt'" % meta.get("format"))
        for dt, keys in sorted(dtypes.items()):
            bad = [k for k in keys if not want_dtypes(k, dt)]
            if bad:
                problems.append("unexpected dtype %s for %s" % (dt, bad[:4]))
        return problems

    def check_save(self, source, variant):
        """qlora saves a model with model:save; transformers loads the directory."""
        torch = self.torch
        tag = "save-%s-%s" % (source, variant)
        spec = {"qllama": "@llama", "qllama128": "@llama:intermediate=128"}.get(source, self.model_dir)
        ids = self.llama_ids if source.startswith("qllama") else self.ids
        out_dir = os.path.join(self.work, "saved-%s-%s" % (source, variant))
        t = self.run_qlora("save", out_dir, variant, model=spec, ids=ids, tag="%s-%s" % (source, variant))
        with open(os.path.join(out_dir, "config.json")) as f:
            cfg = json.load(f)
        self.log("config.json:", json.dumps(cfg, sort_keys=True))

        dense_dtype = {"f32": "F32", "bf16": "BF16", "nf4": "F32"}[variant]
        torch_dtype = {"f32": "float32", "bf16": "bfloat16", "nf4": "float32"}[variant]

        def want_dtypes(key, dt):
            if variant == "nf4" and ".layers." in key and "_proj." in key:
                # packed weight, quant_state JSON bytes and (double quantization) absmax codes are U8
                if key.endswith(".weight") or key.endswith(".absmax") or ".quant_state." in key:
                    return dt == "U8"
                return dt == "F32"  # quant_map, nested_absmax, nested_quant_map
            return dt == dense_dtype

        problems = self.file_problems(out_dir, want_dtypes)
        if cfg.get("torch_dtype", cfg.get("dtype")) != torch_dtype:
            problems.append("config.json torch_dtype %r, expected %r" % (cfg.get("torch_dtype", cfg.get("dtype")), torch_dtype))

        if variant == "nf4":
            return self.check_save_nf4(tag, out_dir, cfg, t, ids, problems)

        try:
            model, load_problems, _ = self.hf_load(out_dir, dtype="auto")
        except Exception as e:
            problems.append("transformers cannot load the directory: %s" % " ".join(str(e).split()))
            self.record(tag + ": directory loads in transformers", False, "; ".join(problems))
            return
        problems += load_problems
        want = torch.float32 if variant == "f32" else torch.bfloat16
        got_dtypes = sorted({str(p.dtype) for p in model.parameters()})
        if got_dtypes != [str(want)]:
            problems.append("transformers built parameters of dtype %s (expected %s from torch_dtype)" % (got_dtypes, want))
        # Every tensor transformers holds must come from the file (a weight left at its random init would
        # not show as a missing key if transformers silently initialized it).
        from safetensors.torch import load_file

        file_tensors = load_file(os.path.join(out_dir, "model.safetensors"))
        sd = model.state_dict()
        for k, v in sd.items():
            src = file_tensors.get(k)
            if src is None and k == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                src = file_tensors.get("model.embed_tokens.weight")
            if src is None:
                problems.append("%s is not in the file" % k)
            elif tuple(src.shape) != tuple(v.shape) or not torch.equal(src.float(), v.float()):
                problems.append("%s differs from the file after loading" % k)
        self.record(tag + ": directory loads in transformers", not problems,
                    "%d tensors, dtype %s, no missing/unexpected keys, loaded values equal the file" % (len(file_tensors), variant)
                    if not problems else "; ".join(problems[:10]))

        model = model.float()
        with torch.no_grad():
            theirs = model(input_ids=ids).logits.float()
        ours, reload = t["base_logits"], t["reload_logits"]
        tol = TOL if variant == "f32" else BF16_TOL
        diff = (ours - theirs).abs().max().item()
        self.record(tag + ": logits qlora (before saving) vs transformers (saved dir)", diff <= tol,
                    "max abs diff %.3e (tolerance %.0e); logits up to %.2f" % (diff, tol, ours.abs().max().item()))
        rdiff = (reload - theirs).abs().max().item()
        self.record(tag + ": logits qlora vs transformers, both reading the saved dir", rdiff <= TOL,
                    "max abs diff %.3e (tolerance %.0e)" % (rdiff, TOL))

    def manual_dequant(self, sd, name):
        """Dequantizes bitsandbytes' 4-bit layout from the file, by its definition (no bitsandbytes):
        row-major blocks of `blocksize`, two codes a byte (high nibble first), absmax per block (with
        double quantization: nested_quant_map[absmax] * nested_absmax[block / 256] + offset)."""
        torch = self.torch
        qs_key = [k for k in sd if k.startswith(name + ".quant_state.bitsandbytes__")][0]
        state = json.loads(bytes(sd[qs_key].tolist()).decode())
        packed = sd[name].reshape(-1).to(torch.int64)
        codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)
        qmap = sd[name + ".quant_map"].float()
        shape = state["shape"]
        n = 1
        for d in shape:
            n *= d
        codes = codes[:n]
        absmax = sd[name + ".absmax"]
        if name + ".nested_absmax" in sd:
            nb = int(state["nested_blocksize"])
            idx = torch.arange(absmax.numel()) // nb
            absmax = sd[name + ".nested_quant_map"].float()[absmax.to(torch.int64)] * sd[name + ".nested_absmax"].float()[idx]
            absmax = absmax + float(state["nested_offset"])
        absmax = absmax.float()
        block = int(state["blocksize"])
        vals = qmap[codes] * absmax[torch.arange(n) // block]
        return vals.reshape(shape), state

    def check_save_nf4(self, tag, out_dir, cfg, t, ids, problems):
        torch = self.torch
        qc = cfg.get("quantization_config") or {}
        for k, v in (("quant_method", "bitsandbytes"), ("load_in_4bit", True), ("bnb_4bit_quant_type", "nf4"),
                     ("bnb_4bit_use_double_quant", True)):
            if qc.get(k) != v:
                problems.append("quantization_config.%s is %r, expected %r" % (k, qc.get(k), v))
        try:
            import bitsandbytes as bnb
            import bitsandbytes.functional as bnbf
        except ImportError as e:
            self.record(tag + ": directory loads in transformers + bitsandbytes", False,
                        "bitsandbytes is not importable (%s); install it into this environment: pip install bitsandbytes" % e)
            return
        try:
            model, load_problems, _ = self.hf_load(out_dir, dtype=torch.float32, device_map="cpu")
        except Exception as e:
            problems.append("transformers + bitsandbytes %s cannot load the directory: %s" % (bnb.__version__, " ".join(str(e).split())))
            self.record(tag + ": directory loads in transformers + bitsandbytes", False, "; ".join(problems))
            return
        problems += load_problems
        lin4 = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
        qlora_w = {k[2:]: v for k, v in t.items() if k.startswith("w.")}
        if set(lin4) != set(qlora_w):
            problems.append("4-bit layers: transformers %s, qlora %s" % (sorted(lin4)[:4], sorted(qlora_w)[:4]))
        # The file must hold what transformers + bitsandbytes would save for this model themselves
        # (state_dict before any forward: same keys, dtypes, shapes, values; quant_state JSON as parsed).
        from safetensors.torch import load_file

        sd = load_file(os.path.join(out_dir, "model.safetensors"))
        own = {k: v for k, v in model.state_dict().items()}
        if cfg.get("tie_word_embeddings"):
            own.pop("lm_head.weight", None)
        if set(own) - set(sd):
            problems.append("keys bitsandbytes saves but the file lacks: %s" % sorted(set(own) - set(sd))[:6])
        if set(sd) - set(own):
            problems.append("keys in the file bitsandbytes does not save: %s" % sorted(set(sd) - set(own))[:6])
        for k in sorted(set(own) & set(sd)):
            a, b = sd[k], own[k].detach().cpu()
            if ".quant_state." in k:
                ja, jb = json.loads(bytes(a.tolist()).decode()), json.loads(bytes(b.tolist()).decode())
                if ja != jb:
                    problems.append("%s: file %s, bitsandbytes %s" % (k, ja, jb))
            elif a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
                problems.append("%s: file %s %s, bitsandbytes %s %s" % (k, a.dtype, tuple(a.shape), b.dtype, tuple(b.shape)))
            elif not torch.equal(a, b):
                problems.append("%s: values differ from what bitsandbytes holds after loading" % k)
        self.record(tag + ": directory loads in transformers + bitsandbytes", not problems,
                    "%d Linear4bit layers (bitsandbytes %s), quantization_config read, no missing/unexpected keys, "
                    "%d tensors equal to what transformers + bitsandbytes save for the loaded model"
                    % (len(lin4), bnb.__version__, len(sd)) if not problems else "; ".join(problems[:10]))
        if not lin4:
            return

        # The weights: qlora's dequantized weight vs the file's definition and bitsandbytes' dequantize.
        wprob, notes, worst_def, worst_bnb, n_bnb = [], [], 0.0, 0.0, 0
        for name in sorted(set(lin4) & set(qlora_w)):
            ours = qlora_w[name].float()
            ref, state = self.manual_dequant(sd, name + ".weight")
            d = (ours - ref).abs().max().item()
            worst_def = max(worst_def, d)
            if d != 0:
                wprob.append("%s: qlora vs the file's definition max abs diff %.3e" % (name, d))
            w = lin4[name].weight
            theirs = bnbf.dequantize_4bit(w.data, w.quant_state).float().reshape(ours.shape)
            d = (ours - theirs).abs().max().item()
            if ours.shape[1] % int(state["blocksize"]) == 0:
                n_bnb += 1
                worst_bnb = max(worst_bnb, d)
                if d != 0:
                    wprob.append("%s: qlora vs bitsandbytes dequantize_4bit max abs diff %.3e" % (name, d))
            else:
                notes.append("%s [%d x %d] vs bitsandbytes %.2e (in_features not a multiple of %d: not compared)"
                             % (name, ours.shape[0], ours.shape[1], d, state["blocksize"]))
        for n in notes:
            self.log("note:", n)
        self.record(tag + ": 4-bit weights qlora vs bitsandbytes (dequantized)", not wprob,
                    "%d layers equal to the file's definition (max abs diff %.1e), %d (in_features a multiple of the block) "
                    "equal to dequantize_4bit (max abs diff %.1e); %d not comparable with bitsandbytes' CPU dequantize"
                    % (len(qlora_w), worst_def, n_bnb, worst_bnb, len(notes)) if not wprob else "; ".join(wprob[:8]))

        # bitsandbytes (0.50) on a CPU with AVX512-BF16 repacks a 4-bit weight for its CPU kernel on the
        # first eval forward, which reshapes absmax to [out, in / block]: a layer whose in_features is not
        # a multiple of the block cannot run at all (RuntimeError, also with bitsandbytes' own quantization;
        # its CPU dequantize gets such weights wrong too). Those layers run as dense f32 layers holding the
        # file's dequantized weight; the rest run in bitsandbytes.
        swapped = []
        for name, m in list(lin4.items()):
            if m.in_features % int(m.weight.quant_state.blocksize) != 0:
                lin = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(self.manual_dequant(sd, name + ".weight")[0])
                    if m.bias is not None:
                        lin.bias.copy_(m.bias.float())
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, lin)
                swapped.append(name)
        ours = t["logits"]
        with torch.no_grad():
            theirs = model(input_ids=ids).logits.float()
        diff = (ours - theirs).abs().max().item()
        note = ""
        if swapped:
            note = "; %d of %d layers in bitsandbytes, %d run dense (in_features not a multiple of the block: " \
                   "bitsandbytes' CPU path cannot run them): %s" % (len(lin4) - len(swapped), len(lin4), len(swapped),
                                                                    ", ".join(swapped))
        self.record(tag + ": logits qlora 4-bit vs transformers + bitsandbytes 4-bit", diff <= NF4_TOL,
                    "max abs diff %.3e (tolerance %.0e; bitsandbytes computes in bf16 on this CPU); logits up to %.2f%s"
                    % (diff, NF4_TOL, ours.abs().max().item(), note))

        # The same model in f32 with the file's dequantized weights: qlora's 4-bit forward must match
        # it closely (this separates qlora's arithmetic from bitsandbytes' bf16 computation).
        from transformers import AutoConfig, AutoModelForCausalLM

        dcfg = AutoConfig.from_pretrained(out_dir)
        if hasattr(dcfg, "quantization_config"):
            delattr(dcfg, "quantization_config")
        dense = AutoModelForCausalLM.from_config(dcfg).float().eval()
        dsd = {}
        for k, v in sd.items():
            if k in dense.state_dict():
                dsd[k] = v.float()
        for name in lin4:
            dsd[name + ".weight"] = self.manual_dequant(sd, name + ".weight")[0]
        missing, unexpected = dense.load_state_dict(dsd, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and dcfg.tie_word_embeddings)]
        with torch.no_grad():
            ref = dense(input_ids=ids).logits.float()
        d = (ours - ref).abs().max().item()
        dbnb = (theirs - ref).abs().max().item()
        ok = d <= TOL and not missing
        self.record(tag + ": logits qlora 4-bit vs transformers f32 with the dequantized weights", ok,
                    "max abs diff %.3e (tolerance %.0e)%s; bitsandbytes' own 4-bit logits differ from these by %.3e"
                    % (d, TOL, (" -- weights not set: %s" % missing[:4]) if missing else "", dbnb))

    def run_all(self):
        for fn, variant in ((self.check_export, ""), (self.check_import, ""),
                            (self.check_export, "patterns"), (self.check_import, "patterns"),
                            (self.check_export, "predicate"), (self.check_export, "overlap"),
                            (self.check_import, "regex"), (self.check_import, "overlap"),
                            (self.check_export, "dora"), (self.check_import, "dora"),
                            (self.check_save, ("model", "f32")), (self.check_save, ("model", "bf16")),
                            (self.check_save, ("qllama", "f32")), (self.check_save, ("qllama", "bf16")),
                            (self.check_save, ("qllama", "nf4")), (self.check_save, ("qllama128", "nf4"))):
            args = variant if isinstance(variant, tuple) else (variant,)
            name = fn.__name__.replace("check_", "") + "".join("-" + a for a in args if a)
            try:
                fn(*args)
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
