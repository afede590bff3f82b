"""The "each at its best" comparison (spec.padding = "best"): the runner's per-provider
decisions (trainers/benchmark/best.py), and a tiny real benchmark of it with the plain script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from trainers.benchmark.best import decide
from trainers.benchmark.spec import build_spec

needs_unsloth = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                                   reason="unsloth is not installed")


def test_checkpointing_goes_off_only_where_the_estimate_says_it_fits():
    spec = build_spec({"model": "llama-3.1-8b", "synthetic_weights": True, "padding": "best",
                       "batch_size": 8, "modes": ["lora16"]})
    # the worst batch, 8 rows of 2,048 tokens without checkpointing: Hugging Face with per-row
    # attention about 124 GiB allocated (padded with its mask it measured 131.7 on the H200),
    # Unsloth 76.1 measured: on a 120 GiB GPU only Unsloth fits without checkpointing
    hf = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=120)
    us = decide(spec, "llama-3.1-8b", "unsloth", "lora16", gpu_gib=120)
    assert hf["gradient_checkpointing"] is True and hf["attention"] == "sdpa_per_row"
    assert us["attention"] == "sdpa"
    assert "8 x 1 accumulation with gradient checkpointing: fits" in \
        hf["gradient_checkpointing_reason"]
    assert us["gradient_checkpointing"] is False
    assert "without gradient checkpointing: fits" in us["gradient_checkpointing_reason"]
    assert hf["padding_free"] and us["padding_free"] and us["liger_kernel"] is False
    # the 8B batch-8 rows measured on the H200 make at most 9,416 tokens a batch: asked for
    # those, Hugging Face fits without checkpointing (its run with it peaked at 20.6 GiB)
    known = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=140, batch_tokens=9416)
    assert known["gradient_checkpointing"] is False
    assert "at the rows' largest batch of 9416 tokens: fits" in \
        known["gradient_checkpointing_reason"]
    no_gpu = decide(spec, "llama-3.1-8b", "huggingface", "lora16", gpu_gib=None)
    assert no_gpu["gradient_checkpointing"] == spec.gradient_checkpointing
    assert no_gpu["liger_kernel"] is False and "no GPU" in no_gpu["liger_kernel_reason"]
    if importlib.util.find_spec("liger_kernel") is None:
        assert "pip install liger-kernel" in hf["liger_kernel_reason"]


@pytest.mark.slow  # fast guard: test_checkpointing_goes_off_only_where_the_estimate_says_it_fits
@pytest.mark.unsloth
@needs_unsloth
def test_a_best_benchmark_runs_both_providers_and_the_plain_script_alike(tmp_path, demo_model):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = {"model": str(demo_model), "max_seq_length": 96, "batch_size": 2, "steps": 2,
            "warmup_steps": 1, "repeats": 1, "lora_r": 4, "lora_alpha": 8, "modes": ["lora16"],
            "padding": "best", "check_plain": True}
    (run_dir / "config.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "trainers.benchmark.runner", str(run_dir)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    summary = json.loads((run_dir / "results.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["ok", "ok"]
    assert summary["matching"]["lora16"]["verdict"].startswith("each at its best")
    assert summary["matching"]["lora16"]["matched"] is False
    assert set(summary["best_settings"]) == {"huggingface-lora16", "unsloth-lora16"}
    for run in summary["runs"]:
        assert run["best"] == summary["best_settings"][f"{run['provider']}-lora16"]
    hf, us = summary["runs"]
    assert hf["effective"]["padding_free"] is True
    # what a library turns off by itself is said, not hidden (Unsloth's CPU backend pads)
    applied = next(c for c in summary["matching"]["lora16"]["checks"]
                   if c["check"] == "each ran its best settings")
    assert applied["ok"] == us["effective"]["padding_free"]
    if not us["effective"]["padding_free"]:
        assert "unsloth-lora16-r1: padding-free asked" in applied["detail"]
    settings = json.loads((run_dir / "plain" / "settings-lora16.json").read_text())
    assert set(settings["provider_overrides"]) == {"huggingface", "unsloth"}
    checks = {c["check"]: c["ok"] for c in summary["checks"]}
    for provider in ("huggingface", "unsloth"):  # the plain script ran what the engine ran
        assert checks[f"plain script: same trainer settings, {provider} lora16"]
        assert checks[f"plain script: same token counts, {provider} lora16"]
    md = (run_dir / "results.md").read_text()
    assert "## Each at its best" in md and "Liger kernels off (no GPU" in md
