#!/usr/bin/env bash
# Issue 13 item 1 on the lent GPU: the engine's synthetic Llama-3.2-1B directory, built once, then
# each variant of benchmarks/gpu/experiments/unsloth_gap.py in its own fresh process, one after another.
#
#   benchmarks/gpu/experiments/unsloth_gap.sh "VARIANT ..." [PROFILED_VARIANT ...]
#
# Env: LIMIT_S (default 450: no variant starts after LIMIT_S - 75 s), VARIANT_LIMIT_S (150),
# DATA (.gpu/data/t0_mix_prompt_completion.jsonl), STEPS/WARMUP/BATCH/SEQ/MIN_TOKENS (see the .py).
# BARE_SFT=PATH also runs that copy of ../shared/reference/bare_sft.py unchanged (unsloth, BARE_ARGS
# "2048 8 15") first. Writes to $OUT: results.jsonl (one line per variant), summary.md, env.txt,
# logs.tar.gz, bare_sft.txt.
set -uo pipefail
variants=${1:?usage: unsloth_gap.sh "VARIANT ..." [PROFILED ...]}
shift
profiled=" $* "
out=${OUT:-/tmp/out}
work=/tmp/unsloth_gap
model=$work/model
data=${DATA:-.gpu/data/t0_mix_prompt_completion.jsonl}
limit=${LIMIT_S:-450}
start=$(date +%s)
mkdir -p "$work/logs" "$out"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export TORCH_LOGS=${TORCH_LOGS-recompiles}

{
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth",
             "unsloth_zoo", "triton", "bitsandbytes", "xformers", "flash_attn"):
    try:
        m = importlib.import_module(name) if name not in ("unsloth", "unsloth_zoo") else None
        if m is None:
            from importlib.metadata import version
            print(name, version(name))
        else:
            print(name, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "not importable:", type(exc).__name__)
import torch
print("torch cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
EOF
  echo "command: benchmarks/gpu/experiments/unsloth_gap.sh \"$variants\" $*"
  echo "env: STEPS=${STEPS:-25} WARMUP=${WARMUP:-3} BATCH=${BATCH:-8} SEQ=${SEQ:-2048} MIN_TOKENS=${MIN_TOKENS:-680} TORCH_LOGS=$TORCH_LOGS"
} > "$out/env.txt" 2>&1

if [ ! -f "$model/config.json" ]; then
  t=$(date +%s)
  python3 -m trainers.benchmark.synthetic llama-3.2-1b "$model" 42 > "$work/logs/make_model.log" 2>&1 \
    || { echo "model build failed"; tail -20 "$work/logs/make_model.log"; }
  echo "model built in $(( $(date +%s) - t )) s"
fi

# The reference script itself, unchanged (BARE_SFT=path of a copy of ../shared/reference/bare_sft.py)
if [ -n "${BARE_SFT:-}" ]; then
  t=$(date +%s)
  PADFREE=0 DATA="$data" OPTIM=adamw_torch_fused timeout -k 10 "${VARIANT_LIMIT_S:-150}" \
    python3 "$BARE_SFT" run unsloth 16 "$model" ${BARE_ARGS:-2048 8 15} > "$work/logs/bare_sft_unsloth.log" 2>&1
  rc=$?
  { echo "command: PADFREE=0 DATA=$data OPTIM=adamw_torch_fused python3 $BARE_SFT run unsloth 16 $model ${BARE_ARGS:-2048 8 15}"
    echo "rc=$rc in $(( $(date +%s) - t )) s"
    grep -a "Gradient accumulation\|Total batch size\|Num examples\|^RESULT" "$work/logs/bare_sft_unsloth.log"
  } | tee "$out/bare_sft.txt"
fi

for v in $variants; do
  elapsed=$(( $(date +%s) - start ))
  if [ $(( elapsed + 75 )) -gt "$limit" ]; then
    echo "SKIPPED $v (elapsed ${elapsed} s, limit ${limit} s)"; continue
  fi
  p=0; case "$profiled" in *" $v "*) p=1;; esac
  t=$(date +%s)
  PROFILE=$p timeout -k 10 "${VARIANT_LIMIT_S:-150}" python3 benchmarks/gpu/experiments/unsloth_gap.py run "$v" \
    "$model" "$data" "$out/results.jsonl" > "$work/logs/$v.log" 2>&1
  rc=$?
  echo "$v rc=$rc in $(( $(date +%s) - t )) s: $(grep '^RESULT' "$work/logs/$v.log" | cut -c8-300)"
  [ $rc -ne 0 ] && tail -5 "$work/logs/$v.log"
done

(cd "$work" && tar -czf "$out/logs.tar.gz" logs)
[ -f "$out/results.jsonl" ] && python3 benchmarks/gpu/experiments/unsloth_gap.py summary "$out/results.jsonl" \
  | tee "$out/summary.md"
echo "done in $(( $(date +%s) - start )) s"
