#!/usr/bin/env bash
# Tests/cli/test_cli.sh [QLORA_BINARY]: runs the qlora command line through each subcommand's
# success and failure paths (exit status 0 / 1 / 2 and key output lines) on the fixture models
# in Tests/fixtures and on a tiny model with a tokenizer built in a temporary directory. Without
# an argument the release binary is built with scripts/build. Last line: "N passed, M failed".
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin="${1:-}"
if [ -z "$bin" ]; then bin="$root/$("$root/scripts/build")" || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fx="$root/Tests/fixtures"
passed=0; failed=0

# expect NAME STATUS [REGEX...] -- COMMAND...: the command exits with STATUS and its output
# (stdout and stderr together) has a line matching each REGEX. The output is kept in $out.
expect() {
  local name=$1 want=$2; shift 2
  local patterns=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  # (generated text from a random model may hold NUL bytes, which shell variables cannot)
  out=$("$@" 2>&1 | tr -d '\000'; exit "${PIPESTATUS[0]}"); local status=$? why=""
  [ "$status" -eq "$want" ] || why="exit status $status, expected $want"
  local p
  for p in "${patterns[@]+"${patterns[@]}"}"; do
    [ -n "$why" ] && break
    grep -qE -- "$p" <<<"$out" || why="no line matches /$p/"
  done
  report "$name" "$why"
}

# check NAME CONDITION-DESCRIPTION TEST...: a plain shell test.
check() {
  local name=$1 what=$2; shift 2
  if "$@"; then report "$name" ""; else report "$name" "$what"; fi
}

report() {
  if [ -z "$2" ]; then
    passed=$((passed + 1)); echo "ok   $1"
  else
    failed=$((failed + 1)); echo "FAIL $1: $2"
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/     | /'
  fi
}

q() { "$bin" "$@"; }

# --- help, version, unknown commands -----------------------------------------------------------
expect "no arguments prints usage" 0 "^usage: qlora" "exit status:" -- q
expect "help" 0 "^usage: qlora" "generate MODEL_DIR" -- q help
expect "help COMMAND" 0 "^usage: qlora info MODEL_DIR" -- q help info
expect "help of an unknown command" 2 "no command 'nope'" -- q help nope
expect "version" 0 "^qlora [0-9]" "^isa: " -- q version
expect "version takes no argument" 2 "unexpected argument 'x'" -- q version x
expect "unknown command" 2 "unknown command 'frobnicate'" -- q frobnicate
# --- QLORA_ISA: a level is honoured only where the CPU has it -------------------------------
expect "QLORA_ISA=scalar is honoured" 0 "^isa: scalar " -- env QLORA_ISA=scalar "$bin" version
expect "QLORA_ISA unknown level" 2 "QLORA_ISA=avx1024 is not a known level" -- env QLORA_ISA=avx1024 "$bin" version
supported=$("$bin" version | sed -n 's/.*supported: \(.*\))$/\1/p' | tr -d ',')
for level in avx2 avx512 avx512bf16; do
  if echo " $supported " | grep -q " $level "; then
    expect "QLORA_ISA=$level (on this CPU) is honoured" 0 "^isa: $level " -- env QLORA_ISA=$level "$bin" version
  else
    expect "QLORA_ISA=$level (not on this CPU) is refused" 2 "QLORA_ISA=$level is not supported by this CPU" -- \
      env QLORA_ISA=$level "$bin" version
  fi
done

for c in run sweep info quantize generate bench version; do
  expect "$c --help" 0 "^usage: qlora $c" "^exit status:" "2  usage error" -- q $c --help
done
expect "info -h" 0 "^usage: qlora info" -- q info -h

# --- run and sweep -----------------------------------------------------------------------------
cat > "$tmp/args.lua" <<'LUA'
local q = require "qlora"
print("args: " .. table.concat(arg, " "))
print("parallel: " .. tostring(os.getenv("QLORA_SWEEP_PARALLEL")))
print("shard: " .. tostring(os.getenv("QLORA_SWEEP_SHARD")))
print("module: " .. type(q.llama))
LUA
printf 'error("broken on purpose")\n' > "$tmp/fails.lua"
expect "run passes arguments" 0 "^args: a --b c$" "^module: function$" -- q run "$tmp/args.lua" a --b c
expect "run passes --help after the script" 0 "^args: --help$" -- q run "$tmp/args.lua" --help
expect "run: script error exits 1" 1 "broken on purpose" -- q run "$tmp/fails.lua"
expect "run: missing script exits 2" 2 "script '.*nope.lua' does not exist" -- q run "$tmp/nope.lua"
expect "run: no script exits 2" 2 "missing FILE.lua" -- q run
expect "run: a directory as the script" 2 "script '.*' is a directory \(expected a Lua file\)" -- q run "$tmp"
expect "run: option before the script" 2 "unknown option '--bogus'" -- q run --bogus "$tmp/args.lua"
expect "sweep sets QLORA_SWEEP_PARALLEL" 0 "^parallel: 3$" "^args: x y$" -- env -u QLORA_SWEEP_PARALLEL "$bin" sweep "$tmp/args.lua" --parallel 3 x y
expect "sweep --parallel before the script" 0 "^parallel: 2$" "^args: x$" -- env -u QLORA_SWEEP_PARALLEL "$bin" sweep --parallel=2 "$tmp/args.lua" x
expect "sweep without --parallel leaves it unset" 0 "^parallel: nil$" -- env -u QLORA_SWEEP_PARALLEL "$bin" sweep "$tmp/args.lua"
expect "sweep --parallel 0" 2 "--parallel expects an integer from 1 to 1024, got '0'" -- q sweep "$tmp/args.lua" --parallel 0
expect "sweep --parallel abc" 2 "--parallel expects an integer from 1 to 1024, got 'abc'" -- q sweep --parallel abc "$tmp/args.lua"
expect "sweep --parallel 1000000" 2 "--parallel expects an integer from 1 to 1024, got '1000000'" -- q sweep --parallel 1000000 "$tmp/args.lua"
expect "sweep --parallel without a value" 2 "--parallel needs a value" -- q sweep "$tmp/args.lua" --parallel
expect "sweep: script error exits 1" 1 "broken on purpose" -- q sweep "$tmp/fails.lua" --parallel 2
expect "sweep --help names --shard and --slurm" 0 "--shard I/N" "--slurm" -- q sweep --help
expect "sweep --shard sets QLORA_SWEEP_SHARD" 0 "^shard: 1/3$" -- env -u QLORA_SWEEP_SHARD "$bin" sweep --shard 1/3 "$tmp/args.lua"
expect "sweep shard from a Slurm array" 0 "running shard 2/4, from SLURM_ARRAY_TASK_ID=3, SLURM_ARRAY_TASK_COUNT=4, SLURM_ARRAY_TASK_MIN=1" "^shard: 2/4$" -- env SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_MIN=1 "$bin" sweep "$tmp/args.lua"
expect "sweep --shard 2/2" 2 "--shard expects I/N with 0 <= I < N" -- q sweep --shard 2/2 "$tmp/args.lua"
expect "sweep --partition without --slurm" 2 "option --partition belongs to --slurm" -- q sweep --partition cpu "$tmp/args.lua"

# --- info --------------------------------------------------------------------------------------
expect "info dense" 0 "^architecture +LlamaForCausalLM" "^heads +4 \(kv heads 2, head_dim 16\)" "^stored dtype +F32$" \
  "^quantization +none" "^  attention +24,576$" "^  mlp +73,728$" "^  norms +320$" "^  total +131,392$" \
  "^  f32 .* 525,568 B$" "^  bf16 .* 262,784 B$" "^  nf4 \(block 64\) .* 121,472 B .*4.500 bits/param" \
  "^  nf4 \+ double quant .* 116,920 B" -- q info "$fx/tiny-llama"
expect "info 4-bit checkpoint" 0 "^quantization +bitsandbytes 4-bit: nf4, double quant yes" "^stored dtype +4-bit nf4" \
  "^  total +131,392$" -- q info "$fx/tiny-llama-bnb-nf4"
expect "info --json" 0 '"total": 131392' '"nf4_double_quant": 116920' '"quantization_config": null' -- q info --json "$fx/tiny-llama"
expect "info: no MODEL_DIR" 2 "missing MODEL_DIR" -- q info
expect "info: MODEL_DIR does not exist" 2 "MODEL_DIR '.*/nowhere' does not exist" -- q info "$tmp/nowhere"
expect "info: a file as MODEL_DIR" 2 "is not a directory" -- q info "$fx/tiny-llama/config.json"
expect "info: no config.json" 1 "no config.json" -- q info "$fx/tiny-llama-lora"
expect "info GGUF" 0 "^format +GGUF v3, alignment 32, 21 tensors" "^architecture +llama \(read as LlamaForCausalLM\)" \
  "^attention +heads 4, kv heads 2, head_dim 16" "^  Q4_0 +2 tensors" "^tokenizer +none" "^parameters +131392" -- q info "$fx/gguf/tiny-llama.gguf"
expect "info GGUF --json" 0 '"format": "gguf"' '"num_key_value_heads": 2' -- q info --json "$fx/gguf/tiny-llama.gguf"
head -c 1000 "$fx/gguf/tiny-llama.gguf" > "$tmp/cut.gguf"
expect "info: truncated GGUF" 1 "truncated file reading" -- q info "$tmp/cut.gguf"
expect "generate: GGUF without a tokenizer" 1 "the GGUF file has no tokenizer" -- q generate "$fx/gguf/tiny-llama.gguf" --prompt hi
expect "info: unknown option" 2 "unknown option '--bogus' \(expected one of: --json, --help\)" -- q info "$fx/tiny-llama" --bogus
expect "info: extra argument" 2 "unexpected argument 'extra'" -- q info "$fx/tiny-llama" extra
mkdir -p "$tmp/badcfg"; printf '{"architectures": ["GPT2LMHeadModel"]}' > "$tmp/badcfg/config.json"
expect "info: unsupported architecture" 1 "unsupported architecture" -- q info "$tmp/badcfg"
# sizes whose products overflow a 64-bit integer are errors, not traps
sed 's/"head_dim": 16/"head_dim": 9223372036854775806/' "$fx/tiny-llama/config.json" > "$tmp/badcfg/config.json"
expect "info: head_dim near 2^63" 1 "head_dim 9223372036854775806 is too large" -- q info "$tmp/badcfg"
sed -e 's/"head_dim": 16/"head_dim": 4294967296/' -e 's/"num_attention_heads": 4/"num_attention_heads": 4294967296/' \
  -e 's/"num_key_value_heads": 2/"num_key_value_heads": 4294967296/' "$fx/tiny-llama/config.json" > "$tmp/badcfg/config.json"
expect "info: heads * head_dim overflows" 1 "num_attention_heads 4294967296 is too large" -- q info "$tmp/badcfg"

mkdir -p "$tmp/sharded"
cp "$fx/tiny-llama/config.json" "$tmp/sharded/"
cp "$fx/tiny-llama/model.safetensors" "$tmp/sharded/model-00001-of-00001.safetensors"
printf '{"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}' \
  > "$tmp/sharded/model.safetensors.index.json"
expect "info on a sharded checkpoint" 0 "^weight files +1 shard \(model.safetensors.index.json\), 21 tensors" "^  total +131,392$" -- q info "$tmp/sharded"
printf '{"weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}' > "$tmp/sharded/model.safetensors.index.json"
expect "info: a shard named by the index is missing" 1 "shard \"model-00002-of-00002.safetensors\" named in weight_map does not exist" -- q info "$tmp/sharded"
rm "$tmp/sharded/model.safetensors.index.json"
expect "info: no weight files" 1 "no model.safetensors or model.safetensors.index.json" -- q info "$tmp/sharded"

# info's figure for qlora's own layout must be what model:summary() measures on the loaded model.
cat > "$tmp/summary.lua" <<'LUA'
local q = require "qlora"
local m = q.load_model(arg[1], {quant = {type = "nf4", block = 64, double_quant = true}})
print(m:summary())
LUA
measured=$("$bin" run "$tmp/summary.lua" "$fx/tiny-llama" 2>&1 | awk '$1 == "total" { print $3 }')
estimated=$("$bin" info --json "$fx/tiny-llama" 2>&1 | sed -nE 's/.*"qlora_nf4_double_quant": ([0-9]+).*/\1/p')
out="measured $measured, estimated $estimated"
check "info's nf4 + double quant bytes match model:summary()" "$out" test -n "$measured" -a "$measured" = "$estimated"

# --- a tiny model with a tokenizer -------------------------------------------------------------
cat > "$tmp/make.lua" <<'LUA'
local q = require "qlora"
q.llama{vocab = 350, hidden = 64, layers = 2, heads = 4, kv_heads = 2, intermediate = 192, seed = 7}:save(arg[1])
LUA
expect "build a tiny model with qlora run" 0 -- q run "$tmp/make.lua" "$tmp/tok"
cp "$fx/tokenizers/bytelevel.json" "$tmp/tok/tokenizer.json"

# --- quantize ----------------------------------------------------------------------------------
expect "quantize" 0 "^format: +nf4, block 64, double quant" "^weights before: .*527,712 B" "^weights after: .*x smaller" \
  "^copied: +generation_config.json" "^total time: " -- q quantize "$fx/tiny-llama" "$tmp/q1"
expect "info on the quantized output" 0 "^quantization +bitsandbytes 4-bit: nf4, double quant yes" "^  total +131,392$" -- q info "$tmp/q1"
expect "quantize refuses a non-empty OUT_DIR" 2 "OUT_DIR '.*q1' is not empty \(pass --force" -- q quantize "$fx/tiny-llama" "$tmp/q1"
expect "quantize --force fp4 without double quant, bf16" 0 "^format: +fp4, block 128, no double quant, dense tensors bf16" -- \
  q quantize "$fx/tiny-llama" "$tmp/q1" --force --type fp4 --block 128 --no-double-quant --dtype bf16
expect "info on the fp4 output" 0 "^quantization +bitsandbytes 4-bit: fp4, double quant no" "^stored dtype .*BF16" -- q info "$tmp/q1"
rm -f "$tmp/q1/generation_config.json"; mkfifo "$tmp/q1/generation_config.json"
expect "quantize --force onto a FIFO companion file fails and keeps it" 1 "generation_config.json: exists and is a FIFO; saving replaces only regular files" -- \
  q quantize "$fx/tiny-llama" "$tmp/q1" --force
check "... the FIFO is still a FIFO" "replaced" test -p "$tmp/q1/generation_config.json"
expect "quantize re-saves a 4-bit checkpoint" 0 "nf4, block 64, double quant \(as stored\)" -- q quantize "$fx/tiny-llama-bnb-nf4" "$tmp/q2"
expect "quantize: other format for a 4-bit checkpoint" 1 "already 4-bit" -- q quantize "$fx/tiny-llama-bnb-nf4" "$tmp/q3" --type fp4
# a 4-bit checkpoint whose quant_state is not JSON: the error names the file and the weight
cp -r "$fx/tiny-llama-bnb-nf4" "$tmp/badstate"
cat > "$tmp/badstate.lua" <<'LUA'
local q = require "qlora"
local path = arg[1] .. "/model.safetensors"
local t = q.load_tensors(path)
local name = "model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"
t[name] = q.full({ t[name]:numel() }, 255, { dtype = "u8" })
q.save_tensors(path, t)
LUA
expect "corrupt a quant_state" 0 -- q run "$tmp/badstate.lua" "$tmp/badstate"
expect "quantize: a quant_state that is not JSON" 1 "badstate/model.safetensors.*down_proj.weight.*quant_state.*invalid JSON" -- \
  q quantize "$tmp/badstate" "$tmp/q3"
expect "quantize: bad --block" 2 "--block expects a power of two from 32 to 4096, got '100'" -- q quantize "$fx/tiny-llama" "$tmp/q4" --block 100
expect "quantize: --block not a number" 2 "--block expects a power of two from 32 to 4096, got 'big'" -- q quantize "$fx/tiny-llama" "$tmp/q4" --block big
expect "quantize: bad --type" 2 "--type expects one of nf4, fp4, got 'int8'" -- q quantize "$fx/tiny-llama" "$tmp/q4" --type int8
expect "quantize: --type without a value" 2 "--type needs a value" -- q quantize "$fx/tiny-llama" "$tmp/q4" --type
expect "quantize: contradicting flags" 2 "contradict" -- q quantize "$fx/tiny-llama" "$tmp/q4" --double-quant --no-double-quant
expect "quantize: no OUT_DIR" 2 "missing OUT_DIR" -- q quantize "$fx/tiny-llama"
expect "quantize: MODEL_DIR does not exist" 2 "does not exist" -- q quantize "$tmp/nowhere" "$tmp/q4"
cp -r "$fx/tiny-llama" "$tmp/same"
expect "quantize: OUT_DIR is MODEL_DIR" 2 "OUT_DIR is MODEL_DIR" -- q quantize "$tmp/same" "$tmp/same/" --force
check "quantize: nothing written on failure" "$tmp/q4 exists" test ! -e "$tmp/q4"
cp "$fx/tokenizers/bytelevel.json" "$tmp/same/tokenizer.json"
expect "quantize: OUT_DIR that resolves to MODEL_DIR through a new dir" 2 "OUT_DIR is MODEL_DIR" -- q quantize "$tmp/same" "$tmp/same/new/.." --force
check "quantize: MODEL_DIR left as it was" "MODEL_DIR changed" cmp -s "$fx/tiny-llama/model.safetensors" "$tmp/same/model.safetensors"
check "quantize: MODEL_DIR keeps its tokenizer.json" "tokenizer.json is gone" test -f "$tmp/same/tokenizer.json"
expect "quantize a model with a tokenizer" 0 "^copied: +tokenizer.json" -- q quantize "$tmp/tok" "$tmp/tokq"
check "quantize copies tokenizer.json" "files differ" cmp -s "$tmp/tok/tokenizer.json" "$tmp/tokq/tokenizer.json"

# --- generate ----------------------------------------------------------------------------------
gen() { "$bin" generate "$@" 2>/dev/null | tr -d '\000'; }
expect "generate" 0 "tokens in .* tokens/s" -- q generate "$tmp/tok" --prompt "hello world" --max-tokens 12
a=$(gen "$tmp/tok" --prompt "hello world" --max-tokens 12); b=$(gen "$tmp/tok" --prompt "hello world" --max-tokens 12)
check "generate writes text to stdout" "empty stdout" test -n "$a"
check "greedy generation repeats itself" "'$a' vs '$b'" test "$a" = "$b"
stop_text="${a:4:2}"
c=$(gen "$tmp/tok" --prompt "hello world" --max-tokens 12 --stop "$stop_text")
check "--stop cuts the text where the stop text first appears" "'$c' vs '${a%%"$stop_text"*}' (stop '$stop_text')" \
  test "$c" = "${a%%"$stop_text"*}"
expect "generate --stop ''" 2 "--stop expects a non-empty text" -- q generate "$tmp/tok" --prompt "hi" --stop ""
s1=$(gen "$tmp/tok" --prompt "hi" --max-tokens 16 --temperature 1.0 --top-k 40 --top-p 0.95 --seed 5)
s2=$(gen "$tmp/tok" --prompt "hi" --max-tokens 16 --temperature 1.0 --top-k 40 --top-p 0.95 --seed 5)
check "sampling with a seed repeats itself" "'$s1' vs '$s2'" test "$s1" = "$s2"
z=$(gen "$tmp/tok" --prompt "hi" --max-tokens 0)
check "--max-tokens 0 writes an empty line" "got '$z'" test -z "$z"
expect "generate 0 tokens reports 0" 0 "^\[0 tokens in" -- q generate "$tmp/tok" --prompt "hi" --max-tokens 0
expect "generate --quant nf4" 0 "tokens in" -- q generate "$tmp/tok" --prompt "hello" --max-tokens 8 --quant nf4
expect "generate from the quantized copy" 0 "\[8 tokens in" -- q generate "$tmp/tokq" --prompt "hello" --max-tokens 8
expect "generate --compute bnb_bf16" 0 "\[8 tokens in" -- q generate "$tmp/tokq" --prompt "hello" --max-tokens 8 --compute bnb_bf16
expect "generate --compute with a bad value" 2 "--compute expects one of f32, bf16, bnb_bf16, got .f16." -- q generate "$tmp/tokq" --prompt "hello" --compute f16
expect "generate --quant none on a 4-bit model" 1 "stored in 4-bit nf4; --quant none" -- q generate "$tmp/tokq" --prompt "hello" --quant none
expect "generate with an adapter" 0 "tokens in" -- q generate "$tmp/tok" --adapter "$fx/tiny-llama-lora" --prompt "hello world" --max-tokens 12
c=$(gen "$tmp/tok" --adapter "$fx/tiny-llama-lora" --prompt "hello world" --max-tokens 12)
check "the adapter changes the text" "same text '$c' with and without the adapter" test "$a" != "$c"
mkdir -p "$tmp/noadapter"
expect "generate: adapter dir without adapter files" 1 "adapter_config.json" -- q generate "$tmp/tok" --adapter "$tmp/noadapter" --prompt "hi"
expect "generate: adapter dir does not exist" 2 "--adapter DIR '.*nowhere' does not exist" -- q generate "$tmp/tok" --adapter "$tmp/nowhere" --prompt "hi"
cat > "$tmp/short.lua" <<'LUA'
local q = require "qlora"
q.llama{vocab = 350, hidden = 32, layers = 1, heads = 2, intermediate = 32, max_positions = 40, seed = 7}:save(arg[1])
LUA
expect "build a model with 40 positions" 0 -- q run "$tmp/short.lua" "$tmp/short"
cp "$fx/tokenizers/bytelevel.json" "$tmp/short/tokenizer.json"
expect "generate --max-tokens 10^9 stops at max_position_embeddings" 0 "tokens in .*reached max_position_embeddings 40" -- \
  q generate "$tmp/short" --prompt "hello" --max-tokens 1000000000
expect "generate: no tokenizer" 1 "no tokenizer.json" -- q generate "$fx/tiny-llama" --prompt "hi"
# --chat: the model's chat template, the same answer as model:chat (and so as generate on
# apply_chat_template's ids, Tests/lua/test_chat_template.lua), ending at the end of the turn.
expect "generate --chat" 0 "tokens in" -- q generate "$fx/tiny-chat" --chat "What is the licence?" --max-tokens 10
cat > "$tmp/chat.lua" <<'LUA'
local q = require "qlora"
local m = q.load_model(arg[1])
io.write(m:chat(arg[2], { system = arg[3] ~= "" and arg[3] or nil, max_tokens = 10 }), "\n")
LUA
c1=$(gen "$fx/tiny-chat" --chat "What is the licence?" --max-tokens 10)
c2=$("$bin" run "$tmp/chat.lua" "$fx/tiny-chat" "What is the licence?" "" 2>/dev/null | tr -d '\000')
check "generate --chat answers as model:chat does" "'$c1' vs '$c2'" test "$c1" = "$c2"
c3=$(gen "$fx/tiny-chat" --chat "What is the licence?" --system "Be brief." --max-tokens 10)
c4=$("$bin" run "$tmp/chat.lua" "$fx/tiny-chat" "What is the licence?" "Be brief." 2>/dev/null | tr -d '\000')
check "generate --chat --system answers as model:chat does" "'$c3' vs '$c4'" test "$c3" = "$c4"
cat > "$tmp/warn.lua" <<'LUA'
local q = require "qlora"
local tok = q.tokenizer(arg[1])
local rows = { { messages = { { role = "user", content = "a" }, { role = "assistant", content = "b" } } } }
q.data.from_table(rows, { format = "chat", tokenizer = tok })
q.data.from_table(rows, { format = "chat", tokenizer = tok })
q.data.from_table(rows, { format = "chat", tokenizer = tok, template = "role" })
print("loaded")
LUA
expect "chat data without a template: a warning" 0 "warning: rows: the tokenizer has no chat template" "loaded" -- q run "$tmp/warn.lua" "$fx/tokenizers/bytelevel.json"
check "the warning is given once" "$(grep -c 'no chat template' <<<"$out") warnings" test "$(grep -c 'no chat template' <<<"$out")" = 1
expect "chat data with a template: no warning" 0 "loaded" -- q run "$tmp/warn.lua" "$fx/tiny-chat"
check "no warning with a template" "got: $out" test "$(grep -c 'warning' <<<"$out")" = 0
expect "generate --chat and --prompt" 2 "not both" -- q generate "$fx/tiny-chat" --chat "hi" --prompt "hi"
expect "generate --system without --chat" 2 "--system needs --chat" -- q generate "$fx/tiny-chat" --prompt "hi" --system "x"
expect "generate --chat without a template" 1 "no chat template" -- q generate "$tmp/tok" --chat "hi"
cp -r "$fx/tiny-llama" "$tmp/smallvocab"; cp "$fx/tokenizers/bytelevel.json" "$tmp/smallvocab/tokenizer.json"
expect "generate: a prompt token beyond the model's vocab" 1 "prompt has token id [0-9]+, .*vocab_size is 256 \(tokenizer.json does not fit this model\)" -- \
  q generate "$tmp/smallvocab" --prompt "hello world, quickly"
expect "generate: empty --prompt" 2 "encodes to no tokens" -- q generate "$tmp/tok" --prompt ""
expect "generate: no --prompt" 2 "missing --prompt" -- q generate "$tmp/tok"
expect "generate: no MODEL_DIR" 2 "missing MODEL_DIR" -- q generate --prompt "hi"
expect "generate: negative temperature" 2 "--temperature expects a number >= 0, got '-1'" -- q generate "$tmp/tok" --prompt "hi" --temperature -1
expect "generate: --top-p 0" 2 "--top-p expects a number in \(0, 1\], got '0'" -- q generate "$tmp/tok" --prompt "hi" --top-p 0
expect "generate: --top-p 1.5" 2 "--top-p expects a number in \(0, 1\]" -- q generate "$tmp/tok" --prompt "hi" --top-p 1.5
expect "generate: --max-tokens x" 2 "--max-tokens expects an integer >= 0, got 'x'" -- q generate "$tmp/tok" --prompt "hi" --max-tokens x
expect "generate: --seed -1" 2 "--seed expects an integer >= 0" -- q generate "$tmp/tok" --prompt "hi" --seed -1
expect "generate: bad --quant" 2 "--quant expects one of nf4, fp4, none, got 'int4'" -- q generate "$tmp/tok" --prompt "hi" --quant int4
expect "generate: unknown option" 2 "unknown option '--tempreature'" -- q generate "$tmp/tok" --prompt "hi" --tempreature 1

# --- hostile inputs: environment, repeated options, error objects, signals, concurrent sweeps ---
for v in 0 -3 abc 2x ""; do
  if [ -z "$v" ]; then
    expect "QLORA_THREADS='' is the core count" 0 "^threads: [0-9]+" -- env QLORA_THREADS= "$bin" version
  else
    expect "QLORA_THREADS=$v exits 2" 2 "QLORA_THREADS must be an integer >= 1 .*got '$v'" -- env QLORA_THREADS="$v" "$bin" version
  fi
done
expect "QLORA_THREADS=10000 is clamped with a warning" 0 "warning: QLORA_THREADS=10000 is more than the 256" "^threads: 256$" -- env QLORA_THREADS=10000 "$bin" version
expect "QLORA_THREADS=3 is used" 0 "^threads: 3$" -- env QLORA_THREADS=3 "$bin" version
expect "an option given twice" 2 "option --prompt is given more than once" -- q generate "$tmp/tok" --prompt a --prompt b
expect "an option given twice, once with =" 2 "option --max-tokens is given more than once" -- q generate "$tmp/tok" --prompt a --max-tokens=2 --max-tokens 3
expect "a flag given twice" 2 "option --json is given more than once" -- q info --json --json "$fx/tiny-llama"
expect "sweep --parallel twice" 2 "option --parallel is given more than once" -- q sweep --parallel 2 --parallel 3 "$tmp/args.lua"
printf 'error({ code = 5, why = "table error" })\n' > "$tmp/tableerr.lua"
expect "a table error object shows its fields" 1 "\\{code = 5, why = table error\\}|\\{why = table error, code = 5\\}" -- q run "$tmp/tableerr.lua"
check "... and not its address" "printed a table address" bash -c '! grep -q "table: 0x" <<<"$1"' _ "$out"
printf 'error(setmetatable({}, { __tostring = function() return "custom text" end }))\n' > "$tmp/tserr.lua"
expect "an error object with __tostring shows its text" 1 "custom text" -- q run "$tmp/tserr.lua"

# A save killed by SIGTERM or SIGINT leaves no temporary file: the script writes a 256 MB tensor
# file over and over; the signal lands mid-write (the writes and fsyncs are nearly all its time).
cat > "$tmp/saveloop.lua" <<'LUA'
local q = require "qlora"
local dir, what = arg[1], arg[2]
local t = q.zeros(64 * 1024 * 1024)
local model = what == "model" and q.llama { vocab = 4096, hidden = 1024, layers = 8, heads = 8, intermediate = 2048 } or nil
local f = io.open(dir .. "/started", "w"); f:close()
while true do
  if model then model:save(dir .. "/model") else q.save_tensors(dir .. "/big.safetensors", { t = t }) end
end
LUA
for sig in TERM INT; do
  for what in tensors model; do
    d="$tmp/sig-$sig-$what"; mkdir -p "$d/model"
    set -m  # own process group: a background job of a script would otherwise ignore SIGINT
    "$bin" run "$tmp/saveloop.lua" "$d" "$what" >/dev/null 2>&1 &
    pid=$!
    set +m
    for _ in $(seq 1 600); do [ -e "$d/started" ] && break; sleep 0.05; done
    sleep 1.2
    kill -"$sig" "$pid"; wait "$pid"; st=$?
    left=$(find "$d" -name '.*.tmp-*' | wc -l)
    want=$((128 + $(kill -l "$sig")))
    out="exit status $st; temporary files: $(find "$d" -name '.*.tmp-*')"
    check "SIG$sig during a save ($what) removes the temporary file" "$left left behind" test "$left" -eq 0
    check "SIG$sig still ends the process by the signal ($what)" "exit status $st, expected $want" test "$st" -eq "$want"
  done
done

# Two sweeps on one out: the second fails at once and clearly; a killed sweep leaves no stuck lock.
cat > "$tmp/slowsweep.lua" <<'LUA'
local q = require "qlora"
q.sweep { out = arg[1], grid = { x = { 1 } }, run = function() os.execute("sleep 4"); return { y = 1 } end }
print("sweep done")
LUA
set -m
"$bin" run "$tmp/slowsweep.lua" "$tmp/sw" >"$tmp/sw1.log" 2>&1 &
pid=$!
set +m
for _ in $(seq 1 200); do [ -e "$tmp/sw/.lock" ] && break; sleep 0.05; done
expect "a second sweep on the same out fails" 1 "out '.*sw' is in use by another sweep \\(process $pid\\)" -- q run "$tmp/slowsweep.lua" "$tmp/sw"
kill -9 "$pid"; wait "$pid" 2>/dev/null
sleep 0.2
expect "after the first is killed, the out is free again" 0 "^sweep done$" -- q run "$tmp/slowsweep.lua" "$tmp/sw"
n=$(grep -c '"id"' "$tmp/sw/results.jsonl" 2>/dev/null || echo 0)
check "the point's result is recorded once" "results.jsonl has $n lines" test "$n" -eq 1

# --- bench (arguments only; no measurements here) ----------------------------------------------
expect "bench: unknown suite" 2 "unknown argument 'nope'" -- q bench nope
expect "bench train: an option twice" 2 "option --seq given twice" -- q bench train --seq 8 --seq 9
expect "bench train: a bad count" 2 "--batch must be an integer 1..1048576, got '0'" -- q bench --batch 0
expect "bench train: a bad compute" 2 "--compute must be f32, bf16 or f32,bf16, got 'f16'" -- q bench --compute f16
expect "bench train: a missing value" 2 "option --model needs a value" -- q bench train --model
expect "bench: train options without train" 2 "train options need the train suite" -- q bench quant --r 4
expect "bench generate needs --model" 2 "the generate suite needs --model PATH" -- q bench generate
expect "bench generate: a bad --quant" 2 "--quant must be nf4, fp4 or none" -- q bench generate --model "$fx/tiny-llama" --quant q8
expect "bench generate on the tiny model" 0 "^op=generate .*prompt_tokens=8 .*gen_tokens_per_sec=" -- \
  q bench generate --model "$fx/tiny-llama" --prompt-tokens 8 --tokens 4
expect "bench generate --json" 0 '^\{"op": "generate", "model": "[^"]*tiny-llama"' -- \
  q bench generate --model "$fx/tiny-llama" --prompt-tokens 8 --tokens 4 --json --quant none

# --- models named by Hugging Face repo id, from the local Hugging Face cache ---------------------
hub="$tmp/hub"; snap="$hub/models--org--tiny-llama/snapshots/0123456789abcdef0123456789abcdef01234567"
mkdir -p "$hub/models--org--tiny-llama/refs" "$snap"
cp "$fx/tiny-llama/"* "$snap/"
printf '0123456789abcdef0123456789abcdef01234567' > "$hub/models--org--tiny-llama/refs/main"
expect "info org/name from HF_HUB_CACHE" 0 "^architecture +LlamaForCausalLM" -- env HF_HUB_CACHE="$hub" "$bin" info org/tiny-llama
expect "info org/name from HF_HOME/hub" 0 "^architecture +LlamaForCausalLM" -- \
  env -u HF_HUB_CACHE HF_HOME="$tmp" "$bin" info org/tiny-llama
expect "info org/name@revision that is absent" 2 "no refs/dev" "looked in .*/models--org--tiny-llama" -- \
  env HF_HUB_CACHE="$hub" "$bin" info org/tiny-llama@dev
expect "info org/name not in the cache" 2 "not in the Hugging Face cache" "downloads nothing" -- \
  env HF_HUB_CACHE="$hub" "$bin" info org/absent
cat > "$tmp/hub.lua" <<'LUA'
local q = require "qlora"
local m = q.load_model("org/tiny-llama", { quant = { type = "nf4" } })
print("layers " .. m:config().num_hidden_layers)
LUA
expect "q.load_model(org/name) from the cache" 0 "^layers 2$" -- env HF_HUB_CACHE="$hub" "$bin" run "$tmp/hub.lua"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
