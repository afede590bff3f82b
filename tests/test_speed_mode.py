"""Speed mode (trainers/speed.py): the settings it picks from the VRAM estimate, the rules of
liger_kernel, and a real worker run with speed_mode on the CPU that says what it decided."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers import speed
from trainers.config import build_config
from trainers.estimate import estimate
from trainers.events import read_events
from trainers.runs.preflight import gpu_only_problems
from trainers.runs.process import launch
from trainers.runs.registry import RunRegistry
from trainers.tools.demo import SAMPLE_SFT

EIGHT_B = {"model_name": "llama-3.1-8b", "dataset": "d", "max_seq_length": 2048, "bf16": True,
           "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1}


def test_the_largest_micro_batch_that_fits_keeps_the_effective_batch():
    cfg = build_config(EIGHT_B)
    plan = speed.decide(cfg, gpu_gib=80)
    up = plan["updates"]
    micro, accumulation = up["per_device_train_batch_size"], up["gradient_accumulation_steps"]
    assert micro * accumulation == 16 and up["gradient_checkpointing"] is False
    assert up["padding_free"] is True
    chosen = cfg.model_copy(update=up)
    assert estimate(chosen, 80)["fits"]
    bigger = [d for d in (16, 8, 4, 2, 1) if d > micro]  # the divisors it passed over
    for d in bigger:
        trial = chosen.model_copy(update={"per_device_train_batch_size": d,
                                          "gradient_accumulation_steps": 16 // d})
        assert not estimate(trial, 80)["fits"], d
    assert any(d.startswith("batch and checkpointing: micro-batch") for d in plan["decisions"])


def test_checkpointing_comes_back_when_nothing_fits_without_it():
    cfg = build_config({**EIGHT_B, "per_device_train_batch_size": 1})
    plan = speed.decide(cfg, gpu_gib=24)
    assert plan["updates"]["gradient_checkpointing"] is True
    assert "with gradient checkpointing" in " ".join(plan["decisions"])


def test_without_a_gpu_only_the_batches_attention_and_lora_inputs_change():
    cfg = build_config(EIGHT_B)
    plan = speed.decide(cfg, gpu_gib=None)
    assert plan["updates"] == {"padding_free": True, "attention": "sdpa_per_row",
                               "fused_lora": True}
    text = " ".join(plan["decisions"])
    assert "no GPU found: batch and gradient checkpointing kept" in text
    assert "Liger kernels: off (no GPU" in text
    dpo = speed.decide(build_config({**EIGHT_B, "strategy": "dpo"}), gpu_gib=None)
    assert "padding_free" not in dpo["updates"]


def test_per_row_attention_for_hugging_face_decoders_on_padding_free_batches(tmp_path):
    unsloth = speed.decide(build_config({**EIGHT_B, "provider": "unsloth"}), gpu_gib=80)
    assert "attention" not in unsloth["updates"]
    assert "attention: as set (Unsloth keeps the packed rows apart itself)" in \
        unsloth["decisions"]
    dpo = speed.decide(build_config({**EIGHT_B, "strategy": "dpo"}), gpu_gib=80)
    assert "attention" not in dpo["updates"]  # preference pairs stay padded
    (tmp_path / "config.json").write_text('{"model_type": "t5", "is_encoder_decoder": true}')
    t5 = speed.decide(build_config({**EIGHT_B, "model_name": str(tmp_path)}), gpu_gib=None)
    assert "attention" not in t5["updates"] and "encoder-decoder" in " ".join(t5["decisions"])
    # the estimate that picks the batch counts the per-row attention (no mask) it switched on
    plan = speed.decide(build_config(EIGHT_B), gpu_gib=80)
    chosen = build_config(EIGHT_B).model_copy(update=plan["updates"])
    assert chosen.attention == "sdpa_per_row"
    assert estimate(chosen, 80)["components_gib"]["attention_mask"] == 0



@pytest.mark.parametrize("family, why", [
    ("gemma-2-2b", "attention logit soft-capping (gemma2)"),
    ("phi-3-mini", "a sliding-window model (phi3, window 2047 < max_seq_length 2048)"),
])
def test_per_row_attention_stays_off_where_it_would_leave_the_model_s_attention_out(family, why):
    """Gemma 2's sliding-window layers refused per-row attention mid-run on an H100; speed mode
    now keeps SDPA with its mask for such models, and says why. Qwen2.5 declares a window it
    does not use (use_sliding_window: false) and keeps per-row attention."""
    plan = speed.decide(build_config({**EIGHT_B, "model_name": family}), gpu_gib=80)
    assert "attention" not in plan["updates"]
    assert f"attention: as set ({why}" in " ".join(plan["decisions"])
    qwen = speed.decide(build_config({**EIGHT_B, "model_name": "qwen2.5-1.5b"}), gpu_gib=80)
    assert qwen["updates"]["attention"] == "sdpa_per_row"
    # rows no longer than the window are exact without it (Gemma 2's window is 4096, so its
    # soft-capping is what keeps it off at 2048 tokens)
    short = speed.decide(build_config({**EIGHT_B, "model_name": "phi-3-mini",
                                       "max_seq_length": 2047}), gpu_gib=80)
    assert short["updates"]["attention"] == "sdpa_per_row"

def test_liger_kernel_rules():
    with pytest.raises(Exception, match="liger_kernel.*huggingface provider"):
        build_config({"model_name": "m", "dataset": "d", "provider": "unsloth",
                      "liger_kernel": True})
    cfg = build_config({"model_name": "m", "dataset": "d", "liger_kernel": True})
    assert [p["field"] for p in gpu_only_problems(cfg, ["cpu"])] == ["liger_kernel"]


def test_lora_layers_are_fused_for_hugging_face_16_bit_mixed_precision():
    plan = speed.decide(build_config(EIGHT_B), gpu_gib=80)
    assert plan["updates"]["fused_lora"] is True
    assert any(d.startswith("LoRA layers fused") and d.endswith(": on")
               for d in plan["decisions"])
    unsloth = speed.decide(build_config({**EIGHT_B, "provider": "unsloth"}), gpu_gib=80)
    assert "fused_lora" not in unsloth["updates"]
    assert any(d.endswith(": off (Unsloth runs its own LoRA kernels)")
               for d in unsloth["decisions"])
    as_set = speed.decide(build_config({**EIGHT_B, "bf16": False, "fused_lora": True}), 80)
    assert any(d.startswith("LoRA layers fused") and d.endswith(": on (as set)")
               for d in as_set["decisions"])
    for other in ({"bf16": False}, {"use_4bit": True, "strategy": "qlora"}):
        assert "fused_lora" not in speed.decide(build_config({**EIGHT_B, **other}),
                                                gpu_gib=80)["updates"]
    for wrong, fix in (({"provider": "unsloth"}, "huggingface provider"),
                       ({"use_4bit": True}, "use_4bit is on")):
        with pytest.raises(Exception, match=f"fused_lora.*{fix}"):
            build_config({"model_name": "m", "dataset": "d", "fused_lora": True, **wrong})


def test_expandable_segments_for_hugging_face_unless_the_operator_chose_an_allocator():
    ours = {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}
    assert speed.allocator_env("huggingface", {}) == ours
    assert speed.allocator_env("huggingface", ours) == ours  # set by speed mode: still its own
    assert speed.allocator_env("unsloth", {}) == {}  # Unsloth sets its own
    theirs = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}
    assert speed.allocator_env("huggingface", theirs) == {}
    assert speed.allocator_decision("huggingface", theirs) == \
        "PyTorch allocator: as set (PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:512)"
    plan = speed.decide(build_config(EIGHT_B), gpu_gib=80)
    assert "PyTorch allocator: expandable segments (PYTORCH_ALLOC_CONF)" in plan["decisions"]
    assert "PyTorch allocator: not used (no GPU)" in \
        speed.decide(build_config(EIGHT_B), gpu_gib=None)["decisions"]


def _lora_step(dtype, autocast: bool, fused: bool, **lora):
    """One forward and backward of a 64->96 LoRA linear layer: [output, input grad, adapter
    grads]. PEFT keeps a bf16 model's adapter in float32, as in a training run."""
    import torch
    from peft import LoraConfig, get_peft_model

    from trainers.train.fused_lora import fuse_lora_layers

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 96, bias=False)).to(dtype)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["0"],
                                            init_lora_weights=False, **lora))
    if fused:
        assert fuse_lora_layers(model) == 1
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().square().mean().backward()
    return [out, x.grad] + [p.grad for p in model.parameters() if p.requires_grad]


def test_a_fused_lora_layer_computes_what_peft_computes():
    """Under bf16 autocast (how a bf16 run trains) the fused layer's output and gradients match
    PEFT's to bf16 rounding; in float32 to float rounding. A bf16 input without autocast falls
    back to PEFT's own forward (it casts): the same bits."""
    import torch

    def close(a, b, tolerance):  # relative to the tensor's largest value
        return (a.float() - b.float()).abs().max() <= tolerance * a.float().abs().max()

    for dtype, autocast, tolerance in ((torch.bfloat16, True, 1e-2), (torch.float32, False, 1e-6)):
        peft_out, fused_out = (_lora_step(dtype, autocast, fused) for fused in (False, True))
        assert fused_out[0].dtype == peft_out[0].dtype == dtype
        assert all(close(a, b, tolerance) for a, b in zip(peft_out, fused_out))
        assert peft_out[1].abs().sum() > 0
    bare = [_lora_step(torch.bfloat16, False, fused) for fused in (False, True)]
    assert all(torch.equal(a, b) for a, b in zip(*bare))
    dropout = [_lora_step(torch.float32, False, fused, lora_dropout=0.3) for fused in (0, 1)]
    assert all(close(a, b, 1e-6) for a, b in zip(*dropout))


def test_the_plain_script_fuses_lora_layers_as_the_engine_does(monkeypatch):
    """The benchmark's plain script (bare libraries only) carries its own copy of the fused
    forward for "each at its best": the same numbers as the engine's, bit for bit."""
    import torch

    from trainers.benchmark import plain_script
    from trainers.train import fused_lora

    engine = _lora_step(torch.bfloat16, True, True)
    monkeypatch.setattr(fused_lora, "fused_forward", plain_script.fused_lora_forward)
    plain = _lora_step(torch.bfloat16, True, True)
    assert all(torch.equal(a, b) for a, b in zip(engine, plain))


@pytest.mark.slow
def test_a_speed_mode_run_says_what_it_decided(tmp_path, demo_model):
    registry = RunRegistry(tmp_path)
    cfg = build_config({"model_name": str(demo_model), "dataset": str(SAMPLE_SFT),
                        "max_seq_length": 256, "max_steps": 3, "per_device_train_batch_size": 4,
                        "speed_mode": True})
    run = registry.create(cfg)
    proc = launch(Path(run["run_dir"]))
    proc.wait(timeout=600)
    events = read_events(run["run_dir"])
    assert events[-1]["type"] == "finished", events[-1]
    started = next(e for e in events if e["type"] == "started")
    assert "padding-free batches: on" in started["speed_mode"]
    assert any(d.startswith("attention: sdpa_per_row") for d in started["speed_mode"])
    assert started["attention"] == "sdpa_per_row"
    assert started["per_device_train_batch_size"] == 4  # no GPU here: the batch is kept
    from modelforge_ui.views import progress_markdown

    registry.finish_from_events(run["id"], proc.returncode)
    # what RunManager.get adds to the record, which the Training tab shows
    shown = progress_markdown({**registry.get(run["id"]), "started_event": started,
                               "progress": [e for e in events if e["type"] == "progress"][-1]})
    assert "Speed mode: padding-free batches: on" in shown


@pytest.mark.slow
def test_a_bf16_run_with_fused_lora_layers_trains_what_peft_trains(tmp_path, demo_model):
    """bf16 on the CPU (autocast, as on a GPU): the worker's fused LoRA layers and PEFT's own,
    side by side on the same rows and seed, lose the same to bf16 rounding."""
    from tests.worker_runs import train_side_by_side

    config = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 256,
              "max_steps": 12, "per_device_train_batch_size": 4, "bf16": True,
              "learning_rate": 2e-3}
    done = train_side_by_side({str(fused): (tmp_path / str(fused),
                                            {**config, "fused_lora": fused})
                               for fused in (True, False)})
    losses = {}
    for fused, (record, events) in done.items():
        assert record["status"] == "succeeded", events[-1]
        losses[fused] = [e["loss"] for e in events if e["type"] == "progress"]
    assert len(losses["True"]) == 12
    assert losses["True"][0] == pytest.approx(losses["False"][0], rel=1e-3)
    assert losses["True"] == pytest.approx(losses["False"], rel=2e-2)


@pytest.mark.slow
def test_cli_speed_mode_run_with_a_relative_data_dir(tmp_path, demo_model):
    """`modelforge train CONFIG --set speed_mode=true --data-dir ./data`, as a user types it in
    their own folder: the worker runs in its run folder, so the data dir must not stay
    relative; the decisions are printed."""
    import json
    import subprocess
    import sys

    config = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 256,
              "max_steps": 2, "per_device_train_batch_size": 2}
    (tmp_path / "demo.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "train", "demo.json",
                           "--set", "speed_mode=true", "--data-dir", "./data"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "speed mode: padding-free batches: on" in done.stdout
    assert list((tmp_path / "data" / "runs").glob("*/adapter/adapter_config.json"))


def test_the_batch_is_fitted_again_to_the_tokenized_rows():
    """Before the data is read every row is taken as max_seq_length long; once the rows are
    tokenized, a padding-free micro-batch of m rows holds at most the m longest rows."""
    cfg = build_config(EIGHT_B)
    plan = speed.decide(cfg, gpu_gib=80)
    worst = cfg.model_copy(update=plan["updates"])
    assert worst.per_device_train_batch_size < 16  # 16 rows of 2,048 tokens do not fit
    short_rows = [300] * 50 + [900, 1200]
    fitted, decisions = speed.fit_to_rows(worst, short_rows, plan["decisions"], gpu_gib=80)
    assert fitted.per_device_train_batch_size == 16 and fitted.gradient_accumulation_steps == 1
    assert fitted.gradient_checkpointing is False
    longest = 900 + 1200 + 14 * 300
    sentence = (f"batch and checkpointing: micro-batch 16 x 1 accumulation without gradient "
                f"checkpointing, at its 16 longest rows' {longest} tokens: fits")
    assert any(d.startswith(sentence) for d in decisions), decisions
    assert len(decisions) == len(plan["decisions"])  # the batch sentence replaced, not added
    assert estimate(fitted, 80, longest)["fits"]
    # no GPU, or padded batches: the rows change nothing
    assert speed.fit_to_rows(worst, short_rows, plan["decisions"], gpu_gib=None)[0] == worst
    padded = worst.model_copy(update={"padding_free": False, "attention": "sdpa"})
    assert speed.fit_to_rows(padded, short_rows, [], gpu_gib=80)[0] == padded


def test_the_estimate_of_a_speed_mode_config_is_of_what_speed_mode_runs():
    """The Training tab and /api/config/estimate show what the run will train with: a config
    that would not fit as written fits once speed mode picks the batch and the attention."""
    as_written = build_config({**EIGHT_B, "gradient_checkpointing": False})
    assert estimate(as_written, 80)["fits"] is False
    assert speed.estimate_as_run(as_written, 80) == estimate(as_written, 80)
    on = as_written.model_copy(update={"speed_mode": True})
    run = speed.estimate_as_run(on, 80)
    assert run["fits"] is True and run["components_gib"]["attention_mask"] == 0
    assert run["speed_mode"] == speed.decide(on, 80)["decisions"]
    assert run["peak_allocated_gib"] == estimate(
        on.model_copy(update=speed.decide(on, 80)["updates"]), 80)["peak_allocated_gib"]
