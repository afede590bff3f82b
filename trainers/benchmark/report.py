"""Matching checks, trust checks, the results table, and the JSON / Markdown / CSV export.

The table has one row per provider x mode (repeats averaged, their spread shown); every run is
also listed on its own. A variant that failed stays in both, with its reason. Trust checks say
whether the numbers can be taken as they are: the engine against the plain script (check_plain),
a CPU measurement (not GPU speed), too few measured steps, no warm-up.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from pathlib import Path

from trainers.benchmark.spec import MODE_LABELS, BenchmarkSpec

BASELINE = "huggingface"
RESULT_FILES = ("results.json", "results.md", "results.csv")
DATA_FACTS = ("dataset", "data_format", "num_examples", "distinct_rows", "rows_repeated",
              "left_out_fully_masked", "token_stats", "batch_facts")
PLAIN_BAND = (0.95, 1.05)  # engine / plain tokens/s outside this is flagged
REPEAT_BAND_PCT = 5.0  # repeats further apart than this are flagged
MIN_MEASURED_STEPS = 10
CPU_REASON = ("measured on the CPU (no CUDA device): CPU step times say nothing about GPU "
              "speed, and Unsloth's CPU backend runs none of its GPU kernels")


# --- matching --------------------------------------------------------------------------------

def _same(values: list) -> bool:
    return all(v == values[0] for v in values)


def _check(name: str, ok: bool, detail: str, required: bool = True) -> dict:
    return {"check": name, "ok": ok, "detail": detail, "required": required}


def loss_check(runs: list[dict], tolerance: float) -> dict:
    """Every first-step loss within `tolerance` (relative) of the baseline's first run."""
    reference = next((r for r in runs if r["provider"] == BASELINE), runs[0])
    ref = reference["loss"]["first_step"]
    values = {r["name"]: r["loss"]["first_step"] for r in runs}
    if ref is None or any(v is None for v in values.values()):
        return _check("first-step loss", False, f"a first-step loss is missing: {values}")
    worst = max(abs(v - ref) / abs(ref) for v in values.values())
    detail = (", ".join(f"{k} {v:.4f}" for k, v in values.items())
              + f"; largest relative difference {worst:.2e} (tolerance {tolerance:g})")
    return _check("first-step loss", worst <= tolerance, detail)


def token_check(runs: list[dict]) -> dict:
    """The trainers counted the same non-padding tokens, step by step, in every run."""
    counted = [r["tokens"]["trainer_per_step"] for r in runs]
    same = _same(counted) and _same([r["tokens"]["per_step"] for r in runs])
    detail = (f"{sum(counted[0])} non-padding tokens over {len(counted[0])} steps, identical "
              "per step for every run" if same else
              "per-step token counts differ: " + "; ".join(
                  f"{r['name']} {r['tokens']['trainer_per_step'][:5]}..." for r in runs))
    return _check("same token counts", same, detail)


def rows_check(runs: list[dict], required: bool) -> dict:
    """The trainers' counts equal the prepared rows' lengths, which tokens/s is computed from."""
    bad = [r["name"] for r in runs
           if r["tokens"]["trainer_per_step"] != r["tokens"]["per_step"]]
    detail = "the trainers' own token counts equal the rows' lengths" if not bad else \
        f"the trainers' own counts differ from the rows' lengths in {', '.join(bad)}"
    return _check("counted tokens = rows fed", not bad, detail, required)


def setting_check(runs: list[dict], label: str, read, required: bool = True) -> dict:
    values = {r["name"]: read(r) for r in runs}
    same = _same(list(values.values()))
    detail = f"{next(iter(values.values()))}" if same else \
        ", ".join(f"{k}: {v}" for k, v in values.items())
    return _check(label, same, detail, required)


def best_applied_check(runs: list[dict]) -> dict:
    """For padding "best": each trainer really ran what the runner decided (a library may turn
    a setting off by itself; Unsloth's CPU backend trains without padding-free)."""
    off = []
    for run in runs:
        best, eff = run.get("best") or {}, run["effective"]
        if best.get("padding_free") and not eff["padding_free"]:
            off.append(f"{run['name']}: padding-free asked, the trainer ran padded batches")
        if best.get("liger_kernel") and not eff.get("use_liger_kernel"):
            off.append(f"{run['name']}: Liger kernels asked, not used")
        asked = best.get("attention", "sdpa")
        if run["provider"] == "huggingface" and asked != (eff.get("attention") or "sdpa"):
            off.append(f"{run['name']}: attention {asked} asked, the model ran "
                       f"{eff.get('attention')}")
    return _check("each ran its best settings", not off,
                  "; ".join(off) or "as decided (see Each at its best)", required=False)


def matching(spec: BenchmarkSpec, runs: list[dict], mode: str) -> dict:
    """Matched-ness of the runs of one mode: the baseline and at least one other must have run."""
    of_mode = [r for r in runs if r["mode"] == mode]
    ok = [r for r in of_mode if r["status"] == "ok"]
    providers_ok = {r["provider"] for r in ok}
    if not ok or (len(spec.providers) > 1 and len(providers_ok) < 2):
        failed = sorted({r["provider"] for r in of_mode} - providers_ok)
        return {"matched": None, "verdict": "not checked",
                "detail": f"too few providers ran ({', '.join(failed)} failed)", "checks": []}
    unmatched = spec.padding in ("as_shipped", "best")  # not matched, by design
    checks = [
        token_check(ok),
        rows_check(ok, required=spec.padding == "padded"),
        loss_check(ok, spec.loss_rel_tolerance),
        setting_check(ok, "padding treatment (padding-free)",
                      lambda r: r["effective"]["padding_free"], required=not unmatched),
        setting_check(ok, "optimizer", lambda r: r["effective"]["optim"]),
        setting_check(ok, "cuDNN SDPA attention", lambda r: r["effective"].get("cudnn_sdp_enabled")),
        setting_check(ok, "trainable parameters",
                      lambda r: r["provider_info"].get("trainable_parameters")),
        setting_check(ok, "batch, learning rate, order",
                      lambda r: (r["effective"]["per_device_train_batch_size"],
                                 r["effective"]["learning_rate"],
                                 r["effective"]["train_sampling_strategy"])),
        setting_check(ok, "measured steps", lambda r: r["timing"]["measured_steps"]),
        setting_check(ok, "loss tokens in the first batch (informational)",
                      lambda r: r.get("first_batch", {}).get("loss_tokens"), required=False),
    ]
    if spec.padding == "best":
        checks.append(best_applied_check(ok))
    matched = all(c["ok"] for c in checks if c["required"])
    if spec.padding == "as_shipped":
        verdict = "as shipped (each library's defaults; not a matched comparison)"
    elif spec.padding == "best":
        verdict = ("each at its best (padding-free; checkpointing and kernels as each provider "
                   "fits best, see each run's `best`; not a matched comparison)")
    else:
        verdict = "matched" if matched else "NOT MATCHED"
    return {"matched": matched and not unmatched, "verdict": verdict, "checks": checks}


# --- the table -------------------------------------------------------------------------------

def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def run_mfu(run: dict) -> float | None:
    """Model FLOPs per second at the run's headline speed over the GPU's peak."""
    from trainers.flops import mfu

    flops = run["flops"]
    return mfu(flops["model_flops_per_token"] * run["timing"]["tokens_per_s_total"],
               flops.get("peak_tflops"))


def table_row(runs: list[dict], provider: str, mode: str) -> dict:
    """One provider x mode. tokens_per_s, the headline, is tokens over total measured time
    (every measured step counts, slow ones too), averaged over repeats; its range over repeats
    is tokens_per_s_low/high; tokens_per_s_median is the median-step figure beside it."""
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] != "ok"]
    row = {"provider": provider, "mode": mode, "runs": len(runs), "runs_ok": len(ok),
           "status": "ok" if not failed else ("failed" if not ok else "partly failed"),
           "reason": failed[0].get("message") if failed else None}
    if not ok:
        return row
    totals = [r["timing"]["tokens_per_s_total"] for r in ok]
    row.update(
        process_wall_s=_mean([r["process_wall_s"] for r in ok]),
        train_wall_s=_mean([r["timing"]["train_wall_s"] for r in ok]),
        tokens_per_s=_mean(totals), tokens_per_s_low=min(totals), tokens_per_s_high=max(totals),
        repeat_spread_pct=100 * (max(totals) - min(totals)) / _mean(totals)
        if len(ok) > 1 else None,
        tokens_per_s_median=_mean([r["timing"]["tokens_per_s"] for r in ok]),
        samples_per_s=_mean([r["samples_per_s"] for r in ok]),
        median_step_s=_mean([r["timing"]["median_step_s"] for r in ok]),
        peak_allocated_gib=_max([r["memory"]["max_allocated_gib"] for r in ok]),
        peak_reserved_gib=_max([r["memory"]["max_reserved_gib"] for r in ok]),
        nvml_peak_gib=_max([r["memory"]["nvml_peak_used_gib"] for r in ok]),
        mfu=_mean([run_mfu(r) for r in ok]),
        first_step_loss=ok[0]["loss"]["first_step"],
        unsloth_evidence=ok[0]["provider_info"].get("unsloth"))
    return row


def _max(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def add_comparisons(rows: list[dict]) -> None:
    """Speedup and memory reduction against the baseline of the same mode."""
    base = {r["mode"]: r for r in rows if r["provider"] == BASELINE and r.get("tokens_per_s")}
    for row in rows:
        ref = base.get(row["mode"])
        if ref is None or not row.get("tokens_per_s"):
            row["speedup"] = row["vram_reduction_pct"] = None
            continue
        row["speedup"] = row["tokens_per_s"] / ref["tokens_per_s"]
        a, b = row.get("peak_allocated_gib"), ref.get("peak_allocated_gib")
        row["vram_reduction_pct"] = 100 * (1 - a / b) if a is not None and b else None


# --- trust: the plain script, the device, the measurement ---------------------------------

def _ok_plain(plain_runs: list[dict], provider: str, mode: str) -> list[dict]:
    return [p for p in plain_runs if p["provider"] == provider and p["mode"] == mode
            and p["status"] == "ok"]


def add_plain(rows: list[dict], plain_runs: list[dict]) -> None:
    """Engine tokens/s over the plain script's, per provider and mode: by total measured time
    (the headline, engine_vs_plain_ratio) and by median step (engine_vs_plain_ratio_median),
    each side the mean of its runs; the plain runs' range beside it."""
    for row in rows:
        plain = _ok_plain(plain_runs, row["provider"], row["mode"])
        if not plain or not row.get("tokens_per_s"):
            continue
        totals = [p["timing"]["tokens_per_s_total"] for p in plain]
        total, median = _mean(totals), _mean([p["timing"]["tokens_per_s"] for p in plain])
        row.update(plain_runs_ok=len(plain), plain_tokens_per_s=total,
                   plain_tokens_per_s_low=min(totals), plain_tokens_per_s_high=max(totals),
                   plain_tokens_per_s_median=median,
                   engine_vs_plain_ratio=row["tokens_per_s"] / total,
                   engine_vs_plain_ratio_median=row["tokens_per_s_median"] / median)


def in_band(ratio: float | None) -> bool:
    return ratio is not None and PLAIN_BAND[0] <= ratio <= PLAIN_BAND[1]


def ratio_check(row: dict) -> dict:
    """Flagged unless engine/plain tokens/s is within the band, in total and by median step."""
    name = f"engine vs plain script tokens/s, {row['provider']} {row['mode']}"
    ratios = (row.get("engine_vs_plain_ratio"), row.get("engine_vs_plain_ratio_median"))
    if None in ratios:
        return _check(name, False, "no ratio: the engine's or the plain script's run failed")
    plain_runs = row.get("plain_runs_ok", 1)
    plain = f"{row['plain_tokens_per_s']:,.0f}" + ("" if plain_runs < 2 else (
        f", the mean of {plain_runs} plain runs, {row['plain_tokens_per_s_low']:,.0f} to "
        f"{row['plain_tokens_per_s_high']:,.0f}"))
    detail = (f"engine/plain {ratios[0]:.3f} in total measured time ({row['tokens_per_s']:,.0f} "
              f"vs {plain}), {ratios[1]:.3f} by median step "
              f"({row['tokens_per_s_median']:,.0f} vs {row['plain_tokens_per_s_median']:,.0f}); "
              f"band {PLAIN_BAND[0]}-{PLAIN_BAND[1]}")
    return _check(name, in_band(ratios[0]) and in_band(ratios[1]), detail)


def repeat_checks(rows: list[dict], runs: list[dict] = (), plain_runs: list[dict] = (),
                  warmup: int = 0) -> list[dict]:
    """Repeats of one provider x mode must agree within REPEAT_BAND_PCT, or it is said, with
    where the difference lies; the same for the plain script's repeats."""
    checks = []
    for row in rows:
        for side, prefix, count, side_runs in (
                ("repeats", "", "runs_ok", runs),
                ("plain script's repeats", "plain_", "plain_runs_ok", plain_runs)):
            if row.get(count, 0) < 2:
                continue
            low, high = row[f"{prefix}tokens_per_s_low"], row[f"{prefix}tokens_per_s_high"]
            spread = 100 * (high - low) / row[f"{prefix}tokens_per_s"]
            detail = (f"{row[count]} repeats: {low:,.0f} to {high:,.0f} tokens/s, a spread of "
                      f"{spread:.1f}% of their mean")
            if spread > REPEAT_BAND_PCT:
                mine = [r for r in side_runs if r["provider"] == row["provider"]
                        and r["mode"] == row["mode"] and r.get("status") == "ok"]
                detail += _largest_step_gap(mine, warmup)
            checks.append(_check(
                f"{side} agree within {REPEAT_BAND_PCT:g}%, {row['provider']} {row['mode']}",
                spread <= REPEAT_BAND_PCT, detail))
    return checks


def _largest_step_gap(runs: list[dict], warmup: int) -> str:
    """Where the fastest and the slowest repeat differ. They train the same batches in the same
    order, so step i is the same work in both: one step holding most of the difference is a
    one-off stall (the garbage collector's share is named when it was recorded); many small
    ones are the machine's step-to-step noise."""
    if len(runs) < 2:
        return ""
    fast = max(runs, key=lambda r: r["timing"]["tokens_per_s_total"])
    slow = min(runs, key=lambda r: r["timing"]["tokens_per_s_total"])
    a, b = fast["timing"]["step_times_s"], slow["timing"]["step_times_s"]
    steps = range(warmup, min(len(a), len(b)))
    if not steps:
        return ""
    i = max(steps, key=lambda i: b[i] - a[i])
    total = sum(b[j] - a[j] for j in steps)
    per_step = (slow.get("step_costs") or {}).get("per_step") or []
    gc_s = per_step[i].get("gc_s", 0.0) if i < len(per_step) else 0.0
    gc = f", {gc_s:.2f} s of it in Python's garbage collector" if gc_s >= 0.05 else ""
    return (f"; {slow['name']}'s measured steps took {total:.2f} s longer than "
            f"{fast['name']}'s, the most in step {i + 1}: {b[i]:.2f} s against {a[i]:.2f} s{gc}")


def compile_checks(runs: list[dict], warmup: int) -> list[dict]:
    """A torch.compile during a measured step is a one-off cost that a long run would not see
    again: flagged, with the steps and their time, so a total it dominates is not trusted."""
    checks = []
    for run in runs:
        per_step = (run.get("step_costs") or {}).get("per_step") or []
        if run.get("status") != "ok" or not per_step or "compiled_frames" not in per_step[0]:
            continue  # results from before compiled frames were recorded
        times = run["timing"]["step_times_s"]
        hit = [(i + 1, times[i]) for i, s in enumerate(per_step)
               if i >= warmup and s.get("compiled_frames")]
        detail = ("no frame compiled after the warm-up" if not hit else
                  "torch.compile ran in measured step " + ", ".join(
                      f"{step} ({t:.2f} s)" for step, t in hit)
                  + f" of {sum(times[warmup:]):.2f} s measured: a one-off cost of this shape")
        checks.append(_check(f"no compile in the measured steps, {run['name']}", not hit, detail))
    return checks


def plain_run_checks(spec: BenchmarkSpec, plain: dict, engine: dict) -> list[dict]:
    """The plain script trained what the engine trained, with the bare libraries only."""
    where = _plain_where(spec, plain)
    ref, got = engine["loss"]["first_step"], plain["loss"]["first_step"]
    off = abs(got - ref) / abs(ref) if None not in (ref, got) and ref else None
    shared = sorted(set(plain["effective"]) & set(engine["effective"]))
    differ = [f"{k}: engine {engine['effective'][k]!r}, plain {plain['effective'][k]!r}"
              for k in shared if engine["effective"][k] != plain["effective"][k]]
    same_tokens = plain["tokens"]["trainer_per_step"] == engine["tokens"]["trainer_per_step"]
    return [
        _check(f"plain script imports no ModelForge code, {where}", not plain["trainers_modules"],
               "no `trainers` module was loaded in its process" if not plain["trainers_modules"]
               else f"loaded: {', '.join(plain['trainers_modules'][:5])}"),
        _check(f"plain script: same first-step loss, {where}",
               off is not None and off <= spec.loss_rel_tolerance,
               f"plain {got}, engine {ref}" + ("" if off is None else
                                               f"; relative difference {off:.2e} (tolerance "
                                               f"{spec.loss_rel_tolerance:g})")),
        _check(f"plain script: same token counts, {where}", same_tokens,
               f"{sum(plain['tokens']['trainer_per_step'])} non-padding tokens, identical per "
               "step" if same_tokens else "the trainers' per-step token counts differ"),
        _check(f"plain script: same trainer settings, {where}", not differ,
               f"{len(shared)} effective settings equal" if not differ else "; ".join(differ)),
    ]


def _plain_where(spec: BenchmarkSpec, plain: dict) -> str:
    """"PROVIDER MODE", with the repeat when the plain script runs more than once."""
    where = f"{plain['provider']} {plain['mode']}"
    return where if spec.plain_repeats < 2 else f"{where}, plain repeat {plain.get('repeat')}"


def plain_checks(spec: BenchmarkSpec, rows: list[dict], runs: list[dict],
                 plain_runs: list[dict]) -> list[dict]:
    """Per provider and mode the engine/plain ratio once; per plain run what it trained."""
    checks = []
    for row in rows:
        mine = [p for p in plain_runs
                if p["provider"] == row["provider"] and p["mode"] == row["mode"]]
        engine = next((r for r in runs if r["provider"] == row["provider"]
                       and r["mode"] == row["mode"] and r["status"] == "ok"), None)
        if any(p["status"] == "ok" for p in mine) and engine is not None:
            checks.append(ratio_check(row))
        for plain in mine:
            if plain["status"] != "ok" or engine is None:
                checks.append(_check(f"plain script, {_plain_where(spec, plain)}", False,
                                     plain.get("message") or "the engine's run of it failed"))
            else:
                checks += plain_run_checks(spec, plain, engine)
    return checks


def representative(runs: list[dict]) -> tuple[bool | None, str]:
    """Whether the speed says anything about a GPU, and why (not)."""
    devices = {r["device"]["device"] for r in runs if r["status"] == "ok"}
    if not devices:
        return None, "no run measured"
    if "cpu" in devices:
        return False, CPU_REASON
    return True, "measured on " + ", ".join(sorted(
        {r["device"].get("device_name") or "cuda" for r in runs if r["status"] == "ok"}))


def measurement_checks(spec: BenchmarkSpec, fair: bool | None, why: str) -> list[dict]:
    return [
        _check("representative of GPU speed", bool(fair), why),
        _check(f"at least {MIN_MEASURED_STEPS} measured steps", spec.steps >= MIN_MEASURED_STEPS,
               f"{spec.steps} measured steps" + ("" if spec.steps >= MIN_MEASURED_STEPS else
                                                 ": a median of so few steps is noise")),
        _check("warm-up steps left out", spec.warmup_steps > 0,
               f"{spec.warmup_steps} warm-up steps" + ("" if spec.warmup_steps else
                                                       ": compilation and first-use costs are "
                                                       "in the measured steps")),
    ]


def build(spec: BenchmarkSpec, prepared: dict, environment: dict, runs: list[dict],
          command: str, planned: int, plain_runs: list[dict] = ()) -> dict:
    plain_runs = list(plain_runs)
    rows = [table_row([r for r in runs if r["provider"] == p and r["mode"] == m], p, m)
            for m in spec.modes for p in spec.providers
            if any(r["provider"] == p and r["mode"] == m for r in runs)]
    add_comparisons(rows)
    add_plain(rows, plain_runs)
    fair, why = representative(runs)
    match = {m: matching(spec, runs, m) for m in spec.modes if any(r["mode"] == m for r in runs)}
    for row in rows:
        row["matched"] = match[row["mode"]]["verdict"]
    first_ok = next((r for r in runs if r["status"] == "ok"), None)
    return {
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "complete": len(runs) == planned, "planned_runs": planned, "runs_done": len(runs),
        "spec": spec.model_dump(mode="json"),
        "synthetic_weights": prepared.get("synthetic"),
        "data": {k: prepared.get(k) for k in DATA_FACTS},
        "model_dir": prepared.get("model_dir"),
        "environment": {**environment,
                        "device": first_ok["device"] if first_ok else None,
                        "torch_cuda": first_ok["torch_cuda"] if first_ok else None},
        "command": command, "table": rows, "matching": match,
        "best_settings": prepared.get("best_settings") or {},
        "page_cache": prepared.get("page_cache"),
        "representative": fair, "representative_reason": why,
        "engine_vs_plain_ratio": _ratios(rows, "engine_vs_plain_ratio"),
        "engine_vs_plain_ratio_median": _ratios(rows, "engine_vs_plain_ratio_median"),
        "checks": measurement_checks(spec, fair, why)
        + repeat_checks(rows, runs, plain_runs, spec.warmup_steps)
        + compile_checks(runs, spec.warmup_steps)
        + plain_checks(spec, rows, runs, plain_runs),
        "runs": runs, "plain_runs": plain_runs,
    }


def _ratios(rows: list[dict], key: str) -> dict:
    """{provider: {mode: ratio}} for the rows that have one."""
    out: dict = {}
    for row in rows:
        if row.get(key) is not None:
            out.setdefault(row["provider"], {})[row["mode"]] = row[key]
    return out


# --- export ----------------------------------------------------------------------------------

def fmt(value, pattern: str = "{:.1f}", empty: str = "-") -> str:
    return empty if value is None else pattern.format(value)


TABLE_HEADER = ["provider", "mode", "status", "wall s (whole)", "train s", "tokens/s",
                "tokens/s (median step)", "speedup vs HF", "peak VRAM GiB", "VRAM saved vs HF",
                "MFU", "first-step loss", "engine/plain (total / median)", "matching"]
NOT_GPU_SPEED = "tokens/s (CPU: not GPU speed)"


def table_header(summary: dict) -> list[str]:
    """The table's header; on a CPU its speed column says so (the CLI prints this table)."""
    if summary.get("representative") is False:
        return [NOT_GPU_SPEED if h == "tokens/s" else h for h in TABLE_HEADER]
    return TABLE_HEADER


def plain_cell(row: dict) -> str:
    ratios = (row.get("engine_vs_plain_ratio"), row.get("engine_vs_plain_ratio_median"))
    if None in ratios:
        return "-"
    flag = "" if in_band(ratios[0]) and in_band(ratios[1]) else " FLAGGED"
    return f"{ratios[0]:.3f} / {ratios[1]:.3f}{flag}"


def table_cells(row: dict) -> list[str]:
    if row["status"] == "failed":
        reason = (row.get("reason") or "").replace("|", "/").replace("\n", " ")[:160]
        mode = MODE_LABELS.get(row["mode"], row["mode"])
        return [row["provider"], mode, f"FAILED: {reason}"] + ["-"] * 10 + [row["matched"]]
    spread = "" if row["runs_ok"] < 2 else \
        f" ({row['tokens_per_s_low']:.0f}-{row['tokens_per_s_high']:.0f})"
    return [row["provider"], MODE_LABELS.get(row["mode"], row["mode"]),
            row["status"] + (f" {row['runs_ok']}/{row['runs']}" if row["runs"] > 1 else ""),
            fmt(row.get("process_wall_s")), fmt(row.get("train_wall_s")),
            fmt(row.get("tokens_per_s"), "{:,.0f}") + spread,
            fmt(row.get("tokens_per_s_median"), "{:,.0f}"), fmt(row.get("speedup"), "{:.2f}x"), fmt(row.get("peak_allocated_gib"), "{:.2f}"),
            fmt(row.get("vram_reduction_pct"), "{:.1f}%"),
            fmt(None if row.get("mfu") is None else 100 * row["mfu"], "{:.1f}%"),
            fmt(row.get("first_step_loss"), "{:.4f}"), plain_cell(row), row["matched"]]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def run_cells(run: dict) -> list[str]:
    if run["status"] != "ok":
        return [run["name"], "failed", (run.get("message") or "")[:200].replace("|", "/"),
                *["-"] * 7]
    t = run["timing"]
    return [run["name"], "ok", fmt(t["tokens_per_s_total"], "{:,.0f}"),
            fmt(t["tokens_per_s"], "{:,.0f}"),
            f"{t['median_step_s']:.3f} ({t['min_step_s']:.3f}-{t['max_step_s']:.3f})",
            f"{t['measured_steps']}", fmt(run["memory"]["max_allocated_gib"], "{:.2f}"),
            fmt(run["memory"]["max_reserved_gib"], "{:.2f}"),
            fmt(run["memory"].get("nvml_peak_used_gib"), "{:.2f}"),  # the plain script has none
            fmt(run["loss"]["first_step"], "{:.4f}")]


def data_lines(summary: dict) -> list[str]:
    """What the rows were: lengths, padding and loss tokens."""
    data, spec = summary["data"], summary["spec"]
    stats, facts = data.get("token_stats") or {}, data.get("batch_facts")
    lines = [f"- {stats.get('count')} rows fed, drawn from {data.get('distinct_rows')} eligible"
             + (" (repeated to fill every step)" if data.get("rows_repeated") else "") + " of "
             f"`{data.get('dataset')}`; tokens per row min / median / max {stats.get('min')} / "
             f"{stats.get('median')} / {stats.get('max')} (p95 {stats.get('p95')}); "
             f"{stats.get('truncated', 0)} truncated at {spec['max_seq_length']}"]
    if facts:
        loss = "completion-only loss" if spec["completion_only_loss"] else "full-sequence loss"
        lines += [f"- padding: {100 * facts['padding_share_when_padded']:.1f}% of the token slots "
                  f"of batches padded to their longest row (runs that pad; padding-free runs "
                  f"have none)",
                  f"- loss tokens: {100 * facts['loss_token_share']:.1f}% of the tokens ({loss})"]
    return lines


def page_cache_lines(summary: dict) -> list[str]:
    cache = summary.get("page_cache")
    if not cache:
        return []
    if cache.get("no_gpu"):
        return ["- CUDA libraries not warmed: no GPU on this machine"]
    if not cache["warmed"]:
        return [f"- CUDA libraries not warmed (warm_libraries off): "
                f"{100 * (cache['resident_share'] or 0):.0f}% of {cache['bytes'] / 2**30:.1f} GiB "
                "in the page cache before the first variant"]
    return [f"- CUDA libraries read into the page cache before the first variant: "
            f"{cache['bytes_read'] / 2**30:.1f} GiB in {cache['seconds']} s, "
            f"{100 * (cache['resident_share_before'] or 0):.0f}% resident before"]


def own_code_lines(spec: dict) -> list[str]:
    """What a user of the bare libraries sets to get these runs' speed (docs/benchmarking.md)."""
    lines = ["- `SFTConfig(gradient_accumulation_steps=1, ...)` and the other trainer arguments "
             "explicitly when `unsloth` is imported: it changes TRL's defaults (accumulation 2, "
             "weight decay, warm-up, seed, optimizer, learning rate)."]
    if not spec.get("cudnn_attention", True):
        lines.append("- `torch.backends.cuda.enable_cudnn_sdp(False)` before training: these "
                     "runs had cuDNN's SDPA attention off (on an H200 with torch 2.11 it stalled "
                     "~2 s at new batch shapes and ran slower); `cudnn_attention: true` measures "
                     "it on.")
    if spec.get("padding") == "best":
        lines.append("- each at its best: `SFTConfig(padding_free=True, max_length=None)` on "
                     "rows you truncated yourself, `gradient_checkpointing=False` where it fits, "
                     "`use_liger_kernel=True` for Hugging Face (pip install liger-kernel), and "
                     "for Hugging Face an attention that keeps each packed row to itself (one "
                     "varlen flash-attention call per layer on a GPU) instead of one mask over "
                     "the whole batch (registered with transformers' "
                     "`AttentionInterface`: `per_row_attention` in the generated "
                     "`plain/plain_script.py`) and, for its 16-bit LoRA, LoRA layers that keep "
                     "their input in bf16 and add their branch inside the up-projection's GEMM "
                     "(`fused_lora_forward` there), with `PYTORCH_ALLOC_CONF=expandable_segments:"
                     "True` in its environment (Unsloth sets it itself); in ModelForge "
                     "`speed_mode: true` decides these for your GPU.")
    return lines


def best_lines(summary: dict) -> list[str]:
    """For padding "best": what each provider ran with, and why."""
    best = summary.get("best_settings") or {}
    if not best:
        return []
    lines = ["## Each at its best", ""]
    for key, d in best.items():
        attention = (f"; attention {d['attention']} ({d['attention_reason']})"
                     if "attention" in d else "")  # results from before it was decided
        fused = (f"; fused LoRA layers {'on' if d['fused_lora'] else 'off'} "
                 f"({d['fused_lora_reason']})" if "fused_lora" in d else "")
        lines.append(f"- {key}: padding-free; gradient checkpointing "
                     f"{'on' if d['gradient_checkpointing'] else 'off'} "
                     f"({d['gradient_checkpointing_reason']}); Liger kernels "
                     f"{'on' if d['liger_kernel'] else 'off'} ({d['liger_kernel_reason']})"
                     f"{attention}{fused}")
    return lines + [""]


def check_lines(checks: list[dict]) -> list[str]:
    return [f"- {c['check']}: {'ok' if c['ok'] else 'FLAGGED'}: {c['detail']}" for c in checks]


def markdown(summary: dict) -> str:
    spec = summary["spec"]
    env = summary["environment"]
    device = env.get("device") or {}
    gpu = env["gpus"][0] if env.get("gpus") else {}
    synthetic = summary.get("synthetic_weights")
    title = f"# Benchmark: {spec['model']}" + (" (synthetic weights)" if synthetic else "")
    parts = [title, "",
             f"Generated {summary['generated_at']}; {summary['runs_done']} of "
             f"{summary['planned_runs']} runs done.", ""]
    if synthetic:
        parts += [f"**Synthetic weights**: random-init {synthetic['family']} built from the "
                  f"public config.json of {synthetic['values_from']}. Speed and memory are the "
                  "architecture's; the loss values are not a trained model's.", ""]
    if summary.get("representative") is False:
        parts += [f"**Not representative of GPU speed**: {summary['representative_reason']}.",
                  ""]
    plain = summary.get("plain_runs") or []
    parts += [_md_table(table_header(summary), [table_cells(r) for r in summary["table"]]), "",
              "tokens/s: non-padding tokens over the total time of the measured steps (after the "
              "warm-up), mean of the repeats, their range in brackets; the median-step figure "
              "(mean tokens per step over the median step time) is beside it. Peak VRAM: "
              "torch.cuda.max_memory_allocated. MFU: model FLOPs (formula below) over the GPU's "
              "dense bf16 peak. engine/plain: the engine's tokens/s over the plain script's "
              "(bare libraries, same rows and settings; the mean of its runs), in total measured "
              f"time and by median step; outside {PLAIN_BAND[0]}-{PLAIN_BAND[1]} it is flagged.",
              "", "## Runs", "",
              _md_table(["run", "status", "tokens/s", "tokens/s (median step)",
                         "median step s (min-max)", "steps",
                         "max allocated GiB", "max reserved GiB", "NVML used GiB",
                         "first-step loss"], [run_cells(r) for r in summary["runs"]]
                        + [run_cells(r) for r in plain]), "",
              "## Data", "", *data_lines(summary), *page_cache_lines(summary), "",
              "## Trust checks", "", *check_lines(summary.get("checks", [])), "",
              *best_lines(summary),
              "## Matching", ""]
    for mode, result in summary["matching"].items():
        parts.append(f"- **{mode}**: {result['verdict']}" +
                     (f" ({result['detail']})" if result.get("detail") else ""))
        for c in result["checks"]:
            mark = "ok" if c["ok"] else ("DIFFERS" if c["required"] else "differs (allowed)")
            parts.append(f"  - {c['check']}: {mark}: {c['detail']}")
    parts += ["", "## In your own code", "", *own_code_lines(spec)]
    parts += ["", "## Set-up", "",
              f"- spec: `{json.dumps(spec, sort_keys=True)}`",
              f"- data: `{json.dumps(summary['data'])}`",
              f"- GPU: {device.get('device_name') or gpu.get('name') or 'none'}; driver "
              f"{gpu.get('driver_version', '-')}; CUDA (torch build) {env.get('torch_cuda')}",
              f"- versions: `{json.dumps(env.get('versions'))}`",
              f"- python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs",
              f"- command: `{summary['command']}`"]
    flops = next((r["flops"] for r in summary["runs"] if r["status"] == "ok"), None)
    if flops:
        parts.append(f"- MFU formula: {flops['formula']}; peak {flops['peak_tflops']} TFLOP/s "
                     f"({flops['peak_source']})")
    for run in summary["runs"] + plain:
        parts.append(f"- {run['name']}: `{run.get('command', '')}`")
    return "\n".join(parts) + "\n"


CSV_COLUMNS = ["name", "provider", "mode", "repeat", "status", "error", "process_wall_s",
               "train_wall_s", "load_s", "tokens_per_s", "tokens_per_s_min", "tokens_per_s_max",
               "tokens_per_s_total", "samples_per_s", "median_step_s", "min_step_s",
               "max_step_s", "measured_steps", "measured_tokens", "max_allocated_gib",
               "max_reserved_gib", "nvml_peak_used_gib", "mfu", "first_step_loss",
               "final_loss", "padding_free", "optim", "trainable_parameters"]


def csv_row(run: dict) -> dict:
    row = {k: run.get(k) for k in ("name", "provider", "mode", "repeat", "status",
                                   "process_wall_s")}
    if run["status"] != "ok":
        return {**row, "error": run.get("message")}
    t, m = run["timing"], run["memory"]
    curve = [v for v in run["loss"]["curve"] if v is not None]
    row.update({k: t[k] for k in ("train_wall_s", "load_s", "tokens_per_s", "tokens_per_s_min",
                                  "tokens_per_s_max", "tokens_per_s_total", "median_step_s",
                                  "min_step_s", "max_step_s", "measured_steps",
                                  "measured_tokens")})
    row.update({k: m[k] for k in ("max_allocated_gib", "max_reserved_gib", "nvml_peak_used_gib")})
    row.update(samples_per_s=run["samples_per_s"], mfu=run["flops"]["mfu"],
               first_step_loss=run["loss"]["first_step"],
               final_loss=curve[-1] if curve else None,
               padding_free=run["effective"]["padding_free"], optim=run["effective"]["optim"],
               trainable_parameters=run["provider_info"].get("trainable_parameters"))
    return row


def to_csv(summary: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for run in summary["runs"]:
        writer.writerow(csv_row(run))
    return buffer.getvalue()


def write_all(run_dir: str | Path, summary: dict) -> list[Path]:
    run_dir = Path(run_dir)
    texts = {"results.json": json.dumps(summary, indent=2, default=str),
             "results.md": markdown(summary), "results.csv": to_csv(summary)}
    paths = []
    for name, text in texts.items():
        tmp = run_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(run_dir / name)
        paths.append(run_dir / name)
    return paths


def event_summary(summary: dict, run_dir: str | Path) -> dict:
    """What the terminal event (and so the run record) carries: the table, not the curves."""
    return {"table": summary["table"], "complete": summary["complete"],
            "matching": {m: r["verdict"] for m, r in summary["matching"].items()},
            "synthetic_weights": bool(summary.get("synthetic_weights")),
            "results": {n: str(Path(run_dir) / n) for n in RESULT_FILES}}


# Spec fields added after results were committed: how those runs ran, not today's defaults
# (before cudnn_attention torch chose cuDNN's attention; caches were shared; nothing was warmed).
RAN_BEFORE_THE_FIELD = {"cudnn_attention": True, "fresh_compile_caches": False,
                        "warm_libraries": False}


def rebuild(results_json: str | Path) -> dict:
    """The summary again from a results.json's own runs, with this version's report code (after
    a change of method, every committed result can be re-rendered without re-measuring)."""
    old = json.loads(Path(results_json).read_text(encoding="utf-8"))
    spec = BenchmarkSpec(**{**RAN_BEFORE_THE_FIELD, **old["spec"]})
    environment = {k: v for k, v in old["environment"].items() if k not in ("device", "torch_cuda")}
    prepared = {**old["data"], "synthetic": old.get("synthetic_weights"),
                "model_dir": old.get("model_dir"), "best_settings": old.get("best_settings"),
                "page_cache": old.get("page_cache")}
    summary = build(spec, prepared, environment, old["runs"], old["command"],
                    old["planned_runs"], old.get("plain_runs") or [])
    summary["generated_at"] = old["generated_at"]
    summary["rebuilt_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return summary


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m trainers.benchmark.report RESULTS_JSON\n"
              "Rebuilds results.json, .md and .csv beside it from the runs it holds.",
              file=sys.stderr)
        return 2
    path = Path(argv[0])
    if "spec" not in json.loads(path.read_text()):
        print(f"{path} is not a benchmark engine's results.json (it has no spec): nothing to "
              "rebuild", file=sys.stderr)
        return 2
    write_all(path.parent, rebuild(path))
    print(f"rebuilt {', '.join(RESULT_FILES)} in {path.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
