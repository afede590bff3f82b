"""Evaluation during training and experiment tracking, through the real worker on the demo
model: eval events at eval_steps (and at the end) with eval_loss and perplexity, DPO's eval
rewards, both providers; TensorBoard event files in the run directory; a tracker whose package
is missing is a config error; trackers that need an account run offline without one."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import pytest
from worker_runs import needs_unsloth, train_side_by_side

from modelforge_ui import views
from trainers import tracking
from trainers.config import build_config, check_config
from trainers.runs.registry import RunRegistry
from trainers.tools.demo import SAMPLE_PREFERENCES

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed (the test extra)")


def evals(events) -> list[dict]:
    return [e for e in events if e["type"] == "eval"]


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory, tiny_config) -> dict[str, tuple[dict, list]]:
    """The module's own runs, side by side: DPO with evaluations, and Unsloth's SFT with them
    where Unsloth is installed."""
    runs = {"dpo": (tmp_path_factory.mktemp("eval-dpo"), tiny_config(
        strategy="dpo", dataset=str(SAMPLE_PREFERENCES), max_prompt_length=64, max_steps=4,
        per_device_train_batch_size=2, eval_split=0.05, eval_steps=2))}
    if importlib.util.find_spec("unsloth"):
        runs["unsloth"] = (tmp_path_factory.mktemp("eval-unsloth"), tiny_config(
            provider="unsloth", max_steps=5, eval_split=0.1, eval_steps=2))
    return train_side_by_side(runs)


@pytest.fixture(scope="module")
def sft_run(shared_run):
    """The session's shared run (tests/conftest.py): 8 steps, evaluations every 3, TensorBoard
    and W&B side by side."""
    _, record, events = shared_run
    return record, events


def check_sft_evals(record, events, steps: list[int]):
    assert record["status"] == "succeeded", record["summary"]
    found = evals(events)
    assert [e["step"] for e in found] == steps  # every eval_steps, and the last step
    for event in found:
        assert event["eval_perplexity"] == pytest.approx(math.exp(event["eval_loss"]), rel=1e-3)
    summary = record["summary"]
    best = min(found, key=lambda e: e["eval_loss"])
    assert summary["best_eval_loss"] == best["eval_loss"]
    assert summary["best_eval_step"] == best["step"]
    assert summary["final_eval_loss"] == found[-1]["eval_loss"]


@pytest.mark.slow
def test_eval_events_at_the_interval_with_perplexity_and_the_best_recorded(sft_run):
    record, events = sft_run
    check_sft_evals(record, events, [3, 6, 8])
    started = events[0]
    assert started["num_eval"] > 0


@pytest.mark.slow
def test_the_training_tab_plot_and_the_details_are_fed(sft_run):
    record, events = sft_run
    frame = views.loss_curves(events)
    train_rows = frame[frame["split"] == "train"]
    eval_rows = frame[frame["split"] == "eval"]
    assert train_rows["step"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert eval_rows["step"].tolist() == [3, 6, 8]
    assert eval_rows["loss"].tolist() == [e["eval_loss"] for e in evals(events)]
    run = {**record, "eval": evals(events)[-1], "progress": None, "started_event": None}
    text = views.progress_markdown(run)
    assert "eval loss" in text and "perplexity" in text
    assert f"best eval loss **{views.fmt_number(record['summary']['best_eval_loss'], 4)}** at " \
           f"step {record['summary']['best_eval_step']}" in text


@pytest.mark.slow
@needs_tensorboard
def test_tensorboard_event_files_land_in_the_run_directory(sft_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record, events = sft_run
    logs = Path(record["run_dir"]) / tracking.TENSORBOARD_DIR
    files = list(logs.glob("events.out.tfevents.*"))
    assert files, list(Path(record["run_dir"]).iterdir())
    stage = next(e for e in events if e["type"] == "stage" and e["name"] == "tracking")
    assert stage["tracker"] == "tensorboard" and stage["path"] == str(logs)
    board = EventAccumulator(str(logs))
    board.Reload()
    tags = board.Tags()["scalars"]
    assert "train/loss" in tags and "eval/loss" in tags
    assert [s.step for s in board.Scalars("eval/loss")] == [3, 6, 8]
    assert len(board.Scalars("train/loss")) == 8


@pytest.mark.slow
@needs_tensorboard
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (the test extra)")
def test_two_trackers_each_write_their_files(sft_run):
    """report_to as a list, as transformers takes it: TensorBoard's event files and W&B's
    offline run, side by side in the run directory (the shared run's worker had WANDB_MODE
    offline: no network here)."""
    record, events = sft_run
    assert record["config"]["report_to"] == ["tensorboard", "wandb"]
    stages = [e for e in events if e["type"] == "stage" and e["name"] == "tracking"]
    assert [(s["tracker"], s["mode"]) for s in stages] == [("tensorboard", "local"),
                                                          ("wandb", "offline")]
    run_dir = Path(record["run_dir"])
    assert list((run_dir / tracking.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("run-*.wandb")), \
        list((run_dir / "wandb").rglob("*"))


@pytest.mark.slow
def test_dpo_eval_events_carry_the_eval_rewards(own_runs):
    record, events = own_runs["dpo"]
    assert record["status"] == "succeeded", record["summary"]
    found = evals(events)
    assert [e["step"] for e in found] == [2, 4]
    for event in found:
        assert event["stage"] == "dpo" and isinstance(event["eval_loss"], float)
        for key in ("eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/accuracies"):
            assert isinstance(event[key], float), (key, event)
        assert "eval_perplexity" not in event  # a preference loss is not a likelihood
    assert record["summary"]["best_eval_step"] in (2, 4)


@pytest.mark.slow
@needs_unsloth
@pytest.mark.unsloth
def test_unsloth_eval_events(own_runs):
    record, events = own_runs["unsloth"]
    check_sft_evals(record, events, [2, 4, 5])
    assert events[0]["unsloth"]["active"] is True


# --- config rules and tracker setup, no training ----------------------------------------------

def test_eval_steps_needs_held_out_data():
    problems = check_config({"model_name": "m", "dataset": "d.jsonl", "eval_steps": 5})
    assert problems == [{"field": "eval_steps", "message": (
        "evaluates held-out data, and eval_split is 0: set eval_split (e.g. 0.1 holds out "
        "10%), or set eval_steps to 0")}]
    assert check_config({"model_name": "m", "dataset": "d.jsonl", "eval_steps": -1})[0][
        "field"] == "eval_steps"
    assert check_config({"model_name": "m", "dataset": "d.jsonl", "eval_steps": 5,
                         "eval_split": 0.1}) == []


@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "trackio", "tensorboard"])
def test_a_missing_tracker_package_is_a_config_error_naming_it(tracker, monkeypatch):
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    problems = check_config({"model_name": "m", "dataset": "d.jsonl", "report_to": tracker})
    assert problems == [{"field": "report_to", "message": (
        f"{tracker} is not installed on this machine: install it with `pip install {tracker}` "
        "(in the environment the server and its workers run in), or remove it from report_to "
        "(\"none\" for no tracker)")}]


def test_report_to_takes_transformers_forms_a_name_a_list_or_none(monkeypatch):
    monkeypatch.setattr(tracking, "_installed", lambda module: True)
    base = {"model_name": "m", "dataset": "d.jsonl"}
    for given, trackers in [("none", []), (None, []), ([], []), (["none"], []),
                            ("wandb", ["wandb"]),
                            (["tensorboard", "wandb"], ["tensorboard", "wandb"]),
                            (["wandb", "wandb"], ["wandb"])]:
        assert build_config({**base, "report_to": given}).report_to == trackers, given
    assert build_config(base).report_to == []
    problems = check_config({**base, "report_to": ["tensorboard", "comet"]})
    assert problems[0]["field"] == "report_to" and "'comet'" in problems[0]["message"]
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb")
    problems = check_config({**base, "report_to": ["tensorboard", "wandb"]})
    assert [p["message"].split(" ")[0] for p in problems] == ["wandb"]  # each one checked


def test_the_real_packages_decide(monkeypatch):
    for tracker, (modules, _) in tracking.TRACKERS.items():
        have = any(importlib.util.find_spec(m) for m in modules)
        problems = tracking.tracker_problems([tracker])
        assert (problems == []) == have, tracker
    assert check_config({"model_name": "m", "dataset": "d.jsonl", "report_to": "comet"})[0][
        "field"] == "report_to"  # not one of transformers' names ModelForge offers


def test_wandb_without_a_login_runs_offline_and_says_so(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    info = tracking.setup_tracking(["wandb"], tmp_path, "my run")[0]
    assert os.environ["WANDB_MODE"] == "offline" and info["mode"] == "offline"
    assert "no WANDB_API_KEY" in info["message"] and "wandb sync" in info["message"]
    assert os.environ["WANDB_DIR"] == str(tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.setup_tracking(["wandb"], tmp_path, "my run")[0]["mode"] == "online"


def test_mlflow_is_local_files_unless_a_server_is_named(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                 "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    info = tracking.setup_tracking(["mlflow"], tmp_path, "r")[0]
    assert info["mode"] == "local" and os.environ["MLFLOW_TRACKING_URI"].startswith("file://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    info = tracking.setup_tracking(["mlflow"], tmp_path, "r")[0]
    assert info["mode"] == "remote" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert "fails within seconds" in info["message"]


@pytest.mark.slow
@needs_tensorboard
def test_the_runs_tab_shows_the_tensorboard_folder(sft_run):
    from types import SimpleNamespace

    from modelforge_ui.experiments import links_markdown

    record, _ = sft_run
    app = SimpleNamespace(manager=SimpleNamespace(registry=RunRegistry(
        Path(record["run_dir"]).parents[1])))
    text = links_markdown(app, record)
    logs = Path(record["run_dir"]) / tracking.TENSORBOARD_DIR
    assert f"**TensorBoard logs:** `{logs}`" in text and f"tensorboard --logdir {logs}" in text
