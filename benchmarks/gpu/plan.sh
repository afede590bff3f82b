#!/usr/bin/env bash
# Several GPU runs in one device call, back as one file (a call returns at most 8 files).
#
#   benchmarks/gpu/plan.sh PLAN_FILE
#
# Each non-comment line of PLAN_FILE is "NAME LIMIT_S COMMAND...": COMMAND runs with OUT set to
# its own folder and is stopped after LIMIT_S seconds. After every line, and every 30 s while
# one runs, everything written so far is packed into $OUT/plan.tar.gz, so a call cut short still
# returns what it had written. plan.log records each line's command, exit code and wall time.
# Stopped from outside, it stops the running line first: no line outlives the plan on a machine
# kept warm for the next call.
set -uo pipefail

plan=${1:?usage: plan.sh PLAN_FILE}
final_out=${OUT:-/tmp/out}
work=/tmp/mf-plan
rm -rf "$work" && mkdir -p "$work" "$final_out"
cp "$plan" "$work/plan.txt"
log="$work/plan.log"

pack() {  # $1: a name of its own for the part file
  tar -czf "$final_out/plan.tar.gz.$1" -C "$work" . 2>/dev/null && \
    mv "$final_out/plan.tar.gz.$1" "$final_out/plan.tar.gz"
}
packer=
stop_packer() {  # before the line's own packing, so an older periodic one never replaces it
  [ -n "$packer" ] || return 0
  pkill -P "$packer" 2>/dev/null; kill "$packer" 2>/dev/null; wait "$packer" 2>/dev/null
  rm -f "$final_out/plan.tar.gz.periodic"
  packer=
}
line_pid=
stop_line() {  # timeout gives the line a process group of its own: a kill of ours misses it
  [ -n "$line_pid" ] && kill -TERM "$line_pid" 2>/dev/null && wait "$line_pid" 2>/dev/null
  stop_packer
  pack stopped
  exit 143
}
trap stop_packer EXIT
trap stop_line TERM INT HUP

while read -r name limit command; do
  case "$name" in ''|'#'*) continue ;; esac
  started=$(date +%s)
  echo "== $name ($(date -u +%FT%TZ), limit $limit s): $command" | tee -a "$log"
  ( while sleep 30; do pack periodic; done ) 2>/dev/null &
  packer=$!
  OUT="$work/$name" timeout -k 30 "$limit" bash -c "$command" < /dev/null > "$work/$name.log" 2>&1 &
  line_pid=$!
  wait "$line_pid"
  code=$?
  line_pid=
  stop_packer
  echo "== $name exit code $code after $(( $(date +%s) - started )) s" | tee -a "$log"
  tail -n 25 "$work/$name.log"
  pack line
done < "$plan"
