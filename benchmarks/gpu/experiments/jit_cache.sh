#!/usr/bin/env bash
# Issue 13 item 3, second experiment (after page_cache.sh showed that the slow Hugging Face
# steps come in the first processes on a machine, whether the libraries' files are cached or
# not): are they the CUDA driver compiling kernels (its JIT cache, ~/.nv/ComputeCache) for
# cuDNN's attention, which Hugging Face's SDPA picks on this GPU? One variant per arm, Llama-3.2-1B
# shape, lora16, padded, batch 8, Hugging Face only:
#   r1  the runner's first variant, as found
#   r2  CUDA_CACHE_DISABLE=1: the driver's JIT cache off (every JIT compile happens again);
#       the torch profiler on step 2
#   r3  CUDA_CACHE_DISABLE=1 and cuDNN's SDPA backend disabled (torch.backends.cuda.enable_cudnn_sdp)
#   r4  as found again (cache on)
#   r5  CUDA_CACHE_DISABLE=1 again, no profiler
# The JIT cache's size is recorded before each arm. Writes $OUT/jit_cache/.
set -uo pipefail
out="${OUT:-/tmp/out}/jit_cache"
work=/tmp/mf-jit-cache
run_dir=$work/run
rm -rf "$work" && mkdir -p "$run_dir" "$out" "$work/no-cudnn-sdp"
export MODELFORGE_SYNTHETIC_DIR=${MODELFORGE_SYNTHETIC_DIR:-/tmp/mf-synthetic}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
start=$(date +%s)
cat > "$work/no-cudnn-sdp/sitecustomize.py" <<'PY'
import torch  # this experiment's arm only: SDPA may not pick cuDNN's attention
torch.backends.cuda.enable_cudnn_sdp(False)
PY

python3 benchmarks/gpu/experiments/ab_spec.py "driver JIT cache A/B" benchmarks/gpu/experiments/jit_cache.sh true > "$run_dir/config.json"
cache_size() { du -sk "${CUDA_CACHE_PATH:-$HOME/.nv/ComputeCache}" 2>/dev/null | cut -f1; }

echo "r1 as found, JIT cache $(cache_size) KiB" > "$work/arms.txt"
echo "== r1: the runner, as found =="
timeout -k 30 "${RUNNER_LIMIT_S:-200}" python3 -m trainers.benchmark.runner "$run_dir"
echo "runner exit $? after $(( $(date +%s) - start )) s"

arm() {  # REPEAT LABEL [ENV=VALUE ...]
  local repeat=$1 label=$2; shift 2
  echo "r$repeat $label, JIT cache $(cache_size) KiB before" >> "$work/arms.txt"
  echo "== r$repeat: $label =="
  env "$@" timeout -k 20 200 python3 -m trainers.benchmark.variant \
    "$run_dir" huggingface lora16 "$repeat" > "$work/huggingface-r$repeat.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s"
}
arm 2 "JIT cache off, profiled step 2" CUDA_CACHE_DISABLE=1 MODELFORGE_PROFILE_STEPS=2
arm 3 "JIT cache off, cuDNN SDPA off" CUDA_CACHE_DISABLE=1 PYTHONPATH="$work/no-cudnn-sdp:${PYTHONPATH:-}"
arm 4 "as found" CUDA_CACHE_DISABLE=
arm 5 "JIT cache off" CUDA_CACHE_DISABLE=1
echo "after all, JIT cache $(cache_size) KiB" >> "$work/arms.txt"

python3 - "$run_dir" "$work" > "$out/summary.md" <<'PY'
import json, pathlib, statistics, sys
run, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
print("\n".join(f"- {line}" for line in (work / "arms.txt").read_text().splitlines()) + "\n")
print("| variant | tokens/s total | median step | attention | slow steps (> 1.5 x median): "
      "step, s, host s, sync s |\n|---|---|---|---|---|")
found = []
for i in range(1, 6):
    path = run / "variants" / f"huggingface-lora16-r{i}" / "result.json"
    r = json.loads(path.read_text()) if path.exists() else {"status": "missing"}
    if r.get("status") != "ok":
        print(f"| r{i} | FAILED {r.get('message', r['status'])} | | | |")
        continue
    t, per = r["timing"], r["step_costs"]["per_step"]
    med = statistics.median(t["step_times_s"][1:])
    slow = [f"{n}: {s:.2f}, {c.get('host_s')}, {c.get('sync_s')}"
            for n, (s, c) in enumerate(zip(t["step_times_s"], per), start=1)
            if n > 1 and s > 1.5 * med]
    found.append({"name": r["name"], "timing": t, "step_costs": r["step_costs"]})
    print(f"| r{i} | {t['tokens_per_s_total']:,.0f} | {t['tokens_per_s']:,.0f} | "
          f"{r.get('provider_info', {}).get('attn_implementation', '-')} | "
          f"{'; '.join(slow) or 'none'} |")
(work / "variants.json").write_text(json.dumps(found, indent=1))
PY
cp "$work/variants.json" "$out/"
cp "$run_dir"/variants/*/profile-step*.txt "$out/" 2>/dev/null
(cd "$work" && tar -czf "$out/logs.tar.gz" run/events.jsonl run/config.json run/results.json \
   run/variants/*/variant.log ./*.log arms.txt 2>/dev/null)
echo "== done in $(( $(date +%s) - start )) s =="
cat "$out/summary.md"
