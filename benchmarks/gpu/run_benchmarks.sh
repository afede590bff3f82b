#!/usr/bin/env bash
# GPU evidence: matched Hugging Face-vs-Unsloth benchmarks of one model shape, through the engine
# (python -m trainers.benchmark.runner), then optionally the plain-script comparison.
#
#   benchmarks/gpu/run_benchmarks.sh SHAPE MODES [plain]
#     SHAPE  llama-3.2-1b | llama-3.2-3b | any family of trainers/benchmark/synthetic.py
#            (synthetic weights), or a local model directory (real weights)
#     MODES  lora16 | qlora4 | lora16,qlora4
#     plain  also run benchmarks/gpu/plain_reference.py (lora16) for each provider in
#            PLAIN_PROVIDERS (default huggingface; "huggingface unsloth" for both)
#
# CHECK_PLAIN=1 sets the spec's check_plain: the runner itself runs the bare-library script
# (RUN_DIR/plain/plain_script.py) per provider x mode after the engine's first round of repeats
# (PLAIN_REPEATS=2: after each of the first two) and reports engine/plain tokens/s (results.md's
# table and trust checks; logs.tar.gz has run/plain/).
# PROVIDERS (default huggingface,unsloth) picks the providers.
#
# Defaults are the evidence set-up: seq 2048, batch 8, 10 warm-up + 30 measured steps, each
# configuration twice, padded batches for both providers, rows of at least 680 tokens from the
# P3/T0 prompt/completion sample. Override with SEQ, BATCH, STEPS, WARMUP, REPEATS, MIN_TOKENS,
# PADDING, CKPT (0: gradient checkpointing off; "best" decides it itself), ATTN (the spec's
# attention for the huggingface variants: sdpa, or sdpa_per_row with PADDING padding_free or
# best), COMPILE and LIGER (1: the spec's torch_compile and liger_kernel for the huggingface
# variants; PADDING=best decides Liger and the attention itself), DATA.
# RUNNER_LIMIT_S bounds the engine run (a stopped run still writes the results of
# every variant it finished); PLAIN_LIMIT_S bounds each plain run.
# Writes at most 6 files to $OUT/TAG/: results.json, results.md, results.csv, logs.tar.gz,
# plain_reference.json, nvidia-smi.txt.
set -uo pipefail

shape=${1:?usage: run_benchmarks.sh SHAPE MODES [plain]}
modes=${2:?usage: run_benchmarks.sh SHAPE MODES [plain]}
plain=${3:-}
tag="bench_$(basename "$shape")_${modes//,/-}"
out="${OUT:-/tmp/out}/$tag"
work="/tmp/mf-bench/$tag"
run_dir="$work/run"
rm -rf "$work" && mkdir -p "$run_dir" "$out"
export MODELFORGE_SYNTHETIC_DIR=${MODELFORGE_SYNTHETIC_DIR:-/tmp/mf-synthetic}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
start=$(date +%s)

{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; } \
  > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$out/nvidia-smi.txt"

SHAPE="$shape" MODES="$modes" python3 - > "$run_dir/config.json" <<'EOF'
import json, os
shape = os.environ["SHAPE"]
spec = {
    "model": shape, "synthetic_weights": not os.path.isdir(shape),
    "modes": os.environ["MODES"].split(","),
    "providers": os.environ.get("PROVIDERS", "huggingface,unsloth").split(","),
    "max_seq_length": int(os.environ.get("SEQ", 2048)),
    "batch_size": int(os.environ.get("BATCH", 8)),
    "steps": int(os.environ.get("STEPS", 30)),
    "warmup_steps": int(os.environ.get("WARMUP", 10)),
    "repeats": int(os.environ.get("REPEATS", 2)),
    "min_example_tokens": int(os.environ.get("MIN_TOKENS", 680)),
    "padding": os.environ.get("PADDING", "padded"),
    "gradient_checkpointing": os.environ.get("CKPT", "1") == "1",
    "attention": os.environ.get("ATTN", "sdpa"),
    "torch_compile": os.environ.get("COMPILE", "0") == "1",
    "liger_kernel": os.environ.get("LIGER", "0") == "1",
    "dataset": os.environ.get("DATA", ".gpu/data/t0_mix_prompt_completion.jsonl"),
    "variant_timeout_s": int(os.environ.get("VARIANT_TIMEOUT_S", 300)),
    "name": f"GPU evidence {shape} {os.environ['MODES']}",
    "invocation": " ".join(
        [f"{k}={os.environ[k]}" for k in ("SEQ", "BATCH", "STEPS", "WARMUP", "REPEATS",
                                          "MIN_TOKENS", "PADDING", "CKPT", "ATTN", "COMPILE",
                                          "LIGER", "PROVIDERS", "CHECK_PLAIN",
                                          "PLAIN_REPEATS")
         if k in os.environ] + ["benchmarks/gpu/run_benchmarks.sh", shape, os.environ["MODES"]]),
}
spec["dataset"] = os.path.abspath(spec["dataset"])
if os.environ.get("CHECK_PLAIN") == "1":
    spec["check_plain"] = True
    spec["plain_repeats"] = int(os.environ.get("PLAIN_REPEATS", 1))
print(json.dumps(spec, indent=2))
EOF
cat "$run_dir/config.json"

echo "== engine: $shape $modes =="
# the runner rewrites its results after every variant: copy them out as they come, so a call
# cut short still returns what was measured
( while sleep 15; do cp "$run_dir"/results.* "$out/" 2>/dev/null; done ) &
copier=$!
timeout -k 60 "${RUNNER_LIMIT_S:-480}" python3 -m trainers.benchmark.runner "$run_dir"
echo "runner exit code $? after $(( $(date +%s) - start )) s"
kill "$copier" 2>/dev/null

if [ "$plain" = "plain" ] && [ -f "$run_dir/results.json" ]; then
  for provider in ${PLAIN_PROVIDERS:-huggingface}; do
    echo "== plain script: $provider lora16 =="
    timeout -k 20 "${PLAIN_LIMIT_S:-100}" python3 benchmarks/gpu/plain_reference.py \
      "$run_dir" "$provider" lora16 "$work/plain-$provider.json" > "$work/plain-$provider.log" 2>&1
    echo "exit code $?"; tail -n 1 "$work/plain-$provider.log"
  done
  python3 - "$work" > "$out/plain_reference.json" <<'EOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
print(json.dumps([json.loads(p.read_text()) for p in sorted(work.glob("plain-*.json"))], indent=2))
EOF
fi

for name in results.json results.md results.csv; do
  [ -f "$run_dir/$name" ] && cp "$run_dir/$name" "$out/"
done
(cd "$work" && tar -czf "$out/logs.tar.gz" run/events.jsonl run/config.json \
   run/variants/*/variant.log run/variants/*/result.json run/variants/*/profile-step*.txt plain-*.log \
   run/plain/plain_script.py run/plain/settings-*.json run/plain/plain-*.json \
   run/plain/plain-*.log 2>/dev/null)
echo "== $tag done in $(( $(date +%s) - start )) s =="
[ -f "$run_dir/results.md" ] && sed -n '/^| provider/,/^$/p' "$run_dir/results.md" \
  && sed -n '/^## Trust checks/,/^## Set-up/p' "$run_dir/results.md"
exit 0
