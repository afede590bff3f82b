"""The benchmark engine's measured steps against training runs of the same rows, step for step.

    python benchmarks/gpu/like_for_like.py ENGINE_RESULTS.json TRAIN_RESULTS.json [...] > TABLE.md

ENGINE_RESULTS.json is run_benchmarks.sh's; each TRAIN_RESULTS.json is train_gpu.py's from a run
with --in-order on a file from engine_order.py, so its step N trained the engine's batch N. For
every training run: its tokens and time over the engine's measured steps (time per step as the
product's progress events measure it, log to log) against the engine's run of the same provider.
"""

from __future__ import annotations

import json
import sys


def engine_window(engine: dict, provider: str) -> tuple[int, int, int, float]:
    """(first, last measured step, tokens, seconds) of the engine's run of provider."""
    run = next(r for r in engine["runs"] if r["provider"] == provider)
    timing = run["timing"]
    first = timing["warmup_steps"] + 1
    return first, timing["steps_run"], timing["measured_tokens"], timing["measured_time_s"]


def run_window(per_step: list, first: int, last: int) -> tuple[int, float]:
    """Tokens and seconds of steps first..last from a training run's progress events."""
    seen = {step: tokens for step, tokens, _, _ in per_step}
    seen[0] = 0
    window = [(step, rate) for step, _, rate, _ in per_step if first <= step <= last]
    tokens = [seen[step] - seen[step - 1] for step, _ in window]
    return sum(tokens), sum(t / rate for t, (_, rate) in zip(tokens, window))


def rows(engine: dict, runs: list[dict]) -> list[str]:
    out = []
    for run in runs:
        provider = run["what_ran"]["provider"]
        first, last, engine_tokens, engine_s = engine_window(engine, provider)
        tokens, seconds = run_window(run["per_step"], first, last)
        same = "yes" if tokens == engine_tokens else f"no ({tokens} vs {engine_tokens})"
        ours, theirs = tokens / seconds, engine_tokens / engine_s
        out.append(f"| {run['variant']} | {first}-{last} | {same} | {ours:,.0f} | "
                   f"{theirs:,.0f} | {ours / theirs:.3f} |")
    return out


def main(paths: list[str]) -> None:
    engine = json.loads(open(paths[0]).read())
    runs = [r for p in paths[1:] for r in json.loads(open(p).read())["results"] if r["per_step"]]
    print("| training run | steps | same tokens as the engine | tokens/s (run) | "
          "tokens/s (engine) | run / engine |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows(engine, runs)))


if __name__ == "__main__":
    main(sys.argv[1:])
