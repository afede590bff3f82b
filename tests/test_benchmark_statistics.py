"""The report's statistics: the headline over total measured time, repeats and their spread,
and re-rendering committed results with the current method."""

import json
import shutil
from pathlib import Path

import pytest

from trainers.benchmark import report, runner
from trainers.benchmark.spec import build_spec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _run(name: str, provider: str, step_times: list[float], tokens_per_step: int) -> dict:
    """A variant's result as variant.py writes it, with the fields the table reads."""
    measured = step_times[1:]
    return {
        "name": name, "provider": provider, "mode": "lora16", "status": "ok",
        "process_wall_s": 10.0,
        "timing": {"train_wall_s": sum(step_times), "step_times_s": step_times,
                   "median_step_s": sorted(measured)[len(measured) // 2],
                   "tokens_per_s": tokens_per_step / sorted(measured)[len(measured) // 2],
                   "tokens_per_s_total": tokens_per_step * len(measured) / sum(measured)},
        "samples_per_s": 1.0,
        "memory": {"max_allocated_gib": 1.0, "max_reserved_gib": 1.0, "nvml_peak_used_gib": None},
        "flops": {"model_flops_per_token": 1e9, "peak_tflops": 989.0},
        "loss": {"first_step": 2.0}, "provider_info": {},
    }


def test_the_headline_counts_slow_steps_and_the_median_is_beside_it():
    steady = _run("huggingface-lora16-r1", "huggingface", [5.0, 1.0, 1.0, 1.0, 1.0], 1000)
    slow = _run("huggingface-lora16-r2", "huggingface", [5.0, 1.0, 3.0, 1.0, 1.0], 1000)
    row = report.table_row([steady, slow], "huggingface", "lora16")
    assert row["tokens_per_s_median"] == pytest.approx(1000)  # the median hides the slow step
    assert row["tokens_per_s"] == pytest.approx((1000 + 4000 / 6) / 2)  # the total does not
    assert (row["tokens_per_s_low"], row["tokens_per_s_high"]) == pytest.approx((4000 / 6, 1000))
    assert row["mfu"] == pytest.approx(1e9 * row["tokens_per_s"] / 989e12)


def test_repeats_further_apart_than_five_percent_are_flagged():
    close = [_run(f"unsloth-lora16-r{i}", "unsloth", [5.0, 1.0, t], 1000)
             for i, t in ((1, 1.0), (2, 1.04))]
    apart = [_run(f"huggingface-lora16-r{i}", "huggingface", [5.0, 1.0, t], 1000)
             for i, t in ((1, 1.0), (2, 1.3))]
    rows = [report.table_row(close, "unsloth", "lora16"),
            report.table_row(apart, "huggingface", "lora16"),
            report.table_row(close[:1], "unsloth", "qlora4")]  # one repeat: nothing to compare
    checks = {c["check"]: c for c in report.repeat_checks(rows)}
    assert checks["repeats agree within 5%, unsloth lora16"]["ok"]
    flagged = checks["repeats agree within 5%, huggingface lora16"]
    assert not flagged["ok"] and "spread of 14.0%" in flagged["detail"]
    assert len(checks) == 2


def test_a_flagged_spread_says_which_step_holds_the_difference():
    fast = _run("unsloth-qlora4-r1", "unsloth", [5.0, 1.0, 1.0, 1.0, 1.0], 1000)
    slow = _run("unsloth-qlora4-r2", "unsloth", [5.0, 1.0, 1.0, 1.7, 1.1], 1000)
    slow["step_costs"] = {"per_step": [{"gc_s": 0.0}] * 3 + [{"gc_s": 0.6}, {"gc_s": 0.0}]}
    for run in (fast, slow):
        run["mode"] = "qlora4"
    row = report.table_row([fast, slow], "unsloth", "qlora4")
    [check] = report.repeat_checks([row], [fast, slow], warmup=1)
    assert not check["ok"]
    assert ("unsloth-qlora4-r2's measured steps took 0.80 s longer than unsloth-qlora4-r1's, "
            "the most in step 4: 1.70 s against 1.00 s, 0.60 s of it in Python's garbage "
            "collector") in check["detail"]


def test_committed_results_rebuild_with_the_current_method(tmp_path):
    source = RESULTS / "archive" / "check_plain_llama-3.2-1b_lora16_warmup10" / "results.json"
    shutil.copy(source, tmp_path / "results.json")
    assert report.main([str(tmp_path / "results.json")]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    runs = [r for r in summary["runs"] if r["provider"] == "huggingface"]
    row = next(r for r in summary["table"] if r["provider"] == "huggingface")
    totals = [r["timing"]["tokens_per_s_total"] for r in runs]
    assert row["tokens_per_s"] == pytest.approx(sum(totals) / len(totals))
    plain = next(p for p in summary["plain_runs"] if p["provider"] == "huggingface")
    assert summary["engine_vs_plain_ratio"]["huggingface"]["lora16"] == pytest.approx(
        row["tokens_per_s"] / plain["timing"]["tokens_per_s_total"])
    assert "engine_vs_plain_ratio_median" in summary and summary["rebuilt_at"]
    # fields added since keep the values those runs ran with, not today's defaults
    assert summary["spec"]["cudnn_attention"] is True
    assert summary["spec"]["fresh_compile_caches"] is False
    assert "enable_cudnn_sdp(False)" not in (tmp_path / "results.md").read_text()
    names = [c["check"] for c in summary["checks"]]
    assert "repeats agree within 5%, huggingface lora16" in names
    md = (tmp_path / "results.md").read_text()
    assert "tokens/s (median step)" in md and "engine/plain (total / median)" in md
    assert report.main([str(tmp_path / "missing.json")]) == 2
    worker = RESULTS / "train_gpu_llama-3.2-1b" / "results.json"  # not the engine's: refused
    assert report.main([str(worker)]) == 2


def test_a_compile_in_a_measured_step_is_flagged():
    steady = _run("unsloth-lora16-r1", "unsloth", [5.0, 1.0, 1.0, 1.0], 1000)
    recompiled = _run("unsloth-lora16-r2", "unsloth", [5.0, 1.0, 6.0, 1.0], 1000)
    for run, frames in ((steady, [2, 0, 0, 0]), (recompiled, [2, 0, 1, 0])):
        run["step_costs"] = {"per_step": [{"compiled_frames": n} for n in frames]}
    checks = {c["check"]: c for c in report.compile_checks([steady, recompiled], warmup=1)}
    assert checks["no compile in the measured steps, unsloth-lora16-r1"]["ok"]  # step 1: warm-up
    flagged = checks["no compile in the measured steps, unsloth-lora16-r2"]
    assert not flagged["ok"] and "measured step 3 (6.00 s)" in flagged["detail"]


def test_the_longest_row_is_trained_in_the_warm_up():
    spec = build_spec({"model": "m", "batch_size": 2, "warmup_steps": 2, "steps": 3})
    sizes = (5, 6, 7, 8, 9, 30, 4, 3, 2, 1)
    rows = [{"input_ids": [1] * n, "completion_mask": [1] * n} for n in sizes]
    ordered, _ = runner.select_rows(rows, spec)
    lengths = [len(r["input_ids"]) for r in ordered]
    assert max(lengths[:4]) == 30  # in the 2 warm-up batches of 2 rows
    assert sorted(lengths) == sorted(sizes)  # the same rows, only their order changed


def test_a_one_provider_benchmark_whose_run_failed_is_reported_not_crashed():
    spec = build_spec({"model": "m", "providers": ["unsloth"], "modes": ["lora16"]})
    stopped = {"name": "unsloth-lora16-r1", "provider": "unsloth", "mode": "lora16",
               "status": "failed", "message": "stopped: the benchmark was asked to stop"}
    verdict = report.matching(spec, [stopped], "lora16")
    assert verdict["matched"] is None and "unsloth failed" in verdict["detail"]
