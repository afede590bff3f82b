"""The benchmark engine on the CPU with the tiny demo model: both providers run in their own
processes, the table is complete, matching holds (same token counts, first-step loss agreement),
a failing provider is shown as failed; plus the spec, synthetic families and the FLOP formula.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from worker_runs import needs_unsloth

from trainers import flops
from trainers.benchmark import report
from trainers.benchmark.spec import build_spec
from trainers.benchmark.synthetic import FAMILIES, build_synthetic, resolve_family, synthetic_info
from trainers.errors import ConfigError
from trainers.events import read_events
from trainers.runs.manager import visible_gpus

# A few cheap steps: 1 warm-up + 2 measured, short rows, small batches.
TINY = {"max_seq_length": 96, "batch_size": 2, "steps": 2, "warmup_steps": 1, "repeats": 1,
        "lora_r": 4, "lora_alpha": 8, "modes": ["lora16"]}


# --- spec -----------------------------------------------------------------------------------

def test_spec_defaults_and_run_order():
    spec = build_spec({"model": "m"})
    assert spec.providers == ["huggingface", "unsloth"] and spec.modes == ["lora16", "qlora4"]
    assert spec.total_steps == 40 and spec.repeats == 2  # 10 warm-up + 30 measured, twice
    assert spec.variants()[:3] == [(1, "lora16", "huggingface"), (1, "lora16", "unsloth"),
                                   (1, "qlora4", "huggingface")]
    assert len(spec.variants()) == 8


def test_spec_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError) as err:
        build_spec({"model": "m", "stepz": 5})
    assert err.value.problems[0]["field"] == "stepz"
    assert "Did you mean 'steps'" in err.value.problems[0]["message"]
    with pytest.raises(ConfigError) as err:
        build_spec({"model": "m", "steps": 0, "providers": ["huggingface", "huggingface"]})
    fields = {p["field"] for p in err.value.problems}
    assert "providers" in fields
    with pytest.raises(ConfigError) as err:
        build_spec({"model": "m", "steps": 0})
    assert err.value.problems == [{"field": "steps", "message": err.value.problems[0]["message"]}]
    assert "at least 1" in err.value.problems[0]["message"]


# The benchmark's defaults: committed results were measured with them.
SPEC_DEFAULTS = {"max_seq_length": 2048, "dataset": "sample", "column_mapping": {},
                 "completion_only_loss": True, "lora_r": 16, "lora_alpha": 32,
                 "target_modules": "auto", "learning_rate": 2e-4, "gradient_checkpointing": True,
                 "seed": 42, "attention": "sdpa", "liger_kernel": False, "name": ""}


def test_spec_takes_the_fields_it_shares_with_the_training_config():
    from trainers.benchmark.spec import BenchmarkSpec, shared_fields
    from trainers.config import TrainConfig

    assert set(shared_fields()) == set(SPEC_DEFAULTS)
    for name in shared_fields():
        mine, train = BenchmarkSpec.model_fields[name], TrainConfig.model_fields[name]
        assert mine.annotation == train.annotation, name
        assert mine.description.startswith(train.description), name
        assert mine.default == SPEC_DEFAULTS[name], name
    for bad in ({"lora_r": 0}, {"learning_rate": 2}, {"seed": -1}, {"lora_alpha": float("inf")},
                {"target_modules": []}, {"max_seq_length": 8}):
        with pytest.raises(ConfigError) as train_error:
            TrainConfig(model_name="m", dataset="d.jsonl", **bad)
        with pytest.raises(ConfigError) as spec_error:
            build_spec({"model": "m", **bad})
        assert spec_error.value.problems == train_error.value.problems, bad
    with pytest.raises(ConfigError) as err:  # training infers -1 from the data; a benchmark cannot
        build_spec({"model": "m", "max_seq_length": -1})
    assert "cannot be -1 in a benchmark" in err.value.problems[0]["message"]


# --- synthetic weights ----------------------------------------------------------------------

# Parameter counts of the published checkpoints (their safetensors metadata).
PUBLIC_PARAMETERS = {
    "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248, "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512, "mistral-7b": 7_248_023_552,
    "gemma-2-2b": 2_614_341_888, "phi-3-mini": 3_821_079_552,
}


def test_synthetic_families_have_the_published_shapes():
    import torch
    from transformers import AutoModelForCausalLM

    from trainers.benchmark.synthetic import family_config

    assert set(FAMILIES) == set(PUBLIC_PARAMETERS)
    for key, expected in PUBLIC_PARAMETERS.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(family_config(key))
        assert sum(p.numel() for p in model.parameters()) == expected, key


def test_family_names_resolve_and_unknown_ones_list_the_choices():
    assert resolve_family("meta-llama/Llama-3.2-3B") == "llama-3.2-3b"
    assert resolve_family("Llama-3.2-1B") == "llama-3.2-1b"
    with pytest.raises(ConfigError) as err:
        resolve_family("llama-9")
    assert "qwen2.5-7b" in err.value.problems[0]["message"]


def test_build_synthetic_writes_a_loadable_labelled_model(tmp_path):
    from transformers import AutoModelForCausalLM

    out = build_synthetic("qwen2.5-1.5b", tmp_path / "m", num_hidden_layers=1, hidden_size=64,
                          intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
    info = synthetic_info(out)
    assert info["synthetic_weights"] is True and info["values_from"] == "Qwen/Qwen2.5-1.5B"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 151936 and str(model.dtype) == "torch.bfloat16"


# --- FLOPs ----------------------------------------------------------------------------------

def test_lora_flop_formula_matches_torch_flop_counter():
    """4 x frozen + 6 x adapter MACs + attention, against PyTorch's own count of a real step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         attn_implementation="eager")  # eager: the full L x L scores, counted
    model = LlamaForCausalLM(config)
    model.enable_input_require_grads()  # as with gradient checkpointing: every input gradient
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj", "down_proj"]))
    ids = torch.randint(0, 512, (3, 40))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    layers, width = flops.attention_width(model.config)
    expected = flops.step_flops([40, 40, 40], flops.linear_macs(model), layers, width,
                                causal=False)
    assert expected == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_peak_table_by_gpu_name():
    assert flops.peak_tflops("NVIDIA H200") == 989.0
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.peak_tflops("NVIDIA L4") == 121.0
    assert flops.peak_tflops("NVIDIA L40S") == 362.0
    assert flops.peak_tflops("x86_64") is None
    assert flops.mfu(494.5e12, 989.0) == pytest.approx(0.5)


# --- both providers, end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def matched_run(benchmark_run):
    """The session's tiny benchmark (tests/conftest.py): both providers, 2 repeats, the torch
    profiler on each variant's warm-up step; its plain-script runs are test_check_plain.py's."""
    return benchmark_run


def first_round(summary: dict) -> tuple[dict, dict]:
    """The Hugging Face and Unsloth runs of repeat 1."""
    runs = {r["name"]: r for r in summary["runs"]}
    return runs["huggingface-lora16-r1"], runs["unsloth-lora16-r1"]


@pytest.mark.slow  # fast guard: test_a_failing_provider_is_reported_not_dropped
@pytest.mark.unsloth
@needs_unsloth
def test_both_providers_run_and_the_table_is_complete(matched_run):
    run_dir, code = matched_run
    assert code == 0, (run_dir / "runner.log").read_text()[-3000:]
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["complete"] and [r["status"] for r in summary["runs"]] == ["ok"] * 4
    rows = {r["provider"]: r for r in summary["table"]}
    for row in rows.values():
        for key in ("process_wall_s", "train_wall_s", "tokens_per_s", "speedup",
                    "first_step_loss", "samples_per_s"):
            assert row[key] is not None and row[key] > 0, (row["provider"], key)
    assert rows["huggingface"]["speedup"] == 1.0
    for hf, us in zip(summary["runs"][::2], summary["runs"][1::2]):  # providers alternate
        assert (hf["provider"], us["provider"]) == ("huggingface", "unsloth")
        assert hf["unsloth_in_process"] is False and us["unsloth_in_process"] is True
    hf, us = first_round(summary)
    evidence = us["provider_info"]["unsloth"]
    assert evidence["active"] and evidence["unsloth_version"]
    assert len(hf["timing"]["step_times_s"]) == 3 and hf["timing"]["measured_steps"] == 2
    for run in summary["runs"]:
        profile = run_dir / "variants" / run["name"] / "profile-step1.txt"
        assert "step 1: ops by device time" in profile.read_text()
    assert len(hf["loss"]["curve"]) == 3
    for run in summary["runs"]:  # where each step's time went, for the slow-step evidence
        costs = run["step_costs"]
        assert len(costs["per_step"]) == 3 and costs["triton_hooks"]
        for step, seconds in zip(costs["per_step"], run["timing"]["step_times_s"]):
            assert step["host_s"] > 0 and step["gc_s"] >= 0 and step["loader_s"] >= 0
            assert step["loader_s"] + step["host_s"] + step["sync_s"] == pytest.approx(
                seconds, abs=2e-3)
            assert step["compiled_frames"] >= 0
        # every measured process had its own, empty compile caches (spec.fresh_compile_caches)
        caches = {p.name for p in (run_dir / "compile-caches").iterdir()}
        assert {r["name"] for r in summary["runs"]} <= caches
        assert f"TRITON_CACHE_DIR={run_dir}/compile-caches/{run['name']}/triton" in \
            run["command"]


@pytest.mark.slow  # fast guard: test_a_failing_provider_is_reported_not_dropped
@pytest.mark.unsloth
@needs_unsloth
def test_matching_holds_same_tokens_and_first_step_loss(matched_run):
    run_dir, _ = matched_run
    summary = json.loads((run_dir / "results.json").read_text())
    result = summary["matching"]["lora16"]
    assert result["verdict"] == "matched", result
    hf, us = first_round(summary)
    assert hf["tokens"]["trainer_per_step"] == us["tokens"]["trainer_per_step"] == \
        hf["tokens"]["per_step"]
    assert hf["loss"]["first_step"] == pytest.approx(us["loss"]["first_step"], rel=1e-3)


def _loss_off(run):
    run["loss"]["first_step"] *= 1.05  # 5% off, beyond the 1% tolerance


def _tokens_off(run):
    run["tokens"]["trainer_per_step"][0] -= 1


def _padding_off(run):
    run["effective"]["padding_free"] = not run["effective"]["padding_free"]


def _optimizer_off(run):
    run["effective"]["optim"] = "sgd"


@pytest.mark.unsloth
@needs_unsloth
@pytest.mark.parametrize("change, failing", [
    (_loss_off, ["first-step loss"]),
    (_tokens_off, ["same token counts", "counted tokens = rows fed"]),
    (_padding_off, ["padding treatment (padding-free)"]),
    (_optimizer_off, ["optimizer"]),
])
@pytest.mark.slow  # fast guard: test_a_failing_provider_is_reported_not_dropped
def test_a_difference_between_the_runs_is_flagged_not_matched(matched_run, change, failing):
    run_dir, _ = matched_run
    summary = json.loads((run_dir / "results.json").read_text())
    runs = copy.deepcopy(summary["runs"])
    change(runs[1])  # Unsloth's run of repeat 1
    result = report.matching(build_spec(summary["spec"]), runs, "lora16")
    assert result["verdict"] == "NOT MATCHED"
    assert [c["check"] for c in result["checks"] if not c["ok"]] == failing


@pytest.mark.slow  # fast guard: test_a_failing_provider_is_reported_not_dropped
@pytest.mark.unsloth
@needs_unsloth
def test_exports_and_events(matched_run):
    run_dir, _ = matched_run
    md = (run_dir / "results.md").read_text()
    assert "| huggingface | 16-bit LoRA | ok 2/2 |" in md and \
        "| unsloth | 16-bit LoRA | ok 2/2 |" in md
    assert "first-step loss: ok" in md and "MFU formula" in md
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["huggingface-lora16-r1", "unsloth-lora16-r1",
                                         "huggingface-lora16-r2", "unsloth-lora16-r2"]
    assert all(float(r["tokens_per_s"]) > 0 for r in rows)
    types = [e["type"] for e in read_events(run_dir)]
    assert types[0] == "started" and types[-1] == "finished"
    assert types.count("variant_finished") == 4 and "progress" in types


# --- a failing provider, through the CLI ------------------------------------------------------

def test_a_failing_provider_is_reported_not_dropped(tmp_path, demo_model, monkeypatch, capsys):
    """Unsloth refuses the CPU when asked to (or is missing): its row says failed, and why."""
    from modelforge_ui.cli import main
    from trainers.runs.registry import RunRegistry

    monkeypatch.setenv("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    args = ["bench", "--model", str(demo_model), "--modes", "lora16",
            "--providers", "huggingface,unsloth", "--data-dir", str(tmp_path)]
    for key, value in TINY.items():
        if key != "modes":
            args += ["--" + key.replace("_", "-"), str(value)]
    assert main(args) == 1  # a failed variant is not success
    out = capsys.readouterr().out
    assert "unsloth-lora16-r1 FAILED" in out
    assert "1 variant(s) FAILED (unsloth lora16)" in out and "\nsucceeded:" not in out
    assert "Verdict" in out and "a median of so few steps is noise" in out  # the tab's flags
    steps = [line for line in out.splitlines() if line.strip().startswith("step ")]
    assert steps and all(line.count("step ") == 1 for line in steps)  # no TTY: one a line
    record = RunRegistry(tmp_path).list(kind="benchmark")[0]
    assert record["status"] == "succeeded"
    summary = json.loads((Path(record["run_dir"]) / "results.json").read_text())
    rows = {r["provider"]: r for r in summary["table"]}
    assert rows["huggingface"]["status"] == "ok" and rows["huggingface"]["tokens_per_s"] > 0
    assert rows["unsloth"]["status"] == "failed" and rows["unsloth"]["reason"]
    assert summary["matching"]["lora16"]["verdict"] == "not checked"
    assert summary["spec"]["invocation"].startswith("modelforge bench --model")
    if not visible_gpus():  # no GiB of CUDA libraries read on a machine without a GPU
        assert summary["page_cache"] == {"warmed": False, "no_gpu": True}


def test_bench_help_lists_every_spec_field():
    """argparse formats help with %: a field description with a percent sign must not break it."""
    done = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "bench", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for flag in ("--attention", "--liger-kernel", "--torch-compile", "--check-plain"):
        assert flag in done.stdout
    assert "+42% tokens/s" in " ".join(done.stdout.split())  # the attention field's note
