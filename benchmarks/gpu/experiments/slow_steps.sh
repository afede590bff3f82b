#!/usr/bin/env bash
# SHAPE (default llama-3.2-1b: synthetic weights) may be a model directory; STEPS, MIN_TOKENS, DATA.
# Issue 13 item 3: where do the engine's slow Hugging Face steps come from?
# One benchmark run directory (Llama-3.2-1B shape, lora16, the evidence rows), then the same
# variant process again and again, changing one thing at a time:
#   huggingface r1  cold Triton and Inductor caches (fresh directories), first process on the GPU
#   unsloth     r1  same caches, now holding what the HF run compiled
#   huggingface r2  warm caches (same directories): what repeat 2 saw in the earlier runs
#   huggingface r3  fresh, empty Triton cache again (the GPU and driver already warm)
#   unsloth     r2  warm caches
# Every variant records per-step costs (trainers/benchmark/step_costs.py): Triton compiles and
# their seconds, gc time, cudaMalloc calls, allocator retries. Writes $OUT/slow_steps/:
# results.json (the runner's), variants.json (every variant's timing and step costs), summary.md,
# logs.tar.gz.
#
#   benchmarks/gpu/experiments/slow_steps.sh env
# is the second step: only the Hugging Face variant (the runner's r1, then r10...), one
# environment change per process:
#   default                   as before
#   CUDA_CACHE_DISABLE=1      the driver's JIT cache off: every PTX kernel is compiled at first use
#   CUDA_MODULE_LOADING=EAGER every CUDA module loaded at start, none at first use
#   expandable_segments       PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# and writes $OUT/slow_steps_env/ (summary.md, variants.json, logs.tar.gz).
set -uo pipefail
experiment=${1:-caches}
out="${OUT:-/tmp/out}/slow_steps${1:+_$1}"
work=/tmp/mf-slow
run_dir=$work/run
rm -rf "$work" && mkdir -p "$run_dir" "$out"
export MODELFORGE_SYNTHETIC_DIR=${MODELFORGE_SYNTHETIC_DIR:-/tmp/mf-synthetic}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=$work/triton-a TORCHINDUCTOR_CACHE_DIR=$work/inductor-a
start=$(date +%s)

SHAPE=${SHAPE:-llama-3.2-1b} python3 - > "$run_dir/config.json" <<EOF
import json, os
shape = os.environ["SHAPE"]
print(json.dumps({
    "model": shape, "synthetic_weights": not os.path.isdir(shape), "modes": ["lora16"],
    "providers": ["huggingface"] if "$experiment" == "env" else ["huggingface", "unsloth"], "max_seq_length": 2048, "batch_size": 8,
    "steps": ${STEPS:-27}, "warmup_steps": 3, "repeats": 1,
    "padding": "padded", "variant_timeout_s": 200, "min_example_tokens": ${MIN_TOKENS:-680},
    "dataset": os.path.abspath("${DATA:-.gpu/data/t0_mix_prompt_completion.jsonl}"),
    "name": "slow steps", "invocation": "benchmarks/gpu/experiments/slow_steps.sh"}, indent=2))
EOF

echo "== runner: r1 of each provider (cold caches) =="
timeout -k 30 "${RUNNER_LIMIT_S:-300}" python3 -m trainers.benchmark.runner "$run_dir"
echo "runner exit $? after $(( $(date +%s) - start )) s"

variant() {  # PROVIDER REPEAT [ENV=VALUE ...]
  local provider=$1 repeat=$2; shift 2
  echo "== $provider r$repeat $* =="
  local extra=()
  [ "$provider" = unsloth ] && extra=(UNSLOTH_DISABLE_AUTO_PADDING_FREE=1)
  env "${extra[@]}" "$@" timeout -k 20 200 python3 -m trainers.benchmark.variant \
    "$run_dir" "$provider" lora16 "$repeat" > "$work/$provider-r$repeat.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s"
}
if [ "$experiment" = env ]; then
  echo "huggingface-lora16-r1 default, the runner's (first process on the GPU)" > "$work/settings.txt"
  repeat=10
for setting in "" CUDA_CACHE_DISABLE=1 CUDA_MODULE_LOADING=EAGER \
               PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ""; do
  echo "== huggingface r$repeat ${setting:-default} =="
  env $setting timeout -k 20 200 python3 -m trainers.benchmark.variant \
    "$run_dir" huggingface lora16 "$repeat" > "$work/huggingface-r$repeat.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s"
  echo "huggingface-lora16-r$repeat ${setting:-default}" >> "$work/settings.txt"
  repeat=$((repeat + 1))
done
python3 - "$run_dir" "$work/settings.txt" > "$out/summary.md" <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
settings = dict(line.split(" ", 1) for line in pathlib.Path(sys.argv[2]).read_text().splitlines())
found = []
for name, setting in settings.items():
    r = json.loads((run / "variants" / name / "result.json").read_text())
    if r.get("status") != "ok":
        print(f"{name} ({setting}): FAILED {r.get('message')}")
        continue
    t = r["timing"]
    found.append({"name": name, "setting": setting, "timing": t, "step_costs": r["step_costs"]})
    slow = [f"{i}:{s:.2f}" for i, s in enumerate(t["step_times_s"], start=1) if s > 1.0]
    print(f"{name} ({setting}): {t['tokens_per_s_total']:,.0f} tokens/s total, "
          f"{t['tokens_per_s']:,.0f} median step; steps over 1 s: {' '.join(slow)}")
(run.parent / "variants-env.json").write_text(json.dumps(found, indent=1))
PY
  cp "$work/variants-env.json" "$out/variants.json"
  (cd "$work" && tar -czf "$out/logs.tar.gz" run/variants/*/variant.log ./*.log settings.txt)
  cat "$out/summary.md"
  exit 0
fi
variant huggingface 2
variant huggingface 3 TRITON_CACHE_DIR=$work/triton-b
variant unsloth 2

python3 - "$run_dir" > "$out/summary.md" <<'EOF'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
found = []
for path in sorted(run.glob("variants/*/result.json")):
    r = json.loads(path.read_text())
    if r.get("status") != "ok":
        print(f"{r['name']}: FAILED {r.get('message')}\n")
        continue
    t, c = r["timing"], r["step_costs"]
    found.append({"name": r["name"], "timing": t, "step_costs": c})
    print(f"## {r['name']}\n\ntokens/s {t['tokens_per_s_total']:,.0f} total, "
          f"{t['tokens_per_s']:,.0f} median step; measured gc {c['measured_gc_s']} s, "
          f"Triton kernels {c['measured_jit_kernels']} ({c['measured_jit_s']} s), "
          f"cudaMalloc {c['measured_cuda_mallocs']}, retries {c['measured_alloc_retries']}; "
          f"hooks {c['triton_hooks']}\n")
    print("| step | s | gc s | cudaMalloc | retries | Triton kernels (s) |\n|---|---|---|---|---|---|")
    for i, (s, cost) in enumerate(zip(t["step_times_s"], c["per_step"]), start=1):
        jit = ", ".join(f"{n} {sec}" for n, sec in cost["jit"])
        print(f"| {i} | {s:.3f} | {cost['gc_s']} | {cost.get('cuda_mallocs', '-')} | "
              f"{cost.get('alloc_retries', '-')} | {jit} |")
    print()
(run.parent / "variants.json").write_text(json.dumps(found, indent=1))
EOF
cp "$work/variants.json" "$run_dir/results.json" "$out/" 2>/dev/null
(cd "$work" && tar -czf "$out/logs.tar.gz" run/events.jsonl run/config.json \
   run/variants/*/variant.log ./*.log 2>/dev/null)
echo "== done in $(( $(date +%s) - start )) s =="
grep -A2 "^## " "$out/summary.md" | grep -v "^--"
