"""dpo end to end on the demo model, through the real worker: the reward margin rises, the
events carry the preference metrics, the reference is the adapter disabled; both providers."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

from preference_support import in_process_context, pairs_file, progress
from worker_runs import needs_unsloth, train_side_by_side

from trainers.tools.demo import SAMPLE_PREFERENCES

pytestmark = pytest.mark.slow

PREFERENCE_KEYS = ("rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies")


def dpo_config(demo_model, dataset, **overrides) -> dict:
    # 8 pairs seen 6 times: the margin on them must grow steadily, not just by luck of a batch.
    return {"provider": "huggingface", "model_name": str(demo_model), "strategy": "dpo",
            "dataset": str(dataset), "max_seq_length": 128, "max_prompt_length": 64,
            "max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "logging_steps": 1,
            "beta": 0.1, **overrides}


def assert_margin_rises(events):
    steps = progress(events, "dpo")
    assert len(steps) == 12
    for event in steps:
        assert all(isinstance(event["metrics"][k], float) for k in PREFERENCE_KEYS), event
    margins = [e["metrics"]["rewards/margins"] for e in steps]
    first, last = statistics.mean(margins[:4]), statistics.mean(margins[-4:])
    assert last > first + 0.2, margins
    assert all(m > 0 for m in margins[-4:]), margins
    assert statistics.mean(e["metrics"]["rewards/accuracies"] for e in steps[-4:]) >= 0.75
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_model) -> dict[str, tuple]:
    """(run dir, events) of the module's worker runs, one per provider installed, started at
    once (each imports torch while the other waits)."""
    providers = ["huggingface"] + (["unsloth"] if importlib.util.find_spec("unsloth") else [])
    jobs = {}
    for provider in providers:
        home = tmp_path_factory.mktemp(f"dpo-{provider}")
        data = pairs_file(home / "pairs.jsonl", SAMPLE_PREFERENCES, 8)
        jobs[provider] = home, dpo_config(demo_model, data, provider=provider)
    return {provider: (Path(record["run_dir"]), events)
            for provider, (record, events) in train_side_by_side(jobs).items()}


@pytest.fixture(scope="module")
def hf_run(runs):
    return runs["huggingface"]


def test_dpo_margin_rises_and_events_carry_preference_metrics(hf_run):
    run_dir, events = hf_run
    assert events[-1]["type"] == "finished", events[-1]
    assert_margin_rises(events)
    stage = next(e for e in events if e["type"] == "stage")
    assert stage["name"] == "dpo" and stage["pairs"] == 8
    assert stage["reference"].startswith("the policy with its LoRA adapter disabled")
    finished = events[-1]
    assert finished["final_rewards_margins"] == progress(events, "dpo")[-1]["metrics"][
        "rewards/margins"]
    assert finished["trainer_class"].endswith("DPOTrainer")


def test_dpo_saves_only_the_trained_adapter(hf_run):
    """TRL's frozen "ref" copy of the adapter is removed, so it is neither in memory nor saved."""
    run_dir, _ = hf_run
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "ref").exists()


def test_dpo_settings_reach_the_trainer(tmp_path, demo_model):
    from trainers.train.strategies import dpo

    data = pairs_file(tmp_path / "pairs.jsonl", SAMPLE_PREFERENCES, 8)
    ctx = in_process_context(dpo_config(demo_model, data, dpo_loss_type="ipo", beta=0.3,
                                        max_prompt_length=48), tmp_path / "run")
    trainer = dpo.build_trainer(ctx)
    assert trainer.args.loss_type == ["ipo"] and trainer.beta == 0.3
    assert trainer.args.max_length == 128 and trainer.ref_model is None
    assert list(trainer.model.peft_config) == ["default"]  # reference = adapter disabled
    prompts = [len(r) for r in trainer.train_dataset["prompt_ids"]]
    assert max(prompts) <= 48 + 1  # cut to max_prompt_length (+ the BOS token)


@needs_unsloth
@pytest.mark.unsloth
def test_dpo_with_unsloth(runs):
    run_dir, events = runs["unsloth"]
    assert events[-1]["type"] == "finished", events[-1]
    started = events[0]
    assert started["provider"] == "unsloth" and started["unsloth"]["active"] is True
    assert_margin_rises(events)
    assert not (run_dir / "adapter" / "ref").exists()
