"""rlhf: a reward model (RewardTrainer, LoRA on a classification head), then GRPO of the policy
against it. Both stages run and report; GRPO raises a deterministic reward; stops work within
and between the stages; both providers."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest
from preference_support import in_process_context, progress, wait_for_event
from worker_runs import needs_unsloth, start, train_side_by_side

from trainers.tools.demo import SAMPLE_PREFERENCES
from trainers import tracking
from trainers.events import read_events
from trainers.runs.stop_flag import request_stop

pytestmark = pytest.mark.slow


def rlhf_config(demo_model, **overrides) -> dict:
    return {"provider": "huggingface", "model_name": str(demo_model), "strategy": "rlhf",
            "dataset": str(SAMPLE_PREFERENCES), "max_seq_length": 128, "max_prompt_length": 64,
            "reward_model_steps": 6, "max_steps": 4, "per_device_train_batch_size": 4,
            "learning_rate": 5e-3, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
            "logging_steps": 1, "max_new_tokens": 12, "num_generations": 4, "beta": 0.04,
            **overrides}


def assert_both_stages(run_dir, events):
    assert events[-1]["type"] == "finished", events[-1]
    stages = [e for e in events if e["type"] == "stage" and e["name"] != "tracking"]
    assert [s["name"] for s in stages] == ["reward_model", "policy"]
    reward_stage, policy_stage = stages
    assert reward_stage["trainer"] == "RewardTrainer" and "SEQ_CLS" in reward_stage["loader"]
    assert reward_stage["pairs"] == 300 and reward_stage["pairs_dropped_too_long"] == 0
    assert policy_stage["trainer"] == "GRPOTrainer" and policy_stage["num_generations"] == 4

    reward_steps = progress(events, "reward_model")
    assert len(reward_steps) == 6
    assert all(0 <= e["metrics"]["accuracy"] <= 1 for e in reward_steps)
    policy_steps = progress(events, "policy")
    assert len(policy_steps) == 4
    for e in policy_steps:
        assert isinstance(e["loss"], float)  # the policy loss
        assert isinstance(e["metrics"]["reward"], float)  # mean reward of the sampled completions
        assert e["metrics"]["kl"] >= 0  # beta > 0: KL to the reference is computed
        assert e["metrics"]["completions/max_length"] <= 12  # bounded by max_new_tokens
    # Progress is ordered: every reward-model step before the first policy step.
    order = [e["stage"] for e in events if e["type"] == "progress"]
    assert order == ["reward_model"] * 6 + ["policy"] * 4

    saved = {e["stage"]: e["path"] for e in events if e["type"] == "saved"}
    assert saved == {"reward_model": str(run_dir / "reward_model"),
                     "policy": str(run_dir / "adapter")}
    finished = events[-1]
    assert finished["reward_model_steps"] == 6 and finished["steps"] == 4
    assert finished["reward_model_accuracy"] == reward_steps[-1]["metrics"]["accuracy"]
    assert finished["final_reward"] == policy_steps[-1]["metrics"]["reward"]
    assert finished["policy_adapter_saved"] is True
    assert not (run_dir / "adapter" / "ref").exists()


HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_model) -> dict[str, tuple[Path, list[dict]]]:
    """(run dir, events) of the module's runs to their end, started at once (each imports torch
    while the others wait): Hugging Face with its reports, at batch 2, and Unsloth."""
    batch_2 = rlhf_config(demo_model, per_device_train_batch_size=2, reward_model_steps=2,
                          max_steps=2, max_new_tokens=8)
    del batch_2["num_generations"]  # nor its conflict is set: the default adapts
    configs = {"huggingface": rlhf_config(
                   demo_model, report_to="tensorboard" if HAS_TENSORBOARD else "none"),
               "batch_2": batch_2}
    if importlib.util.find_spec("unsloth"):
        configs["unsloth"] = rlhf_config(demo_model, provider="unsloth")
    jobs = {name: (tmp_path_factory.mktemp(f"rlhf-{name}"), config)
            for name, config in configs.items()}
    return {name: (Path(record["run_dir"]), events)
            for name, (record, events) in train_side_by_side(jobs).items()}


@pytest.fixture(scope="module")
def hf_run(runs):
    return runs["huggingface"]


def test_rlhf_runs_both_stages_and_reports_them(hf_run):
    assert_both_stages(*hf_run)


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (the test extra)")
def test_each_stage_has_its_own_tensorboard_folder(hf_run):
    """Both trainers count steps from 1: in one folder their curves would overlay."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, events = hf_run
    logs = run_dir / tracking.TENSORBOARD_DIR
    stage = next(e for e in events if e["type"] == "stage" and e["name"] == "tracking")
    assert stage["path"] == str(logs)
    assert not list(logs.glob("events.out.tfevents.*"))  # nothing outside the stage folders
    steps = {}
    for name in ("reward_model", "policy"):
        board = EventAccumulator(str(logs / name))
        board.Reload()
        steps[name] = [s.step for s in board.Scalars("train/loss")]
    assert steps == {"reward_model": [1, 2, 3, 4, 5, 6], "policy": [1, 2, 3, 4]}


def test_saved_reward_model_loads_and_scores(hf_run, demo_model):
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    run_dir, _ = hf_run
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(run_dir / "reward_model"), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "reward_model"))
    model.config.pad_token_id = tokenizer.pad_token_id
    batch = tokenizer(["Human: hi\n\nAssistant: Hello!", "Human: hi\n\nAssistant: Go away."],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    # The trained score head was saved with the adapter (peft modules_to_save for SEQ_CLS).
    assert any("score" in name for name, _ in model.named_parameters())


# --- GRPO optimises a reward ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory):
    """The demo model with a larger init scale. The demo model's next-token distribution is
    nearly uniform over 2048 tokens (entropy ~ ln 2048) and its final RMSNorm bounds the logits,
    so no adapter can make a set of tokens likely within a few steps; a larger scale gives a
    peaked distribution, as trained models have, which sampling-based RL can move."""
    from trainers.tools.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("peaked"), initializer_range=0.5)


def test_grpo_raises_a_deterministic_reward(tmp_path, peaked_model):
    """Reward = share of the completion's tokens that start a word (byte-level BPE 'Ġ'). Stock
    TRL (no test imports Unsloth into this process) reaches 1.0 by step 14 with this seed."""
    from trainers.train.strategies import rlhf

    config = rlhf_config(peaked_model, max_steps=16, per_device_train_batch_size=16,
                         num_generations=8, max_new_tokens=8, max_prompt_length=32,
                         learning_rate=0.1, lr_scheduler_type="constant", beta=0.0, seed=1)
    ctx = in_process_context(config, tmp_path / "run")
    vocab = ctx.tokenizer.convert_ids_to_tokens(list(range(len(ctx.tokenizer))))
    word_starts = {i for i, token in enumerate(vocab) if token.startswith("Ġ")}

    def word_start_share(completion_ids, **_):
        return [sum(t in word_starts for t in ids) / max(len(ids), 1) for ids in completion_ids]

    trainer = rlhf.build_policy_trainer(ctx, [word_start_share])
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    assert len(rewards) == 16
    assert statistics.mean(rewards[-3:]) > statistics.mean(rewards[:3]) + 0.2, rewards


def test_rlhf_at_batch_2_trains_with_the_adapted_num_generations(runs):
    """Neither num_generations nor its conflict is set by the user: 4 does not divide the 2
    completions per step, so the default becomes 2 and both stages train."""
    run_dir, events = runs["batch_2"]
    assert events[-1]["type"] == "finished", events[-1]
    policy = next(e for e in events if e["type"] == "stage" and e["name"] == "policy")
    assert policy["num_generations"] == 2
    assert len(progress(events, "policy")) == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


# --- stopping -----------------------------------------------------------------------------------

def test_stop_between_stages_skips_the_policy(tmp_path, demo_model):
    """The stop arrives after the reward model's last step: it is saved complete, and the policy
    stage does not start."""
    from trainers.train.strategies import rlhf
    from trainers.train.telemetry import TelemetryCallback

    class StopWhenRewardModelEnds(TelemetryCallback):
        def on_train_end(self, args, state, control, **kwargs):
            if self.stage == "reward_model":
                request_stop(self.run_dir)

    run_dir = tmp_path / "run"
    ctx = in_process_context(rlhf_config(demo_model, reward_model_steps=3), run_dir)
    ctx.telemetry = StopWhenRewardModelEnds(ctx.events, run_dir)
    result = rlhf.run(ctx)
    assert result["reward_model_steps"] == 3  # the reward model finished its steps
    assert result["stopped_early"] is True and result["policy_adapter_saved"] is False
    assert (run_dir / "reward_model" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "adapter").exists()
    events = read_events(run_dir)
    assert events[-1]["type"] == "stage" and events[-1]["name"] == "policy"
    assert events[-1]["skipped"] is True
    assert not progress(events, "policy")


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory, demo_model) -> dict[str, tuple]:
    """(registry, run, exit code, events) of two runs stopped at their first progress in a
    stage, started side by side: one in its reward model's 2000 steps, one in its policy's."""
    configs = {"reward_model": rlhf_config(demo_model, reward_model_steps=2000),
               "policy": rlhf_config(demo_model, reward_model_steps=2, max_steps=2000)}
    started = {stage: start(tmp_path_factory.mktemp(f"rlhf-stop-{stage}"), config,
                            at_once=len(configs))
               for stage, config in configs.items()}
    for stage, (_, run, _) in started.items():
        wait_for_event(run["run_dir"],
                       lambda e, stage=stage: e["type"] == "progress" and e["stage"] == stage)
        request_stop(run["run_dir"])
    return {stage: (registry, run, proc.wait(timeout=600), read_events(run["run_dir"]))
            for stage, (registry, run, proc) in started.items()}


def test_stop_within_the_reward_model_stage(stopped_runs):
    registry, run, returncode, events = stopped_runs["reward_model"]
    assert returncode == 0
    assert events[-1]["type"] == "stopped" and events[-1]["reward_model_steps"] < 2000
    assert events[-1]["policy_adapter_saved"] is False
    assert [e["name"] for e in events if e["type"] == "stage"] == ["reward_model", "policy"]
    assert not progress(events, "policy")
    assert registry.finish_from_events(run["id"], 0)["status"] == "stopped"


def test_stop_within_the_policy_stage_saves_the_adapter(stopped_runs):
    _, run, returncode, events = stopped_runs["policy"]
    run_dir = run["run_dir"]
    assert returncode == 0
    assert events[-1]["type"] == "stopped" and events[-1]["steps"] < 2000
    assert events[-1]["policy_adapter_saved"] is True
    assert (Path(run_dir) / "adapter" / "adapter_model.safetensors").is_file()


# --- unsloth -------------------------------------------------------------------------------------

@needs_unsloth
@pytest.mark.unsloth
def test_rlhf_with_unsloth(runs):
    """The policy goes through Unsloth (its CPU backend here); the reward model is loaded with
    transformers + peft, and the stage event says so."""
    run_dir, events = runs["unsloth"]
    assert events[0]["provider"] == "unsloth" and events[0]["unsloth"]["active"] is True
    assert_both_stages(run_dir, events)
    reward_stage = next(e for e in events if e["type"] == "stage")
    assert reward_stage["provider"] == "unsloth"
    assert reward_stage["loader"].startswith("transformers AutoModelForSequenceClassification")
