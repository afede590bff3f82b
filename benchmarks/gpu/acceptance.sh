#!/usr/bin/env bash
# The product's acceptance run on a lent GPU machine, one device call per part
# (benchmarks/gpu/acceptance.py says what each part checks):
#
#   bash benchmarks/gpu/acceptance.sh product                    Llama-3.2-1B: the walk-through
#   bash benchmarks/gpu/acceptance.sh matrix FAMILY [FAMILY...]  more families' matrix rows
#
# Before the call, here (the GPU machine has no network and lacks these):
#   ../shared/gpu/build_bundle.sh                 # training libraries -> .gpu/site.tar.xz
#   benchmarks/gpu/build_server_bundle.sh         # gradio, fastapi, uvicorn -> .gpu/server.tar.xz
#   python benchmarks/gpu/make_long_data.py ../shared/data .gpudata/long_sft.jsonl
# and carry [".gpu", ".gpudata"]. Results: $OUT/acceptance_<gpu>_<date>_<part>/ (results.json,
# results.md, server.log, nvidia-smi.txt); EXTRA_ARGS passes more flags to acceptance.py.
set -uo pipefail
part=${1:?usage: acceptance.sh product|matrix [FAMILY...]}; shift
families=("$@")
[ "$part" = product ] && [ ${#families[@]} -eq 0 ] && families=(llama-3.2-1b)

mkdir -p /tmp/s && tar -xJf .gpu/site.tar.xz -C /tmp/s && tar -xJf .gpu/server.tar.xz -C /tmp/s \
  || { echo "the bundles are missing: build them first (see this script's header)"; exit 2; }
export PYTHONPATH=/tmp/s/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 GRADIO_SSR_MODE=false

# A server or worker of an earlier call on the same machine runs in its own session: end it.
pkill -f "modelforge_ui.cli run" ; pkill -f "trainers.train.worker" ; sleep 2
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk '{print tolower($2)}')
out=${OUT:-/tmp/out}/acceptance_${gpu:-cpu}_$(date -u +%F)_$part
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
family_args=()
for f in "${families[@]}"; do family_args+=(--family "$f"); done
# shellcheck disable=SC2086
python3 benchmarks/gpu/acceptance.py "$part" "${family_args[@]}" \
  --data .gpudata/long_sft.jsonl --out "$out" ${EXTRA_ARGS:-}
