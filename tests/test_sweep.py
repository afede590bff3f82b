"""Sweeps: fields given as lists queue one run per combination, named by its values, from the
REST API and the CLI; at most 32 runs; only a field whose type holds one value is an axis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import wait_status

from trainers.config import with_absolute_paths
from trainers.errors import ConfigError
from trainers.runs import sweep

MODELFORGE = os.path.join(os.path.dirname(sys.executable), "modelforge")
BASE = {"model_name": "m", "dataset": "d.jsonl"}
# two jobs at once on the CPU (a documented setting): the 2x2 sweep's four runs train two at a
# time; the queue's default of one job at a time is test_faults.py's 50 concurrent submits
SERVER_ENV = {"MODELFORGE_JOBS_PER_DEVICE": "2"}


def test_list_typed_fields_are_values_not_axes():
    raw = {**BASE, "learning_rate": [1e-4, 2e-4], "lora_r": [8, 16],
           "report_to": ["tensorboard", "wandb"], "target_modules": ["q_proj", "v_proj"]}
    assert sweep.sweep_axes(raw) == {"learning_rate": [1e-4, 2e-4], "lora_r": [8, 16]}
    swept = set(sweep.sweepable_fields())
    assert {"learning_rate", "lora_r", "strategy", "packing", "model_name"} <= swept
    assert not swept & {"report_to", "target_modules", "column_mapping", "name", "output_dir",
                        "resume_from"}
    assert sweep.sweep_axes(BASE) == {}


def test_each_combination_is_named_by_its_values():
    runs = sweep.build_sweep({**BASE, "learning_rate": [1e-4, 2e-4], "lora_r": [8, 16],
                              "report_to": "none"})
    assert [cfg.name for _, cfg in runs] == [
        "sweep learning_rate=0.0001 lora_r=8", "sweep learning_rate=0.0001 lora_r=16",
        "sweep learning_rate=0.0002 lora_r=8", "sweep learning_rate=0.0002 lora_r=16"]
    assert [(cfg.learning_rate, cfg.lora_r) for _, cfg in runs] == [
        (1e-4, 8), (1e-4, 16), (2e-4, 8), (2e-4, 16)]
    named = sweep.build_sweep({**BASE, "name": "lr", "learning_rate": [1e-4]})
    assert [cfg.name for _, cfg in named] == ["lr learning_rate=0.0001"]


def test_at_most_32_runs_and_the_error_says_so():
    with pytest.raises(ConfigError) as err:
        sweep.build_sweep({**BASE, "learning_rate": [1e-4, 2e-4, 3e-4], "lora_r": [4, 8, 16, 32],
                           "seed": [1, 2, 3]})
    assert err.value.problems == [{"field": "learning_rate", "message": (
        "the sweep makes 36 runs (3 learning_rate x 4 lora_r x 3 seed), more than the 32 a "
        "sweep may queue: give fewer values")}]
    assert len(sweep.build_sweep({**BASE, "lora_r": list(range(1, 33))})) == 32


def test_bad_values_are_reported_once_with_the_runs_that_have_them():
    with pytest.raises(ConfigError) as err:
        sweep.build_sweep({**BASE, "lora_r": [0, 8], "learning_rate": [1e-4, 5]})
    by_field = {p["field"]: p["message"] for p in err.value.problems}
    assert by_field["lora_r"].endswith("(in the sweep's runs lora_r=0 learning_rate=0.0001; "
                                       "lora_r=0 learning_rate=5)")
    assert "lora_r=8 learning_rate=5)" in by_field["learning_rate"]
    with pytest.raises(ConfigError) as err:
        sweep.build_sweep({"model_name": "m", "lora_r": [8, 16]})  # every run lacks it
    assert err.value.problems[0] == {"field": "dataset", "message": (
        "is required: add \"dataset\" to the config")}
    with pytest.raises(ConfigError) as err:
        sweep.build_sweep({**BASE, "lora_r": []})
    assert err.value.problems[0]["field"] == "lora_r" and "empty list" in \
        err.value.problems[0]["message"]


def test_a_sweep_of_local_paths_gets_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text("{}\n")
    fixed = with_absolute_paths({"dataset": ["a.jsonl", "hub/id"], "model_name": "m"})
    assert fixed == {"dataset": [str(tmp_path / "a.jsonl"), "hub/id"], "model_name": "m"}


@pytest.mark.slow
def test_a_2x2_sweep_over_http_queues_four_runs_that_finish(client, tiny_config):
    response = client.post("/api/start_training", json=tiny_config(
        max_steps=2, learning_rate=[1e-3, 2e-3], lora_r=[4, 8], name="grid"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["axes"] == {"learning_rate": [1e-3, 2e-3], "lora_r": [4, 8]}
    assert [r["name"] for r in body["runs"]] == [
        "grid learning_rate=0.001 lora_r=4", "grid learning_rate=0.001 lora_r=8",
        "grid learning_rate=0.002 lora_r=4", "grid learning_rate=0.002 lora_r=8"]
    assert response.headers["location"] == f"/api/sweeps/{body['sweep_id']}"
    for run_id in body["run_ids"]:
        assert wait_status(client, run_id)["status"] == "succeeded"
    detail = client.get(f"/api/sweeps/{body['sweep_id']}").json()
    assert [r["config"]["lora_r"] for r in detail["runs"]] == [4, 8, 4, 8]
    compared = client.get(body["compare"]).json()
    assert {row["field"] for row in compared["differing"]} == {"learning_rate", "lora_r"}
    assert body["sweep_id"] in [s["id"] for s in client.get("/api/sweeps").json()["sweeps"]]


def test_a_sweep_over_http_is_refused_whole(client, tiny_config):
    before = client.get("/api/runs").json()["total"]
    response = client.post("/api/start_training", json=tiny_config(lora_r=[0, 8]))
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "lora_r"
    too_many = client.post("/api/start_training", json=tiny_config(seed=list(range(33))))
    assert too_many.status_code == 422
    assert "more than the 32 a sweep may queue" in too_many.json()["problems"][0]["message"]
    assert client.get("/api/runs").json()["total"] == before  # none was queued
    check = client.post("/api/config/check", json=tiny_config(lora_r=[0, 8])).json()
    assert check["ok"] is False and check["problems"][0]["field"] == "lora_r"
    check = client.post("/api/config/check", json=tiny_config(lora_r=[4, 8])).json()
    assert check == {"ok": True, "problems": [], "sweep": ["sweep lora_r=4", "sweep lora_r=8"]}
    assert client.get("/api/sweeps/nope").status_code == 404


@pytest.mark.slow
def test_a_sweep_from_the_cli_runs_each_combination(tmp_path, tiny_config):
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps(tiny_config(max_steps=1, lora_r=[4, 8])))
    done = subprocess.run([MODELFORGE, "train", str(config), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep " in done.stdout and "2 runs over lora_r [4, 8]" in done.stdout
    from trainers.runs.registry import RunRegistry

    runs = RunRegistry(tmp_path / "d").list()
    assert sorted((r["name"], r["status"]) for r in runs) == [
        ("sweep lora_r=4", "succeeded"), ("sweep lora_r=8", "succeeded")]
    sweeps = sweep.list_sweeps(tmp_path / "d")
    assert len(sweeps) == 1 and sorted(sweeps[0]["run_ids"]) == sorted(r["id"] for r in runs)
    assert all((Path(r["run_dir"]) / "adapter").is_dir() for r in runs)
