"""MFU as NeMo counts it (trainers/flops.py): the count by hand on the demo model with LoRA, the
peak a run is compared with, real training runs' progress events, and the Training tab's line."""

from __future__ import annotations

import importlib.util

import pytest
from worker_runs import needs_unsloth, train_side_by_side

from modelforge_ui import views
from trainers import flops
from trainers.config import build_config
from trainers.events import last_event
from trainers.runs.registry import RunRegistry

# the demo model (trainers/tools/demo.py): hidden 64, MLP 176, 2 layers, 4 heads of 16, 2 KV heads
FROZEN_PER_LAYER = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 176  # q k v o gate up down
assert FROZEN_PER_LAYER == 46080
LORA_R8_PER_LAYER = 8 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + 3 * (64 + 176))  # A and B
assert LORA_R8_PER_LAYER == 9344


def frozen_macs(vocab: int) -> int:
    return 2 * FROZEN_PER_LAYER + 64 * vocab  # the tied LM head counts as a linear layer


def linear_flops_per_token(vocab: int) -> int:
    return 4 * frozen_macs(vocab) + 6 * 2 * LORA_R8_PER_LAYER


def test_flops_of_the_demo_model_with_lora_counted_by_hand(demo_model, tiny_config):
    from trainers.train.providers import get_provider

    model = get_provider("huggingface").load_model(build_config(tiny_config()))  # LoRA r 8
    vocab = model.config.vocab_size
    macs = flops.linear_macs(model)
    assert macs == {"frozen": frozen_macs(vocab), "trainable": 2 * LORA_R8_PER_LAYER}
    assert flops.attention_width(model.config) == (2, 64)
    # rows of 3 and 5 tokens: 8 tokens; causal pairs 3*4/2 + 5*6/2 = 21; 12 x 2 x 64 x 21 = 32256
    step = 8 * linear_flops_per_token(vocab) + 32256
    assert flops.step_flops([3, 5], macs, 2, 64) == step
    assert flops.flops_per_token([3, 5], macs, 2, 64) == step / 8


def test_the_peak_a_run_is_counted_against():
    assert flops.run_peak("NVIDIA H200", {}) == {
        "peak_tflops": 989.0, "peak_source": "NVIDIA H200 bf16 dense", "mfu_unavailable": None}
    assert flops.run_peak("NVIDIA H200", {flops.PEAK_ENV: "500"})["peak_source"] == flops.PEAK_ENV
    for gpu, env, reason in [
            (None, {}, "no GPU"), ("NVIDIA GeForce RTX 4090", {}, "no peak known for"),
            ("NVIDIA H200", {flops.PEAK_ENV: "fast"}, "is not a positive number"),
            (None, {flops.PEAK_ENV: "-1"}, "is not a positive number")]:
        found = flops.run_peak(gpu, env)
        assert found["peak_tflops"] is None and reason in found["mfu_unavailable"], found
        assert flops.PEAK_ENV in found["mfu_unavailable"]  # the fix is named


def test_the_benchmark_counts_against_the_same_peak(demo_model, tiny_config, monkeypatch):
    """A benchmark's MFU uses its spec's peak, else what a training run would (the variable,
    the table), so the two agree on a GPU missing from the table."""
    from trainers.benchmark.variant import flops_summary
    from trainers.train.providers import get_provider

    model = get_provider("huggingface").load_model(build_config(tiny_config()))
    speed = {"measured_steps": 1, "measured_tokens": 8, "tokens_per_s_total": 1000.0}
    monkeypatch.setenv(flops.PEAK_ENV, "500")
    by_variable = flops_summary(model, [[3, 5], [3, 5]], speed, 1, "Some New GPU", None)
    assert (by_variable["peak_tflops"], by_variable["peak_source"]) == (500.0, flops.PEAK_ENV)
    by_spec = flops_summary(model, [[3, 5], [3, 5]], speed, 1, "Some New GPU", 250.0)
    assert (by_spec["peak_tflops"], by_spec["peak_source"]) == (250.0, "spec.peak_tflops")
    assert by_spec["mfu"] == pytest.approx(2 * by_variable["mfu"])
    monkeypatch.delenv(flops.PEAK_ENV)
    unknown = flops_summary(model, [[3, 5], [3, 5]], speed, 1, "Some New GPU", None)
    assert unknown["mfu"] is None and "no peak known" in unknown["peak_source"]


# --- real training runs of the demo model on the CPU --------------------------------------------

PEAK = 0.002  # TFLOP/s: a figure a CPU reaches, so the MFU is far from 0


@pytest.fixture(scope="module")
def peak_runs(tmp_path_factory, tiny_config) -> dict[str, tuple[dict, list[dict], dict]]:
    """name -> (record, events, config) of the module's runs with a given peak, started at once (each
    imports torch while the other waits): Hugging Face (LoRA r 8 on every linear layer) and,
    where it is installed, Unsloth, which patches the model."""
    configs = {"huggingface": tiny_config(max_steps=3)}
    if importlib.util.find_spec("unsloth"):
        configs["unsloth"] = tiny_config(provider="unsloth", max_steps=1,
                                         optim="adamw_torch_fused")
    done = train_side_by_side({name: (tmp_path_factory.mktemp(f"mfu-{name}"), config,
                                      {flops.PEAK_ENV: str(PEAK)})
                               for name, config in configs.items()})
    return {name: (as_shown(record, events), events, configs[name])
            for name, (record, events) in done.items()}


def as_shown(record: dict, events: list[dict]) -> dict:
    """The record with what RunManager.get adds to it, which the Training tab shows."""
    return {**record, "progress": last_event(events, "progress"),
            "started_event": last_event(events, "started")}


def expected_flops_per_token(demo_model, config: dict) -> float:
    """The linear layers by hand (as in the first test, LoRA r 8), attention over the run's
    training rows, tokenized as the worker does (trainers.data)."""
    from transformers import AutoConfig, AutoTokenizer

    from trainers import data

    cfg = build_config(config)
    examples = data.load_data(cfg.dataset, strategy=cfg.strategy).examples
    rows, _ = data.tokenize_examples(examples, AutoTokenizer.from_pretrained(demo_model),
                                     cfg.max_seq_length, cfg.completion_only_loss)
    rows, _ = data.trainable_rows(rows, cfg.dataset, cfg.max_seq_length)
    lengths = [len(r["input_ids"]) for r in rows]
    attention = 12 * 2 * 64 * sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)
    return linear_flops_per_token(AutoConfig.from_pretrained(demo_model).vocab_size) + attention


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


@pytest.mark.slow
def test_a_cpu_run_without_a_peak_has_no_mfu(shared_run):
    """The session's shared run (tests/conftest.py): its worker had no peak figure."""
    home, record, events = shared_run
    run = as_shown(RunRegistry(home).get(record["id"]), events)
    started, finished = of_type(events, "started")[0], events[-1]
    assert finished["type"] == "finished", finished
    assert started["peak_tflops"] is None and "no GPU" in started["mfu_unavailable"]
    progress = of_type(events, "progress")
    assert len(progress) == record["config"]["max_steps"] and all(e["mfu"] is None
                                                                  for e in progress)
    assert finished["mfu"] is None
    per_token = finished["model_flops_per_token"]
    for e in progress:  # model FLOPs/s need no peak
        assert e["model_tflops"] == pytest.approx(e["tokens_per_s"] * per_token / 1e12, rel=2e-3)
    assert "MFU" not in views.progress_markdown(run)  # nothing to compare a CPU with


@pytest.mark.slow
def test_a_run_with_a_given_peak_shows_live_mfu(peak_runs, demo_model):
    peak = PEAK
    run, events, config = peak_runs["huggingface"]
    started, finished = of_type(events, "started")[0], events[-1]
    assert finished["type"] == "finished", finished
    assert (started["peak_tflops"], started["peak_source"]) == (peak, flops.PEAK_ENV)
    assert started["mfu_unavailable"] is None
    per_token = finished["model_flops_per_token"]
    assert per_token == pytest.approx(expected_flops_per_token(demo_model, config),
                                      rel=1e-5)
    for e in of_type(events, "progress"):
        assert e["mfu"] == pytest.approx(e["tokens_per_s"] * per_token / (peak * 1e12),
                                         rel=2e-3)
        assert e["mfu"] == pytest.approx(e["model_tflops"] / peak, rel=2e-3)
    assert finished["mfu"] == pytest.approx(
        finished["tokens_per_s"] * per_token / (peak * 1e12), rel=2e-3)
    text = views.progress_markdown(run)
    shown = f"MFU {100 * run['progress']['mfu']:.3g}% of {peak:g} TFLOP/s ({flops.PEAK_ENV})"
    assert shown in text, text
    assert f"MFU {100 * finished['mfu']:.3g}% of" in text  # the whole run's, once finished


@pytest.mark.slow
@needs_unsloth
@pytest.mark.unsloth
def test_unsloth_counts_the_same_model_flops(peak_runs, demo_model):
    """Unsloth patches the model; the count is of the model as it trains, and must not move."""
    _, events, config = peak_runs["unsloth"]
    assert events[-1]["type"] == "finished", events[-1]
    assert events[-1]["model_flops_per_token"] == pytest.approx(
        expected_flops_per_token(demo_model, config), rel=1e-5)
    assert of_type(events, "progress")[0]["mfu"] > 0


# --- the Training tab's line ---------------------------------------------------------------------

def gpu_run(device_name: str, mfu: float | None) -> dict:
    started = {"provider": "unsloth", "device": "cuda", "device_name": device_name,
               **flops.run_peak(device_name, {})}
    return {"id": "r1", "name": "run", "status": "running", "config": {"logging_steps": 1},
            "started_event": started, "summary": None,
            "progress": {"step": 5, "total_steps": 10, "tokens_per_s": 9000.0, "mfu": mfu}}


def test_the_training_tab_shows_mfu_with_its_peak_on_a_gpu():
    text = views.progress_markdown(gpu_run("NVIDIA H200", 0.3124))
    assert "9,000.0 tokens/s (last step) · MFU 31.2% of 989 TFLOP/s (NVIDIA H200 bf16 dense)" \
        in text, text
    unknown = views.progress_markdown(gpu_run("NVIDIA GeForce RTX 4090", None))
    assert "MFU not counted: no peak known for 'NVIDIA GeForce RTX 4090': set " \
        "MODELFORGE_PEAK_TFLOPS" in unknown, unknown
    cpu = gpu_run("x86_64", None)
    cpu["started_event"].update(device="cpu", **flops.run_peak(None, {}))
    assert "MFU" not in views.progress_markdown(cpu)
