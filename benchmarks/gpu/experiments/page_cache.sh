#!/usr/bin/env bash
# Issue 13 item 3: are the engine's slow Hugging Face steps the disk, loading CUDA kernels from
# library files that are not in the page cache yet (the first process on a fresh machine)?
# One A/B on one machine, Llama-3.2-1B shape (synthetic weights), lora16, padded, batch 8:
#   r1  the runner's first variant, warm_libraries off: the libraries as the machine had them
#   r2  evicted: the CUDA libraries dropped from the page cache (posix_fadvise), then the variant
#   r3  warmed: the libraries read once (what warm_libraries does), then the variant
#   r4  evicted, r5 warmed: the same again
#   r6  evicted, with the torch profiler on steps 2 and 4 (tables in variants/*/profile-step*.txt)
# Before each variant the libraries' resident share is recorded (mincore). Writes
# $OUT/page_cache/: summary.md, variants.json, arms.json, logs.tar.gz.
# SHAPE, STEPS, MIN_TOKENS, DATA, BATCH may be overridden (the CPU try-out uses a tiny shape).
set -uo pipefail
out="${OUT:-/tmp/out}/page_cache"
work=/tmp/mf-page-cache
run_dir=$work/run
rm -rf "$work" && mkdir -p "$run_dir" "$out"
export MODELFORGE_SYNTHETIC_DIR=${MODELFORGE_SYNTHETIC_DIR:-/tmp/mf-synthetic}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
start=$(date +%s)

python3 benchmarks/gpu/experiments/ab_spec.py "page cache A/B" benchmarks/gpu/experiments/page_cache.sh false > "$run_dir/config.json"

echo "== r1: the runner, libraries as found =="
python3 -m trainers.benchmark.page_cache resident > "$work/arm1.json"
timeout -k 30 "${RUNNER_LIMIT_S:-240}" python3 -m trainers.benchmark.runner "$run_dir"
echo "runner exit $? after $(( $(date +%s) - start )) s"

repeat=2
for arm in evict warm evict warm evict; do
  profile=""
  [ "$repeat" = 6 ] && profile=2,4
  echo "== r$repeat: $arm ${profile:+(profiling steps $profile)} =="
  python3 -m trainers.benchmark.page_cache "$arm" > "$work/arm$repeat.json"
  MODELFORGE_PROFILE_STEPS=$profile timeout -k 20 200 python3 -m trainers.benchmark.variant \
    "$run_dir" huggingface lora16 "$repeat" > "$work/huggingface-r$repeat.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s"
  repeat=$((repeat + 1))
done

python3 - "$run_dir" "$work" > "$out/summary.md" <<'PY'
import json, pathlib, statistics, sys
run, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
arms = {1: "as found"} | {i: a for i, a in enumerate(["evicted", "warmed", "evicted", "warmed",
                                                      "evicted, profiled 2,4"], start=2)}
found, cache = [], {}
print("| variant | libraries | resident before | tokens/s total | median step | slow steps "
      "(> 1.5 x median): step, s, host s, sync s |\n|---|---|---|---|---|---|")
for i, arm in arms.items():
    cache[i] = json.loads((work / f"arm{i}.json").read_text())
    share = cache[i].get("resident_share_after", cache[i].get("resident_share"))
    path = run / "variants" / f"huggingface-lora16-r{i}" / "result.json"
    r = json.loads(path.read_text()) if path.exists() else {"status": "missing"}
    if r.get("status") != "ok":
        print(f"| r{i} | {arm} | {share:.0%} | FAILED {r.get('message', r['status'])} | | |")
        continue
    t, per = r["timing"], r["step_costs"]["per_step"]
    med = statistics.median(t["step_times_s"][1:])
    slow = [f"{n}: {s:.2f}, {c.get('host_s')}, {c.get('sync_s')}"
            for n, (s, c) in enumerate(zip(t["step_times_s"], per), start=1)
            if n > 1 and s > 1.5 * med]
    found.append({"name": r["name"], "arm": arm, "cache": cache[i], "timing": t,
                  "step_costs": r["step_costs"]})
    print(f"| r{i} | {arm} | {share:.0%} | {t['tokens_per_s_total']:,.0f} | "
          f"{t['tokens_per_s']:,.0f} | {'; '.join(slow) or 'none'} |")
(work / "variants.json").write_text(json.dumps(found, indent=1))
(work / "arms.json").write_text(json.dumps(cache, indent=1))
PY
cp "$work/variants.json" "$work/arms.json" "$out/"
cp "$run_dir"/variants/*/profile-step*.txt "$out/" 2>/dev/null
(cd "$work" && tar -czf "$out/logs.tar.gz" run/events.jsonl run/config.json run/results.json \
   run/variants/*/variant.log ./*.log 2>/dev/null)
echo "== done in $(( $(date +%s) - start )) s =="
cat "$out/summary.md"
