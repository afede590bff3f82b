"""Runs side by side: their curves, the config fields that differ, and their outcomes.

One function for the REST API (GET /api/compare) and the Runs tab. Everything comes from the
run records and events.jsonl, so a running, stopped or failed run compares as far as it got.
Server side: no torch, no pandas.
"""

from __future__ import annotations

import math
import statistics
import time

from trainers.errors import ModelForgeError

MAX_RUNS = 32  # a whole sweep (trainers.runs.sweep.MAX_SWEEP_RUNS)
CURVES = ("loss", "eval_loss", "tokens_per_s", "memory_gib")
IGNORED_FIELDS = ("name",)  # each run's label, not a setting


class CompareError(ModelForgeError):
    """Bad ids for a comparison (HTTP 422; unknown ids are 404)."""

    error_type = "compare"


class UnknownRuns(ModelForgeError):
    error_type = "not_found"


def parse_ids(ids: list[str] | str | None) -> list[str]:
    """Ids from `a,b,c` and/or repeated values, in order, without repeats; at least two."""
    if isinstance(ids, str):
        ids = [ids]
    found: list[str] = []
    for part in ids or []:
        for one in str(part).split(","):
            one = one.strip()
            if one and one not in found:
                found.append(one)
    if len(found) < 2:
        raise CompareError(
            f"Comparing needs at least two run ids; got {len(found)}.",
            "Give two or more ids, comma-separated: GET /api/compare?ids=RUN_A,RUN_B "
            "(GET /api/runs lists them).")
    if len(found) > MAX_RUNS:
        raise CompareError(f"At most {MAX_RUNS} runs can be compared at once; got {len(found)}.",
                           f"Pick {MAX_RUNS} or fewer.")
    return found


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def curves(events: list[dict]) -> dict[str, list[list[float]]]:
    """[[step, value], ...] per curve. memory_gib: GPU memory allocated, or the worker's
    resident memory (process_rss_gib) for a run without a GPU."""
    progress = [e for e in events if e.get("type") == "progress"
                and isinstance(e.get("step"), int) and not e.get("variant")]
    evals = [e for e in events if e.get("type") == "eval" and isinstance(e.get("step"), int)]

    def points(rows, key):
        return [[r["step"], _num(r.get(key))] for r in rows if _num(r.get(key)) is not None]

    gpu = points(progress, "gpu_mem_allocated_gib")
    return {"loss": points(progress, "loss"), "eval_loss": points(evals, "eval_loss"),
            "tokens_per_s": points(progress, "tokens_per_s"),
            "memory_gib": gpu or points(progress, "process_rss_gib")}


def outcomes(run: dict, events: list[dict], run_curves: dict) -> dict:
    """Time, tokens/s, peak memory, final and best losses: the final event's where it has
    them, else what the events show so far."""
    summary = run.get("summary") or {}
    started = run.get("started_at")
    wall = _num(summary.get("wall_time_s"))
    if wall is None and started:
        wall = round((run.get("finished_at") or time.time()) - started, 2)
    speeds = [v for _, v in run_curves["tokens_per_s"]]
    evals = run_curves["eval_loss"]
    best = min(evals, key=lambda p: p[1]) if evals else None
    rss = [_num(e.get("process_rss_gib")) for e in events if e.get("type") == "progress"]
    gpu = _num(summary.get("peak_gpu_mem_allocated_gib"))
    if gpu is None:
        gpu_points = [e.get("gpu_mem_allocated_gib") for e in events
                      if e.get("type") == "progress" and _num(e.get("gpu_mem_allocated_gib"))]
        gpu = max(gpu_points) if gpu_points else None
    losses = run_curves["loss"]
    return {
        "status": run["status"],
        "time_s": wall,
        "steps": summary.get("steps") if isinstance(summary.get("steps"), int) else
        (losses[-1][0] if losses else None),
        "tokens_per_s": _num(summary.get("tokens_per_s")) or
        (round(statistics.median(speeds), 1) if speeds else None),
        "peak_gpu_mem_gib": gpu,
        "peak_rss_gib": max((r for r in rss if r is not None), default=None),
        "final_loss": _num(summary.get("final_loss")) or (losses[-1][1] if losses else None),
        "final_eval_loss": _num(summary.get("final_eval_loss")) or
        (evals[-1][1] if evals else None),
        "best_eval_loss": best[1] if best else None,
        "best_eval_step": best[0] if best else None,
    }


def differing_fields(configs: dict[str, dict]) -> list[dict]:
    """[{"field", "values": {run id: value}}] for each config field not equal in every run
    (a field one run lacks, from another version, shows as None)."""
    names: list[str] = []
    for config in configs.values():
        names += [k for k in config if k not in names and k not in IGNORED_FIELDS]
    rows = []
    for name in names:
        values = {run_id: config.get(name) for run_id, config in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"field": name, "values": values})
    return rows


def compare(manager, ids: list[str] | str | None) -> dict:
    """The comparison of the given training runs, for the API and the dashboard."""
    ids = parse_ids(ids)
    runs = {}
    missing = []
    for run_id in ids:
        try:
            runs[run_id] = manager.registry.get(run_id)
        except KeyError:
            missing.append(run_id)
    if missing:
        raise UnknownRuns(f"No run with id {', '.join(repr(m) for m in missing)}.",
                          "List the runs with GET /api/runs and use their ids.")
    not_training = [r for r in runs.values() if r["kind"] != "train"]
    if not_training:
        raise CompareError(f"Run {not_training[0]['id']} is a {not_training[0]['kind']}, not a "
                           "training run.", "Compare training runs (the Benchmark tab compares "
                                            "providers).")
    result = []
    for run_id, run in runs.items():
        events = manager.events(run_id)
        run_curves = curves(events)
        config = run["config"]
        result.append({"id": run_id, "name": run["name"], "status": run["status"],
                       "provider": config.get("provider"), "strategy": config.get("strategy"),
                       "model_name": config.get("model_name"),
                       "resumed_from": config.get("resume_from") or None,
                       "outcomes": outcomes(run, events, run_curves), "curves": run_curves})
    return {"ids": ids, "runs": result,
            "differing": differing_fields({r["id"]: runs[r["id"]]["config"] for r in result})}
