"""The peer of `qlora bench train --model` and `qlora bench generate --model`: the same job with
PyTorch + transformers + PEFT (+ bitsandbytes for 4-bit), printing one JSON line with the same
field names, so the two can run one after the other and be compared in one sitting.

  python scripts/bench_peer.py train MODEL_DIR [--quant nf4|none] [--dtype float32|bfloat16]
      [--seq 256] [--batch 4] [--r 16] [--steps 5] [--checkpointing] [--threads 2]
  python scripts/bench_peer.py generate MODEL_DIR [--quant nf4|none] [--prompt-tokens 128]
      [--tokens 64] [--threads 2]

Training: LoRA r (alpha 2r, no dropout) on the seven projections, AdamW lr 1e-4, random token
ids, 2 warm-up steps then the median of the timed ones. Generation: greedy through the KV cache
with a fixed pseudo-random prompt; prompt processing is timed to the first new token, generation
over the tokens after it. Peak RSS is the process's ru_maxrss. Needs a Python environment with
torch, transformers, peft and (for --quant nf4) bitsandbytes; not used by the tests."""
import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LogitsProcessor, LogitsProcessorList


def load(args, dtype):
    extra = {}
    if args.quant != "none":
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=args.quant, bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, device_map="cpu", **extra)
    return model, time.perf_counter() - t0


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(args):
    from peft import LoraConfig, get_peft_model
    dtype = getattr(torch, args.dtype)
    model, load_s = load(args, dtype)
    if args.checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    if args.dtype != "float32":
        model = model.to(dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(3))
    times = []
    for step in range(2 + args.steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    median = sorted(times)[(len(times) - 1) // 2]
    return dict(op="train", who="peer", model=args.model, quant=args.quant, compute=args.dtype, r=args.r,
                batch=args.batch, seq=args.seq, checkpointing="on" if args.checkpointing else "off", load_s=load_s,
                step_ms=median * 1e3, tokens_per_sec=args.batch * args.seq / median, peak_rss_mb=peak_mb(),
                loss=float(loss))


class Stamps(LogitsProcessor):
    """Records the time each new token's logits arrive (one call per generated token)."""
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def generate(args):
    model, load_s = load(args, torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    prompt, x = [], 12345
    for _ in range(args.prompt_tokens):
        x = (x * 1103515245 + 12345) % 2147483648
        prompt.append(3 + x % (vocab - 3))
    ids = torch.tensor([prompt])

    def run(n):
        stamps = Stamps()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, do_sample=False, logits_processor=LogitsProcessorList([stamps]))
        return start, stamps.times, out.shape[1] - ids.shape[1]

    run(2)
    start, stamps, n = run(args.tokens)
    gen = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return dict(op="generate", who="peer", model=args.model, quant=args.quant, compute="float32",
                prompt_tokens=args.prompt_tokens, new_tokens=n, load_s=load_s,
                prompt_tokens_per_sec=args.prompt_tokens / (stamps[0] - start), gen_tokens_per_sec=gen,
                peak_rss_mb=peak_mb())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("job", choices=["train", "generate"])
    p.add_argument("model")
    p.add_argument("--quant", default="nf4", choices=["nf4", "fp4", "none"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(json.dumps(train(args) if args.job == "train" else generate(args)))


if __name__ == "__main__":
    main()
