"""The job service (trainers/runs/jobs.py): where a run's adapter is, a benchmark's record and
label, following a job from the command line; and the one cached environment report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelforge_ui.settings import Settings
from modelforge_ui.tabs.context import Dashboard
from modelforge_ui.tabs.troubleshooting import environment_checks
from trainers.benchmark.spec import build_spec
from trainers.config import build_config
from trainers.runs.jobs import (AdapterNotReady, NoAdapter, adapter_dir, benchmark_name,
                                create_benchmark, follow)
from trainers.runs.registry import RunRegistry
from trainers.tools.doctor import cached_checks


def save_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_adapter_dir_says_why_a_run_has_none(tmp_path, tiny_config):
    registry = RunRegistry(tmp_path)
    run = registry.create(build_config(tiny_config()))
    with pytest.raises(AdapterNotReady, match="queued: it has no final adapter yet"):
        adapter_dir(run)
    failed = registry.set_status(run["id"], "failed", {"message": "boom"})
    with pytest.raises(NoAdapter, match=r"\(failed\) saved no adapter"):
        adapter_dir(failed)
    default = save_adapter(Path(run["run_dir"]) / "adapter")
    assert adapter_dir(registry.set_status(run["id"], "stopped", {})) == default
    moved = save_adapter(tmp_path / "elsewhere")  # an output_dir: the summary says where
    done = registry.set_status(run["id"], "succeeded", {"adapter_dir": str(moved)})
    assert adapter_dir(done) == moved


def test_a_benchmark_is_recorded_once_under_its_label(tmp_path):
    registry = RunRegistry(tmp_path)
    spec = build_spec({"model": "/models/llama-tiny/", "steps": 2})
    run = create_benchmark(registry, spec, source="cli")
    assert run["kind"] == "benchmark" and run["name"] == "benchmark llama-tiny"
    written = json.loads((Path(run["run_dir"]) / "config.json").read_text())
    assert written == run["config"] == spec.model_dump(mode="json")
    assert benchmark_name(build_spec({"model": "meta-llama/Llama-3.2-1B"})) == \
        "benchmark Llama-3.2-1B"
    assert benchmark_name(build_spec({"model": "m", "name": "mine"})) == "mine"


def test_follow_gives_each_event_once_and_a_first_ctrl_c_stops_gracefully(tmp_path,
                                                                          tiny_config):
    """(A run to its end through follow is `modelforge train` in test_train_e2e.py.)"""
    registry = RunRegistry(tmp_path)
    run = registry.create(build_config(tiny_config(max_steps=5000)), source="cli")
    events, asked = [], []

    def interrupt_at_first_step(event: dict) -> None:
        events.append(event)
        if event["type"] == "progress" and not asked:
            raise KeyboardInterrupt  # what Ctrl-C raises while follow waits

    record = follow(registry, run["id"], interrupt_at_first_step, lambda: asked.append(1))
    assert asked == [1]
    assert record["status"] == "stopped", record["summary"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "started" and events[-1]["type"] == "stopped"
    assert adapter_dir(record).is_dir()  # a graceful stop saves the adapter


def test_the_api_and_the_dashboard_share_one_environment_report(tmp_path):
    checked_at, checks = cached_checks(tmp_path)
    assert {"name", "status", "value", "fix"} <= set(checks[0])
    assert environment_checks(Dashboard(None, Settings(data_dir=tmp_path))) is checks
    assert cached_checks(tmp_path) == (checked_at, checks)  # kept, not run again
    assert cached_checks(tmp_path, refresh=True)[0] > checked_at
